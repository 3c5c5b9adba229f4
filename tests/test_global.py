"""pyotp.global_: cluster-wide names, on one node and across real node OS processes."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import dist_helpers as h
import pytest
from conftest import COOKIE, T, node_name

import pyotp
from pyotp import ANY, global_

pytestmark = pytest.mark.slow


def run_node(main, *args, ticktime=1.0, cookie=COOKIE):
    return pyotp.run(main, *args, name=node_name("a"), cookie=cookie,
                     config={"kernel": {"net_ticktime": ticktime}})


# --------------------------------------------------------------------- one node


def test_whereis_name_and_send_from_plain_code_raise_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        global_.whereis_name("svc")
    with pytest.raises(pyotp.NotInProcess):
        global_.send("svc", "hello")


def test_a_name_is_registered_found_and_unregistered_on_a_lone_node():
    """Ports global_SUITE:names (the single-node part)."""

    async def main():
        pid = pyotp.spawn(h.idle)
        assert await global_.register_name("svc", pid) is True
        assert global_.whereis_name("svc") == pid
        other = pyotp.spawn(h.idle)
        assert await global_.register_name("svc", other) is False  # taken
        assert await global_.register_name("svc", pid) is False  # taken, even by that pid
        assert await global_.register_name("svc2", pid) is False  # a pid holds one name
        assert global_.whereis_name("svc2") is None
        await global_.unregister_name("svc")
        assert global_.whereis_name("svc") is None
        assert await global_.register_name("svc", other) is True
        for p in (pid, other):
            pyotp.exit(p, "kill")

    pyotp.run(main)


def test_a_name_goes_away_when_its_process_exits():
    """Ports global_SUITE:name_exit."""

    async def main():
        pid = pyotp.spawn(h.crash_on, "die")
        assert await global_.register_name("mortal", pid)
        ref = pyotp.monitor(pid)
        pyotp.send(pid, "die")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        await global_.sync()
        return global_.whereis_name("mortal")

    assert pyotp.run(main) is None


def test_global_send_reaches_the_process_and_an_unknown_name_is_badarg():
    async def main():
        pid = pyotp.spawn(h.echo)
        assert await global_.register_name("echo", pid)
        assert global_.send("echo", (pyotp.self(), "hello")) == pid
        got = await pyotp.receive(("echo", ANY, ANY), timeout=T)
        with pytest.raises(pyotp.BadArg):
            global_.send("nobody", "x")
        with pytest.raises(pyotp.BadArg):
            await global_.register_name("x", "not a pid")
        pyotp.send(pid, "stop")
        return got[1]

    assert pyotp.run(main) == "hello"


# --------------------------------------------------------------------- across nodes


def test_a_gen_server_started_with_a_global_name_is_called_and_cast_by_it():
    """As gen_server:start_link({global, Name}, ...): registered cluster-wide, not locally."""

    async def main():
        pid = await pyotp.gen_server.start(h.Casted, None, name=("global", "svc"))
        assert global_.whereis_name("svc") == pid and pyotp.whereis("svc") is None
        with pytest.raises(pyotp.StartError) as taken:
            await pyotp.gen_server.start(h.Casted, None, name=("global", "svc"))
        pyotp.gen_server.cast(("global", "svc"), "hello")
        _, casts = await pyotp.gen_server.call(("global", "svc"), "get", timeout=T)
        await pyotp.gen_server.stop(("global", "svc"))
        await global_.sync()
        return taken.value.reason == ("already_started", pid), casts, global_.whereis_name("svc")

    assert pyotp.run(main) == (True, ["hello"], None)


def test_a_registration_is_visible_on_every_connected_node(peer):
    """Ports global_SUITE:names (registration seen from another node)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        mine = pyotp.spawn(h.echo)
        assert await global_.register_name("on_a", mine)
        seen_on_b = await pyotp.rpc.call(b.name, h.global_whereis, "on_a", timeout=T)
        theirs, ok = await pyotp.rpc.call(b.name, h.global_register_idle, "on_b", timeout=T)
        assert ok and theirs.node == b.name
        pyotp.exit(mine, "kill")
        return seen_on_b == mine, global_.whereis_name("on_b") == theirs

    assert run_node(main) == (True, True)


def test_only_one_of_two_concurrent_registrations_from_two_nodes_wins(peer):
    """Ports global_SUITE:names_and_locks (one name, two racing registrants)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        await global_.sync()
        me = pyotp.self()
        results = []
        for round_ in range(3):
            name = f"race{round_}"
            pyotp.spawn(_register_local_and_report, me, name)
            pyotp.spawn(_register_remote_and_report, me, b.name, name)
            got = [await pyotp.receive(("registered", name, ANY, ANY), timeout=T)
                   for _ in range(2)]
            winners = [g[2] for g in got if g[3]]
            on_a = global_.whereis_name(name)
            on_b = await pyotp.rpc.call(b.name, h.global_whereis, name, timeout=T)
            results.append((len(winners), winners[0] == on_a == on_b if winners else None))
        return results

    assert run_node(main) == [(1, True)] * 3


async def _register_local_and_report(parent, name):
    pid = pyotp.spawn(h.idle)
    ok = await global_.register_name(name, pid)
    pyotp.send(parent, ("registered", name, pid, ok))


async def _register_remote_and_report(parent, node, name):
    pid, ok = await pyotp.rpc.call(node, h.global_register_idle, name, timeout=T)
    pyotp.send(parent, ("registered", name, pid, ok))


def test_a_taken_name_or_an_already_named_pid_is_refused_from_any_node(peer):
    """Erlang's global: `no` for a taken name (even by its own pid) and for a pid that
    already has a name; of two racing registrations of one pid under two names, one wins."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pid = pyotp.spawn(h.idle)
        assert await global_.register_name("first", pid)
        refused = [
            await pyotp.rpc.call(b.name, h.global_register, "first", pid, timeout=T),
            await pyotp.rpc.call(b.name, h.global_register, "second", pid, timeout=T),
        ]
        me = pyotp.self()
        results = []
        for round_ in range(3):
            racer = pyotp.spawn(h.idle)
            names = (f"here{round_}", f"there{round_}")
            pyotp.spawn(_register_pid_and_report, me, None, names[0], racer)
            pyotp.spawn(_register_pid_and_report, me, b.name, names[1], racer)
            got = [await pyotp.receive(("registered", ANY, racer, ANY), timeout=T)
                   for _ in range(2)]
            winners = [g[1] for g in got if g[3]]
            on_b = [await pyotp.rpc.call(b.name, h.global_whereis, n, timeout=T)
                    for n in names]
            results.append((len(winners), sorted(map(str, on_b)) == sorted(
                [str(racer), "None"])))
        return refused, global_.whereis_name("second"), results

    assert run_node(main) == ([False, False], None, [(1, True)] * 3)


async def _register_pid_and_report(parent, node, name, pid):
    if node is None:
        ok = await global_.register_name(name, pid)
    else:
        ok = await pyotp.rpc.call(node, h.global_register, name, pid, timeout=T)
    pyotp.send(parent, ("registered", name, pid, ok))


def test_names_of_a_killed_node_are_removed(peer):
    """Ports global_SUITE:name_die."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        pid, ok = await pyotp.rpc.call(b.name, h.global_register_idle, "doomed", timeout=T)
        assert ok and global_.whereis_name("doomed") == pid
        pyotp.monitor_node(b.name, True)
        b.kill()
        await pyotp.receive(("nodedown", b.name), timeout=T)
        await global_.sync()
        return global_.whereis_name("doomed")

    assert run_node(main) is None


def test_global_send_reaches_a_process_on_another_node(peer):
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        echo = pyotp.spawn(h.echo, node=b.name)
        assert await global_.register_name("remote_echo", echo)
        global_.send("remote_echo", (pyotp.self(), "over there"))
        got = await pyotp.receive(("echo", ANY, ANY), timeout=T)
        pyotp.send(echo, "stop")
        return got[1:]

    assert run_node(main) == ("over there", b.name)


async def _partition_and_register(b, name_on_b, name_on_a):
    """Connect to b, let a process there register `name_on_b` once the nodes are apart,
    register `name_on_a` here meanwhile, reconnect and sync; return (pid on b, pid here)."""
    assert await pyotp.net.connect(b.name)
    await global_.sync()
    pyotp.spawn(h.global_register_after_nodedown, name_on_b, pyotp.node(), pyotp.self(),
                node=b.name)
    candidate = (await pyotp.receive(("candidate", ANY), timeout=T))[1]
    pyotp.monitor_node(b.name, True)
    assert pyotp.net.disconnect(b.name)
    await pyotp.receive(("nodedown", b.name), timeout=T)
    mine = pyotp.spawn(h.idle)
    assert await global_.register_name(name_on_a, mine)
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, b.proc.stdout.readline), T)
    assert line.strip() == f"registered {name_on_b} True"
    assert await pyotp.net.connect(b.name)
    await global_.sync()
    return candidate, mine


def test_tables_sync_both_ways_when_nodes_connect(peer):
    """Ports global_SUITE:both_known_1 (names registered apart merge on connect)."""
    b = peer()

    async def main():
        theirs, mine = await _partition_and_register(b, "from_b", "from_a")
        on_b = await pyotp.rpc.call(b.name, h.global_whereis, "from_a", timeout=T)
        return global_.whereis_name("from_b") == theirs, on_b == mine

    assert run_node(main) == (True, True)


def test_a_name_clash_after_reconnect_keeps_one_pid_and_kills_the_other(peer, caplog):
    """Ports global_SUITE:simple_resolve (the default resolver, random_exit_name)."""
    b = peer()

    async def main():
        theirs, mine = await _partition_and_register(b, "clash", "clash")
        ref = pyotp.monitor(theirs)
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        await global_.sync()
        on_b = await pyotp.rpc.call(b.name, h.global_whereis, "clash", timeout=T)
        alive = await pyotp.process_info(mine) is not None
        return down[4], global_.whereis_name("clash") == mine, on_b == mine, alive

    with caplog.at_level(logging.WARNING, logger="pyotp.global"):
        reason, here, there, alive = run_node(main)
    # the loser may be dead before our monitor is set up: then the DOWN says noproc
    assert reason in ("killed", "noproc") and here and there and alive
    assert any("name conflict" in r.getMessage() for r in caplog.records)


async def _whereis_on_this_scheduler(name, parent):
    from pyotp import global_ as g

    end = time.monotonic() + 10
    while g.whereis_name(name) is None and time.monotonic() < end:
        await asyncio.sleep(0.01)
    pyotp.send(parent, ("seen", g.whereis_name(name), os.getpid()))


def test_whereis_name_answers_on_every_scheduler_of_a_node():
    async def main():
        from pyotp import global_ as g

        assert await g.register_name("everywhere", pyotp.self())
        pyotp.spawn(_whereis_on_this_scheduler, "everywhere", pyotp.self(), scheduler=1)
        _, seen, their_os = await pyotp.receive(("seen", ANY, ANY), timeout=10)
        return seen == pyotp.self(), their_os != os.getpid()

    assert pyotp.run(main, name=node_name("g"), cookie="c", schedulers=2) == (True, True)


async def _register_read_unregister_read(name, parent):
    """Register and unregister `name`, reading it right after each (on this scheduler)."""
    from pyotp import global_ as g

    me = pyotp.self()
    ok = await g.register_name(name, me)
    seen = g.whereis_name(name)
    await g.unregister_name(name)
    pyotp.send(parent, ("read", ok, seen == me, g.whereis_name(name)))


def test_a_registration_is_seen_at_once_by_the_caller_on_another_scheduler():
    """As Erlang's global: once register_name/unregister_name returns, whereis_name of
    every process of the node sees it, also on a scheduler that is not the server's."""

    async def main():
        pyotp.spawn(_register_read_unregister_read, "here", pyotp.self(), scheduler=1)
        return (await pyotp.receive(("read", ANY, ANY, ANY), timeout=T))[1:]

    assert pyotp.run(main, schedulers=2) == (True, True, None)
