"""The port mapper daemon and its client: names, stale entries, idle exit, races, bad input.

Every test runs its daemons on a port of its own and kills every daemon on that port at the
end, so nothing outlives the test (the daemons detach from their starter by design).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import msgspec
import psutil
import pytest
import zmq
from conftest import free_port

import pyotp
from transport import _epmd as epmd

pytestmark = pytest.mark.slow

IDLE = 30.0  # seconds: long enough that no test's daemon leaves on its own by surprise


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (a detached daemon nobody reaped yet) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; return whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def daemons(port: int) -> list[int]:
    """The live port mapper daemons started for `port`."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "transport._epmd" in cmd and "--port" in cmd and str(port) in cmd and alive(p.pid):
            found.append(p.pid)
    return found


@pytest.fixture
def port():
    """A free port for this test's port mapper; every daemon on it is killed afterwards."""
    port = free_port()
    yield port
    for pid in daemons(port):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert wait_gone(pid, 10)


@pytest.fixture
def daemon(port):
    """A running port mapper on `port`; yields its port."""
    assert epmd.ensure_epmd(port, idle=IDLE) == port
    return port


@pytest.fixture
def other_node():
    """A live OS process that is not this one, to stand in for another node."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def raw_request(port: int, *frames: bytes, host: str = "127.0.0.1", timeout: float = 2.0):
    """Send raw frames to the daemon and return the decoded reply (or raise zmq.Again)."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.connect(f"tcp://{host}:{port}")
    try:
        sock.send_multipart(list(frames))
        return msgspec.msgpack.decode(sock.recv(), type=epmd.Reply)
    finally:
        sock.close(linger=0)


# --- names ----------------------------------------------------------------------------------


def test_a_registered_name_is_looked_up_listed_and_unregistered(daemon):
    epmd.register("a", 5001, epmd_port=daemon)
    epmd.register("b", 5002, epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) == 5001
    assert epmd.lookup("b", "127.0.0.1", epmd_port=daemon) == 5002
    assert epmd.names(epmd_port=daemon) == [("a", 5001), ("b", 5002)]
    epmd.unregister("a", epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) is None
    assert epmd.names(epmd_port=daemon) == [("b", 5002)]


def test_nodes_gives_full_names_with_the_host_each_node_registered(daemon):
    epmd.register("a", 5001, host="10.1.2.3", epmd_port=daemon)
    epmd.register("b", 5002, epmd_port=daemon)  # no host (an older node): the asked host
    assert epmd.nodes(epmd_port=daemon) == ["a@10.1.2.3", "b@127.0.0.1"]
    assert epmd.names(epmd_port=daemon) == [("a", 5001), ("b", 5002)]
    with pytest.raises(pyotp.BadArg):
        epmd.register("c", 5003, host="", epmd_port=daemon)


def test_an_unknown_name_looks_up_as_none(daemon):
    assert epmd.lookup("nobody", epmd_port=daemon) is None
    assert epmd.names(epmd_port=daemon) == []


def test_unregistering_an_unknown_name_is_not_an_error(daemon):
    epmd.unregister("nobody", epmd_port=daemon)


def test_a_name_held_by_a_live_node_is_taken(daemon, other_node):
    epmd.register("a", 5001, other_node.pid, epmd_port=daemon)
    with pytest.raises(pyotp.OtpError) as err:
        epmd.register("a", 5002, epmd_port=daemon)
    assert err.value.reason == "name_taken"
    assert epmd.lookup("a", epmd_port=daemon) == 5001


def test_registering_again_from_the_same_process_refreshes_the_port(daemon):
    epmd.register("a", 5001, epmd_port=daemon)
    epmd.register("a", 5009, epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) == 5009


def test_a_name_whose_node_was_killed_can_be_registered_again(daemon, other_node):
    epmd.register("a", 5001, other_node.pid, epmd_port=daemon)
    other_node.kill()
    other_node.wait()
    assert epmd.lookup("a", epmd_port=daemon) is None
    epmd.register("a", 5002, epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) == 5002


def test_a_killed_but_unreaped_node_holds_no_name(daemon, other_node):
    epmd.register("a", 5001, other_node.pid, epmd_port=daemon)
    other_node.send_signal(signal.SIGKILL)  # not reaped: it lingers as a zombie
    deadline = time.monotonic() + 10
    while psutil.Process(other_node.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    epmd.register("a", 5002, epmd_port=daemon)
    assert epmd.names(epmd_port=daemon) == [("a", 5002)]


def test_a_reused_os_pid_does_not_keep_a_dead_nodes_name():
    table = epmd._Table()
    assert table.handle(epmd.Register("a", 5001, os.getpid()), local=True) == epmd.Ok()
    # The node died and its pid went to a process started at another time.
    table.entries["a"].started -= 1000.0
    assert table.handle(epmd.Lookup("a"), local=True) == epmd.Port(None)
    assert table.handle(epmd.Register("a", 5002, os.getpid()), local=True) == epmd.Ok()


def test_registering_for_a_dead_os_pid_is_refused(daemon):
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(pyotp.OtpError) as err:
        epmd.register("a", 5001, proc.pid, epmd_port=daemon)
    assert err.value.reason == "no_such_process"


def test_only_the_owner_may_unregister_a_live_nodes_name(daemon, other_node):
    epmd.register("a", 5001, other_node.pid, epmd_port=daemon)
    with pytest.raises(pyotp.OtpError) as err:
        epmd.unregister("a", os.getpid(), epmd_port=daemon)
    assert err.value.reason == "not_owner"
    epmd.unregister("a", other_node.pid, epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) is None


def test_remote_peers_may_look_up_names_but_not_register_them(daemon):
    addrs = [
        a.address
        for nic in psutil.net_if_addrs().values()
        for a in nic
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    if not addrs:
        pytest.skip("this host has no non-loopback IPv4 address")
    epmd.register("a", 5001, epmd_port=daemon)
    assert epmd.lookup("a", addrs[0], epmd_port=daemon) == 5001
    assert epmd.names(addrs[0], epmd_port=daemon) == [("a", 5001)]
    reply = raw_request(
        daemon, msgspec.msgpack.encode(epmd.Register("b", 5002, os.getpid())), host=addrs[0]
    )
    assert reply == epmd.Error("not_local")
    reply = raw_request(daemon, msgspec.msgpack.encode(epmd.Unregister("a")), host=addrs[0])
    assert reply == epmd.Error("not_local")
    assert epmd.names(epmd_port=daemon) == [("a", 5001)]


# --- bad input and errors -------------------------------------------------------------------


def test_malformed_requests_get_an_error_reply_and_the_daemon_carries_on(daemon):
    bad = epmd.Error("bad_request")
    assert raw_request(daemon, b"") == bad
    assert raw_request(daemon, b"\xc1 not msgpack") == bad
    assert raw_request(daemon, msgspec.msgpack.encode({"type": "launch", "x": 1})) == bad
    assert raw_request(daemon, msgspec.msgpack.encode([1, 2])) == bad
    assert raw_request(daemon, b"one", b"two") == bad  # multipart
    for fields in ({"port": 0}, {"port": 70000}, {"os_pid": -5}, {"name": ""}):
        req = {"type": "register", "name": "a", "port": 5001, "os_pid": os.getpid(), **fields}
        assert raw_request(daemon, msgspec.msgpack.encode(req)) == bad
    assert epmd.names(epmd_port=daemon) == []
    assert alive(epmd.ping(epmd_port=daemon))


def test_an_oversized_request_is_dropped_and_the_daemon_carries_on(daemon):
    with pytest.raises(zmq.Again):
        raw_request(daemon, b"x" * 100_000, timeout=0.5)
    epmd.register("a", 5001, epmd_port=daemon)
    assert epmd.lookup("a", epmd_port=daemon) == 5001


def test_an_unreachable_daemon_raises_a_clear_error_within_the_timeout(port):
    start = time.monotonic()
    with pytest.raises(pyotp.OtpError, match=r"did not answer within 0\.3 s") as err:
        epmd.lookup("a", epmd_port=port, timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert err.value.reason == ("epmd_unreachable", "127.0.0.1", port)
    for call in (
        lambda: epmd.register("a", 5001, epmd_port=port, timeout=0.2),
        lambda: epmd.unregister("a", epmd_port=port, timeout=0.2),
        lambda: epmd.names(epmd_port=port, timeout=0.2),
        lambda: epmd.ping(epmd_port=port, timeout=0.2),
    ):
        with pytest.raises(pyotp.OtpError) as err:
            call()
        assert err.value.reason == ("epmd_unreachable", "127.0.0.1", port)


def test_a_port_held_by_another_program_gives_a_clear_error(port):
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        with pytest.raises(pyotp.OtpError) as err:
            epmd.ensure_epmd(port, idle=IDLE, timeout=1.0)
    assert err.value.reason == ("epmd_unreachable", "127.0.0.1", port)
    assert daemons(port) == []


def test_bad_arguments_raise_badarg(port, monkeypatch):
    for call in (
        lambda: epmd.register("", 5001, epmd_port=port),
        lambda: epmd.register("a" * 256, 5001, epmd_port=port),
        lambda: epmd.register("a", 0, epmd_port=port),
        lambda: epmd.register("a", 70000, epmd_port=port),
        lambda: epmd.register("a", 5001, -1, epmd_port=port),
        lambda: epmd.lookup(5, epmd_port=port),
        lambda: epmd.lookup("a", epmd_port=0),
        lambda: epmd.names(epmd_port=port, timeout=0),
        lambda: epmd.ensure_epmd(port, idle=-1),
    ):
        with pytest.raises(pyotp.BadArg):
            call()
    monkeypatch.setenv("PYOTP_EPMD_PORT", "not-a-port")
    with pytest.raises(pyotp.BadArg, match="PYOTP_EPMD_PORT"):
        epmd.epmd_port()


# --- the daemon's life ----------------------------------------------------------------------


def test_the_port_defaults_to_4370_or_the_environment(port, monkeypatch):
    monkeypatch.delenv("PYOTP_EPMD_PORT", raising=False)
    assert epmd.epmd_port() == 4370
    monkeypatch.setenv("PYOTP_EPMD_PORT", str(port))
    assert epmd.epmd_port() == port
    assert epmd.ensure_epmd(idle=IDLE) == port
    epmd.register("a", 5001)
    assert epmd.lookup("a") == 5001


def test_ensure_epmd_reuses_a_running_daemon(daemon):
    pid = epmd.ping(epmd_port=daemon)
    assert epmd.ensure_epmd(daemon) == daemon
    assert epmd.ping(epmd_port=daemon) == pid
    assert daemons(daemon) == [pid]


def test_the_daemon_exits_when_no_node_registered_for_the_idle_time(port):
    epmd.ensure_epmd(port, idle=0.3)
    pid = epmd.ping(epmd_port=port)
    assert wait_gone(pid, 10)


def test_a_new_daemon_waits_for_its_first_request_longer_than_its_idle_time(port):
    """A starter slowed down (a loaded machine) still finds the daemon it started."""
    cmd = [sys.executable, "-m", "transport._epmd", "--port", str(port), "--detach",
           "--idle", "0.2"]
    subprocess.run(cmd, check=True, timeout=30)
    time.sleep(1.0)  # five idle periods before anyone asks
    pid = epmd.ping(epmd_port=port)
    assert wait_gone(pid, 10)  # after that first request, the idle time as usual


def test_the_idle_time_comes_from_the_environment(port, monkeypatch):
    monkeypatch.setenv("PYOTP_EPMD_IDLE", "0.3")
    epmd.ensure_epmd(port)
    assert wait_gone(epmd.ping(epmd_port=port), 10)


def test_the_daemon_stays_while_a_node_is_registered_then_leaves(port):
    epmd.ensure_epmd(port, idle=0.3)
    pid = epmd.ping(epmd_port=port)
    epmd.register("a", 5001, epmd_port=port)
    assert not wait_gone(pid, 1.2)  # four idle periods with a live registration
    epmd.unregister("a", epmd_port=port)
    assert wait_gone(pid, 10)


def test_the_daemon_leaves_after_its_last_node_is_killed(port, other_node):
    epmd.ensure_epmd(port, idle=0.3)
    pid = epmd.ping(epmd_port=port)
    epmd.register("a", 5001, other_node.pid, epmd_port=port)
    assert not wait_gone(pid, 0.6)
    other_node.kill()
    other_node.wait()
    assert wait_gone(pid, 10)


def test_the_daemon_outlives_the_process_that_started_it(port):
    code = f"from transport._epmd import ensure_epmd, ping; ensure_epmd({port}, idle={IDLE})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    pid = epmd.ping(epmd_port=port)
    assert alive(pid)
    assert os.getsid(pid) == pid  # its own session: no signals from the starter's terminal
    assert psutil.Process(pid).cwd() == "/"


def test_nodes_starting_the_daemon_at_once_get_one_daemon(port):
    code = (
        "from transport._epmd import ensure_epmd, ping;"
        f"ensure_epmd({port}, idle={IDLE}); print(ping(epmd_port={port}))"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    pids = {int(s.communicate(timeout=30)[0]) for s in starters}
    assert all(s.returncode == 0 for s in starters)
    assert len(pids) == 1
    assert daemons(port) == list(pids)  # the losers are gone already


def test_the_daemon_runs_in_the_foreground_from_the_command_line(port):
    cmd = [sys.executable, "-m", "transport._epmd", "--port", str(port), "--idle", "0.5"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        assert epmd.ping(epmd_port=port, timeout=10) == proc.pid
        # A second daemon on the same port loses the bind and leaves quietly (the first one
        # holds a registration meanwhile, so it cannot have left on its own).
        epmd.register("a", 5001, epmd_port=port)
        second = subprocess.run(cmd, check=False, timeout=30, capture_output=True)
        assert (second.returncode, second.stderr) == (0, b"")
        assert epmd.ping(epmd_port=port) == proc.pid
        epmd.unregister("a", epmd_port=port)
        assert proc.wait(timeout=10) == 0  # the idle exit
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
