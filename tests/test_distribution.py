"""Transparent distribution between real node OS processes over ZeroMQ tcp on 127.0.0.1.

Peer nodes run `tests/dist_helpers.py` in their own OS processes; every test kills what it
started. Node names carry explicit free ports (`name@127.0.0.1:port`), so the port mapper is
only involved where a test is about it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import dist_helpers as h
import pytest
import zmq
from conftest import COOKIE, HELPERS, T, free_port, node_name

import pyotp
from pyotp import ANY, gen_server
from transport import _handshake as H

pytestmark = pytest.mark.slow


def run_node(main, *args, ticktime=1.0, cookie=COOKIE, schedulers=1):
    return pyotp.run(main, *args, name=node_name("a"), cookie=cookie, schedulers=schedulers,
                     config={"kernel": {"net_ticktime": ticktime}})


def test_nodes_connect_and_messages_reach_names_on_the_other_node(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pyotp.send(("echo", b.name), (pyotp.self(), "hi"))
        got = await pyotp.receive(("echo", ANY, ANY), timeout=T)
        return pyotp.nodes(), got

    nodes, got = run_node(main)
    assert nodes == [b.name] and got == ("echo", "hi", b.name)


def test_spawn_link_monitor_and_exit_work_across_nodes(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pyotp.process_flag("trap_exit", True)
        pid = pyotp.spawn(h.echo, node=b.name, link=True)
        assert pid.node == b.name
        pyotp.send(pid, (pyotp.self(), 1))
        assert await pyotp.receive(("echo", 1, b.name), timeout=T)
        info = await pyotp.process_info(pid)
        assert info["node"] == b.name and pyotp.self() in info["links"]
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "bye")
        down = await pyotp.receive(("DOWN", ref, "process", pid, ANY), timeout=T)
        exit_msg = await pyotp.receive(("EXIT", pid, ANY), timeout=T)
        crasher = pyotp.spawn(h.crash_on, "now", node=b.name, link=True)
        pyotp.send(crasher, "now")
        crash = await pyotp.receive(("EXIT", crasher, ANY), timeout=T)
        return down[4], exit_msg[2], crash[2]

    down, exit_reason, crash = run_node(main)
    assert down == "bye" and exit_reason == "bye"
    assert isinstance(crash, pyotp.Crash) and crash.type == "RuntimeError"


def test_monitor_by_name_and_gen_server_call_on_another_node(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        assert await gen_server.call(("kv", b.name), ("put", "k", [1, (2,)]), timeout=T) == "ok"
        value = await gen_server.call(("kv", b.name), ("get", "k"), timeout=T)
        ref = pyotp.monitor(("nobody", b.name))
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(("nobody", b.name), "x", timeout=T)
        return value, down[3:], info.value.reason

    value, down, reason = run_node(main)
    assert value == [1, (2,)]
    assert down == (("nobody", b.name), "noproc") and reason == "noproc"


def test_rpc_call_returns_results_and_raises_badrpc(peer):
    b = peer()

    async def main():
        who = await pyotp.rpc.call(b.name, h.whoami, timeout=T)
        added = await pyotp.rpc.call(b.name, h.async_add, 2, 3, timeout=T)
        with pytest.raises(pyotp.OtpError) as failed:
            await pyotp.rpc.call(b.name, h.boom, timeout=T)
        me = pyotp.self()
        pyotp.rpc.cast(b.name, pyotp.send, me, "cast arrived")
        cast = await pyotp.receive("cast arrived", timeout=T)
        return who, added, failed.value.reason, cast

    who, added, reason, cast = run_node(main)
    assert who[0] == b.name and who[1] != os.getpid() and added == 5
    assert reason[0] == "badrpc" and reason[1][0] == "EXIT"
    assert reason[1][1].type == "ValueError" and cast == "cast arrived"


def test_a_wrong_cookie_is_refused_and_logged_on_both_sides(peer, caplog):
    b = peer(cookie="other-cookie")

    async def main():
        ok = await pyotp.net.connect(b.name)
        return ok, pyotp.nodes()

    with caplog.at_level(logging.ERROR, logger="pyotp.net"):
        assert run_node(main) == (False, [])
    assert any("refused" in r.getMessage() for r in caplog.records)
    err = b.stop()
    assert "refused a connection from 127.0.0.1" in err


def test_a_handshake_left_unfinished_is_dropped_and_logged(peer):
    """A peer that says Hello and goes away must not leave its half handshake behind for
    ever: the node drops it (and logs it) once it is older than the handshake timeout."""
    b = peer()
    port = int(b.name.rsplit(":", 1)[1])
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 1000)
    rogue.connect(f"tcp://127.0.0.1:{port}")
    rogue.send(H.encode_message(H.Initiator(COOKIE, "rogue@127.0.0.1", 1).hello()))
    assert rogue.poll(T * 1000)  # its Challenge: the handshake is under way there
    rogue.close()
    time.sleep(5.5)  # past the handshake timeout (5 s)

    async def main():
        return await pyotp.net.connect(b.name)  # a new handshake makes it look

    assert run_node(main) is True
    err = b.stop()
    assert "dropped an unfinished handshake" in err and "rogue@127.0.0.1" in err


def test_a_killed_node_is_down_at_once_when_its_connection_closes(peer):
    """Erlang takes a closed connection for nodedown at once, whatever net_ticktime is: a
    SIGKILLed node is seen down long before the heartbeats (60 s here) would notice."""
    b = peer(ticktime=60.0)

    async def main():
        assert await pyotp.net.connect(b.name)
        pyotp.monitor_node(b.name, True)
        pid = pyotp.spawn(h.idle, node=b.name)
        ref = pyotp.monitor(pid)
        await pyotp.process_info(pid)  # surely running there now
        b.kill()
        nodedown = await pyotp.receive(("nodedown", ANY), timeout=3 * T)
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        return nodedown, down[4], pyotp.nodes()

    nodedown, down, nodes = run_node(main, ticktime=60.0)
    assert nodedown == ("nodedown", b.name)
    assert down == "noconnection" and nodes == []


def test_a_killed_node_gives_nodedown_and_noconnection_within_ticktime(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pyotp.process_flag("trap_exit", True)
        pyotp.monitor_node(b.name, True)
        linked = pyotp.spawn(h.idle, node=b.name, link=True)
        monitored = pyotp.spawn(h.idle, node=b.name)
        ref = pyotp.monitor(monitored)
        await pyotp.process_info(monitored)  # both are surely running there now
        t0 = time.monotonic()
        b.kill()
        nodedown = await pyotp.receive(("nodedown", ANY), timeout=T)
        elapsed = time.monotonic() - t0
        exit_msg = await pyotp.receive(("EXIT", linked, ANY), timeout=T)
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        return nodedown, elapsed, exit_msg[2], down[4], pyotp.nodes()

    nodedown, elapsed, exit_reason, down, nodes = run_node(main, ticktime=1.0)
    assert nodedown == ("nodedown", b.name) and elapsed < 5
    assert exit_reason == "noconnection" and down == "noconnection" and nodes == []


def test_connections_are_transitive(peer):
    b = peer("b")
    c = peer("c")

    async def main():
        assert await pyotp.rpc.call(b.name, pyotp.net.connect, c.name, timeout=T) is True
        assert await pyotp.net.connect(b.name)
        end = time.monotonic() + T
        while c.name not in pyotp.nodes() and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return sorted(pyotp.nodes())

    assert run_node(main) == sorted([b.name, c.name])


def test_a_restarted_node_never_gets_messages_meant_for_its_dead_incarnation(peer, tmp_path):
    b = peer()
    name = b.name

    async def main():
        assert await pyotp.net.connect(name)
        old = pyotp.spawn(h.echo, node=name)
        pyotp.send(old, (pyotp.self(), "first"))
        await pyotp.receive(("echo", "first", ANY), timeout=T)
        pyotp.monitor_node(name, True)
        b.kill()
        await pyotp.receive(("nodedown", name), timeout=T)
        reborn = subprocess.Popen(
            [sys.executable, str(HELPERS), name, COOKIE, "1.0"], stdout=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert reborn.stdout.readline().strip() == "ready"
            assert await pyotp.net.connect(name)
            new = pyotp.spawn(h.echo, node=name)
            pyotp.send(old, (pyotp.self(), "stale"))  # same serial space, old creation
            pyotp.send(new, (pyotp.self(), "fresh"))
            got = await pyotp.receive(("echo", ANY, ANY), timeout=T)
            with pytest.raises(pyotp.Timeout):
                await pyotp.receive(("echo", "stale", ANY), timeout=0.5)
            return got[1], old.creation != new.creation
        finally:
            reborn.kill()
            reborn.wait()
            reborn.stdout.close()

    assert run_node(main) == ("fresh", True)


def test_unauthenticated_and_malformed_data_frames_are_dropped(peer):
    b = peer()

    async def main():
        import zmq

        from schedulers import get

        assert await pyotp.net.connect(b.name)
        ports = get().router.ports
        endpoint = ports.endpoints[b.name][0]
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        sock.send_multipart([b"not-a-token", b"\x91\x93\x00\x01\x02"])
        sock.send(b"t" * 32 + b"\x91\x93\x00\x01\x02")  # unknown token: never decoded
        sock.send(ports.tokens[b.name] + b"\xc1garbage")  # right token, bad batch
        sock.send(b"short")
        sock.close()
        pyotp.send(("echo", b.name), (pyotp.self(), "alive?"))
        return (await pyotp.receive(("echo", ANY, ANY), timeout=T))[1]

    assert run_node(main) == "alive?"


def test_held_messages_no_handshake_claims_expire_and_are_logged(monkeypatch, caplog):
    """A message under a token no handshake gave is held a moment (its NodeUp may be late),
    then dropped, counted and logged, even if nothing else arrives after it."""
    from schedulers import get
    from transport import _zmq

    monkeypatch.setattr(_zmq, "_HELD_FOR", 0.3)

    async def main():
        ports = get().router.ports
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(ports.endpoint)
        sock.send(b"t" * 32 + b"\x91\x93\x00\x01\x02")  # a token nobody was given
        sock.close()
        end = time.monotonic() + T
        while not ports.held and time.monotonic() < end:
            await asyncio.sleep(0.02)
        held = len(ports.held)
        while ports.held and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return held, len(ports.held), ports.rejected

    with caplog.at_level(logging.WARNING, logger="pyotp.transport"):
        held, left, rejected = run_node(main)
    assert (held, left, rejected) == (1, 0, 1)
    assert any("not from an authenticated node" in r.getMessage() for r in caplog.records)


def test_demonitor_of_a_monitor_by_name_on_another_node_drops_the_far_watch(peer):
    b = peer()

    async def watchers(n):
        end = time.monotonic() + T
        while await pyotp.rpc.call(b.name, h.watchers_of, "echo", timeout=T) != n:
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def main():
        assert await pyotp.net.connect(b.name)
        assert await watchers(0)
        ref = pyotp.monitor(("echo", b.name))
        set_there = await watchers(1)
        pyotp.demonitor(ref)
        return set_there, await watchers(0)

    assert run_node(main) == (True, True)


def test_a_distributed_node_with_two_schedulers_talks_scheduler_to_scheduler(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pid = pyotp.spawn(h.echo, node=b.name)
        results = []
        for k in (0, 1):
            # a process on either scheduler reaches the other node directly
            pyotp.spawn(relay_from, pid, pyotp.self(), scheduler=k)
            results.append(await pyotp.receive(("echo", ANY, ANY), timeout=T))
        return results

    assert run_node(main, schedulers=2) == [("echo", "via", b.name)] * 2


async def relay_from(target, parent):
    pyotp.send(target, (parent, "via"))


def test_connect_to_an_unknown_node_is_false(peer):
    async def main():
        return await pyotp.net.connect(f"ghost@127.0.0.1:{free_port()}")

    assert run_node(main) is False


def test_a_node_whose_port_is_taken_fails_to_start_naming_the_port():
    import psutil

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = {c.pid for c in psutil.Process().children(recursive=True)}

        async def main():
            return "ran"

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as err:
            pyotp.run(main, name=f"a{os.getpid()}@127.0.0.1:{port}", cookie=COOKIE,
                      schedulers=2)
        assert err.value.errno == errno.EADDRINUSE
    deadline = time.monotonic() + T
    while ({c.pid for c in psutil.Process().children(recursive=True)} - before
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert not {c.pid for c in psutil.Process().children(recursive=True)} - before


def test_the_port_mapper_finds_a_node_by_name(tmp_path):
    epmd_port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "PYOTP_EPMD_PORT": str(epmd_port), "PYOTP_EPMD_IDLE": "2"}
    short = f"m{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS), f"{short}@127.0.0.1", COOKIE, "1.0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    old = os.environ.get("PYOTP_EPMD_PORT")
    os.environ["PYOTP_EPMD_PORT"] = str(epmd_port)
    try:
        assert proc.stdout.readline().strip() == "ready"

        async def main():
            assert await pyotp.net.connect(f"{short}@127.0.0.1")
            pyotp.send(("echo", f"{short}@127.0.0.1"), (pyotp.self(), "mapped"))
            return (await pyotp.receive(("echo", ANY, ANY), timeout=T))[1]

        assert pyotp.run(main, name=f"n{os.getpid()}@127.0.0.1", cookie=COOKIE) == "mapped"
    finally:
        if old is None:
            os.environ.pop("PYOTP_EPMD_PORT", None)
        else:
            os.environ["PYOTP_EPMD_PORT"] = old
        proc.kill()
        proc.wait()
        proc.stdout.close()
        from transport import _epmd

        try:
            os.kill(_epmd.ping(epmd_port=epmd_port), signal.SIGKILL)
        except Exception:
            pass


def test_an_oversized_frame_on_the_data_port_harms_no_one(peer):
    b = peer()

    async def main():
        import zmq

        from schedulers import get

        assert await pyotp.net.connect(b.name)
        ours = get().router.ports.endpoint
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(ours)
        sock.send(b"x" * 32 + b"y" * 3_000_000)  # over the limit: connection dropped
        sock.close()
        await asyncio.sleep(0.2)
        pyotp.send(("echo", b.name), (pyotp.self(), "still fine"))
        return (await pyotp.receive(("echo", ANY, ANY), timeout=T))[1]

    assert pyotp.run(main, name=node_name("a"), cookie=COOKIE,
                     config={"kernel": {"net_ticktime": 1, "max_message_size": 100_000}}
                     ) == "still fine"


def test_a_monitor_by_name_names_the_name_when_its_node_is_lost(peer):
    b = peer("b")
    c = peer("c")
    ghost = f"ghost@127.0.0.1:{free_port()}"

    async def main():
        assert await pyotp.net.connect(b.name) and await pyotp.net.connect(c.name)
        downs = []
        ref = pyotp.monitor(("echo", b.name))
        await pyotp.rpc.call(b.name, h.whoami, timeout=T)  # the monitor is surely set there
        pyotp.net.disconnect(b.name)
        downs.append((await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T))[2:])
        ref = pyotp.monitor(("echo", c.name))
        await pyotp.rpc.call(c.name, h.whoami, timeout=T)
        c.kill()
        downs.append((await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T))[2:])
        ref = pyotp.monitor(("echo", ghost))
        downs.append((await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T))[2:])
        return downs

    assert run_node(main) == [
        ("process", ("echo", b.name), "noconnection"),
        ("process", ("echo", c.name), "noconnection"),
        ("process", ("echo", ghost), "noconnection"),
    ]


def test_multi_call_and_abcast_connect_to_a_node_not_connected_yet(peer):
    b = peer("b")
    c = peer("c")

    async def main():
        assert pyotp.nodes() == []
        replies, bad = await gen_server.multi_call([b.name], "kv", ("get", "k"), timeout=T)
        gen_server.abcast([c.name], "casted", "hi")
        got = await gen_server.call(("casted", c.name), "get", timeout=T)
        return replies, bad, got, sorted(pyotp.nodes())

    replies, bad, got, nodes = run_node(main)
    assert replies == [(b.name, None)] and bad == []
    assert got == (c.name, ["hi"]) and nodes == sorted([b.name, c.name])


class _Silent:
    """A TCP port that accepts connections and never answers (a hung node)."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.name = f"hung@127.0.0.1:{self.sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc):
        self.sock.close()


def test_rpc_and_multi_call_to_a_node_that_does_not_answer_keep_their_timeout():
    with _Silent() as hung:

        async def main():
            t0 = time.monotonic()
            with pytest.raises(pyotp.OtpError) as failed:
                await pyotp.rpc.call(hung.name, h.whoami, timeout=1)
            rpc_took = time.monotonic() - t0
            t0 = time.monotonic()
            result = await gen_server.multi_call([hung.name], "kv", "x", timeout=1)
            mc_took = time.monotonic() - t0
            with pytest.raises(pyotp.Timeout):  # nothing late lands in the mailbox
                await pyotp.receive(timeout=6)
            return failed.value.reason, rpc_took, result, mc_took

        reason, rpc_took, result, mc_took = run_node(main)
    # the connection handshake alone would wait 5 s for an answer
    assert reason == ("badrpc", "timeout") and rpc_took < 4
    assert result == ([], [hung.name]) and mc_took < 4


def test_a_node_whose_port_is_closed_is_down_at_once():
    ghost = f"ghost@127.0.0.1:{free_port()}"

    async def main():
        t0 = time.monotonic()
        connected = await pyotp.net.connect(ghost)
        connect_took = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(pyotp.OtpError) as failed:
            await pyotp.rpc.call(ghost, h.whoami, timeout=None)
        rpc_took = time.monotonic() - t0
        return connected, connect_took, failed.value.reason, rpc_took

    connected, connect_took, reason, rpc_took = run_node(main)
    # a refused TCP connect is final (the handshake would otherwise wait 5 s)
    assert connected is False and connect_took < 2
    assert reason == ("badrpc", "nodedown") and rpc_took < 2


async def _dial_side(parent, here, there, when):
    r = await pyotp.rpc.call(here, h.connect_at, there, when, timeout=3 * T)
    pyotp.send(parent, ("side", here, r))


def test_two_nodes_dialling_each_other_at_once_end_with_one_working_connection(peer):
    """Erlang's tie-break for crossing handshakes: both sides keep the same connection (the
    dial of the node whose name sorts first). Without it each kept a different, half-open
    one. Several rounds, each a fresh crossing dial at one wall-clock instant."""
    b, c = peer("b"), peer("c")

    async def main():
        for node in (b.name, c.name):
            assert await pyotp.net.connect(node)
        results = []
        for _ in range(5):
            when = time.time() + 0.3
            mine = pyotp.self()

            for here, there in ((b.name, c.name), (c.name, b.name)):
                pyotp.spawn(_dial_side, mine, here, there, when)
            for _ in range(2):
                results.append(await pyotp.receive(("side", ANY, ANY), timeout=4 * T))
        return results

    results = run_node(main)
    assert len(results) == 10
    assert [r for r in results if r[2] != (True, True)] == []


def test_process_info_lists_a_monitor_by_name_as_name_and_node(peer):
    """Erlang: process_info(self(), monitors) gives {process, {Name, Node}} for a monitor by
    name, here or on another node; {process, Pid} for one by pid."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pid = pyotp.spawn(h.idle)
        await pyotp.register("local_idle", pid)
        pyotp.monitor(("echo", b.name))
        pyotp.monitor("local_idle")
        pyotp.monitor(pid)
        info = await pyotp.process_info(pyotp.self())
        return info["monitors"], pid, pyotp.node()

    monitors, pid, here = run_node(main)
    assert monitors == [
        ("process", ("echo", b.name)), ("process", ("local_idle", here)), ("process", pid)
    ]
