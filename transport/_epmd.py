"""The port mapper: one small daemon per host maps node names to the ports they listen on.

Where it sits: node boot → `ensure_epmd` + `register` (this module) → the daemon; a peer's
`net.connect("b@host")` → `lookup("b", host)` → the port to dial. `b@host:port` skips it.

Like Erlang's epmd, the daemon is started on demand by the first node of a host and shared by
all later ones; unlike epmd it does not outlive its purpose: when no node has been registered
for `idle` seconds (and nobody asked it anything meanwhile) it exits by itself.

The daemon (`python -m transport._epmd [--port P] [--idle S] [--bind ADDR] [--detach]`) serves
one ZeroMQ REP socket on `tcp://ADDR:P`. P defaults to `$PYOTP_EPMD_PORT`, else 4370 (not 4369,
which a real Erlang epmd may hold); S to `$PYOTP_EPMD_IDLE`, else 10; ADDR to
`$PYOTP_EPMD_BIND`, else `0.0.0.0` so that nodes on other hosts can look names up. Only peers
on a loopback address may register or unregister: the names of a host are its own nodes'.

Requests and replies are msgspec Structs (msgpack, tagged), one request per REQ/REP round:
```
Register(name, port, os_pid[, host])
                             → Ok | Error("name_taken" | "no_such_process" | "not_local" | ...)
Unregister(name, os_pid)     → Ok | Error("not_owner" | "not_local")
Lookup(name)                 → Port(port or None)
Names()                      → NameList([(name, port), ...], {name: host, ...})
Ping()                       → Pong(daemon_os_pid)
anything malformed           → Error("bad_request"); the daemon carries on
```
`host` is the part after `@` of the registering node's full name (the address it listens on);
it is optional both ways, so a daemon and a client of an older version still understand each
other. With it `nodes()` gives full node names, which is what `pyotp top` without a node
watches.

Stale registrations: a registration carries the node's OS pid, and the daemon notes that
process's start time. A registration is stale once that process is gone, a zombie, or the pid
now belongs to a process started at another time (pid reuse). Stale registrations are swept
every fraction of a second and never block a name: a SIGKILLed node's name can be registered
again at once, with no refresh traffic. This works because a node registers only with the
daemon of its own host (loopback), so both see the same pids. Registering again from the same
process (same pid and start time) is a refresh: it succeeds and updates the port, so a node may
re-register after the daemon was restarted.

Client calls are blocking (the node calls them at boot, and later via `run_in_executor`); each
uses a fresh REQ socket with a receive timeout and LINGER 0, so a lost reply never wedges a
socket, and an unreachable daemon raises `OtpError(("epmd_unreachable", host, port))`.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Annotated, Any, Union

import msgspec
import psutil
import zmq

from ._errors import BadArg, OtpError

__all__ = [
    "DEFAULT_IDLE",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "EPMD_BIND_ENV",
    "EPMD_IDLE_ENV",
    "EPMD_PORT_ENV",
    "Error",
    "Lookup",
    "NameList",
    "Names",
    "Ok",
    "Ping",
    "Pong",
    "Port",
    "Register",
    "Reply",
    "Request",
    "Unregister",
    "ensure_epmd",
    "epmd_port",
    "lookup",
    "nodes",
    "main",
    "names",
    "ping",
    "register",
    "serve",
    "unregister",
]

log = logging.getLogger("pyotp.epmd")

DEFAULT_PORT = 4370
DEFAULT_IDLE = 10.0  # seconds without registrations (or requests) before the daemon exits
DEFAULT_TIMEOUT = 1.0  # seconds a client call waits for the daemon's reply
EPMD_PORT_ENV = "PYOTP_EPMD_PORT"
EPMD_IDLE_ENV = "PYOTP_EPMD_IDLE"
EPMD_BIND_ENV = "PYOTP_EPMD_BIND"

_MAX_REQUEST = 4096  # bytes; bigger requests are dropped by ZeroMQ before they reach us
_MAX_REPLY = 64 * 1024 * 1024  # a names() reply of a very busy host still fits
_MAX_NAMES = 65536  # registrations one daemon holds
_MAX_NAME = 255
_BOUND, _IN_USE = b"B", b"U"  # what a detached daemon tells its starter about its bind
_EXIT_IN_USE = 3
_FIRST_REQUEST_WAIT = 30.0  # s a new daemon waits for its starter's first request (see serve)

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_NAME)]
_PortNo = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_OsPid = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
_Host = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_NAME)]


# --- protocol -------------------------------------------------------------------------------


class _E(msgspec.Struct, frozen=True, tag=True):
    """Base of the port mapper's messages (internal)."""


class Register(_E, tag="register"):
    """Map `name` to `port` for the node running as OS process `os_pid` on this host;
    `host` is the host part of its full name, when the node says it."""

    name: _Name
    port: _PortNo
    os_pid: _OsPid
    host: _Host | None = None


class Unregister(_E, tag="unregister"):
    """Drop `name`; when `os_pid` is given, only if that process registered it (or is gone)."""

    name: _Name
    os_pid: _OsPid | None = None


class Lookup(_E, tag="lookup"):
    """Ask for the port of `name`."""

    name: _Name


class Names(_E, tag="names"):
    """Ask for every live registration."""


class Ping(_E, tag="ping"):
    """Ask whether the daemon is there."""


class Ok(_E, tag="ok"):
    """The request was done."""


class Error(_E, tag="error"):
    """The request was refused for `reason`."""

    reason: str


class Port(_E, tag="port"):
    """The port of the name asked for, or None when it is not registered."""

    port: int | None


class NameList(_E, tag="name_list"):
    """Every live registration as `(name, port)`, sorted by name; `hosts` maps the names
    registered with a host to it."""

    names: list[tuple[str, int]]
    hosts: dict[str, str] = {}


class Pong(_E, tag="pong"):
    """The daemon is there, as OS process `os_pid`."""

    os_pid: int


Request = Union[Register, Unregister, Lookup, Names, Ping]  # noqa: UP007 - a msgspec type
Reply = Union[Ok, Error, Port, NameList, Pong]  # noqa: UP007 - a msgspec type

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)
_reply_decoder = msgspec.msgpack.Decoder(Reply)


# --- configuration --------------------------------------------------------------------------


def epmd_port(port: int | None = None) -> int:
    """Return the port mapper's port: `port`, else `$PYOTP_EPMD_PORT`, else 4370.

    Raises:
        BadArg: the port (given or from the environment) is not an int in 1..65535.
    """
    source = "epmd port"
    if port is None:
        env = os.environ.get(EPMD_PORT_ENV)
        if env is None:
            return DEFAULT_PORT
        source = f"${EPMD_PORT_ENV}"
        try:
            port = int(env)
        except ValueError:
            raise BadArg(f"{source} must be a port number 1..65535, got {env!r}") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise BadArg(f"{source} must be a port number 1..65535, got {port!r}")
    return port


def _idle(idle: float | None) -> float:
    source = "idle"
    if idle is None:
        env = os.environ.get(EPMD_IDLE_ENV)
        if env is None:
            return DEFAULT_IDLE
        source = f"${EPMD_IDLE_ENV}"
        try:
            idle = float(env)
        except ValueError:
            raise BadArg(f"{source} must be seconds > 0, got {env!r}") from None
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or not idle > 0:
        raise BadArg(f"{source} must be seconds > 0, got {idle!r}")
    return float(idle)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME:
        raise BadArg(f"node name must be a str of 1 to {_MAX_NAME} characters, got {name!r}")
    return name


def _check_timeout(timeout: object) -> float:
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise BadArg(f"timeout must be seconds > 0, got {timeout!r}")
    return float(timeout)


# --- client ---------------------------------------------------------------------------------


def _request(host: str, port: int, req: _E, timeout: float) -> Reply:
    """Send one request on a fresh REQ socket and return the reply (internal)."""
    ms = max(1, int(timeout * 1000))
    sock = zmq.Context.instance().socket(zmq.REQ)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, ms)
        sock.setsockopt(zmq.SNDTIMEO, ms)
        sock.setsockopt(zmq.MAXMSGSIZE, _MAX_REPLY)
        if ":" in host:  # an IPv6 literal
            sock.setsockopt(zmq.IPV6, 1)
            endpoint = f"tcp://[{host}]:{port}"
        else:
            endpoint = f"tcp://{host}:{port}"
        try:
            sock.connect(endpoint)
            sock.send(_encoder.encode(req))
            data = sock.recv()
        except zmq.ZMQError as e:  # Again on timeout; EINVAL etc. on a bad host
            raise OtpError(
                ("epmd_unreachable", host, port),
                f"port mapper at {host}:{port} did not answer within {timeout:g} s"
                + ("" if e.errno == zmq.EAGAIN else f" ({e})"),
            ) from None
    finally:
        sock.close(linger=0)
    try:
        return _reply_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise OtpError(
            ("epmd_bad_reply", host, port), f"port mapper at {host}:{port} sent a bad reply: {e}"
        ) from None


def _refused(reply: Reply, what: str) -> OtpError:
    if isinstance(reply, Error):
        return OtpError(reply.reason, f"port mapper refused {what}: {reply.reason}")
    return OtpError(("epmd_bad_reply", type(reply).__name__), f"unexpected reply to {what}")


def ping(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> int:
    """Check that the port mapper at `host` answers.

    Returns:
        The daemon's OS pid.

    Raises:
        OtpError: `("epmd_unreachable", host, port)` when it does not answer in `timeout`.
    """
    port = _port_arg(epmd_port)
    reply = _request(host, port, Ping(), _check_timeout(timeout))
    if not isinstance(reply, Pong):
        raise _refused(reply, "ping")
    return reply.os_pid


def register(
    name: str,
    port: int,
    os_pid: int | None = None,
    *,
    host: str | None = None,
    epmd_port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Register node `name` (the part before `@`) as listening on `port` on this host.

    Registering again from the same process refreshes the entry (the port may change).

    Args:
        name: the node's short name.
        port: the TCP port the node accepts connections on.
        os_pid: the node's OS pid (default: this process); the entry lives as long as it.
        host: the part after `@` of the node's name, for `nodes()` (optional).
        epmd_port: the port mapper's port (default: `epmd_port()`).
        timeout: seconds to wait for the daemon.

    Raises:
        BadArg: a malformed argument.
        OtpError: reason `"name_taken"` (a live node holds the name), `"no_such_process"`,
            `"table_full"`, or `("epmd_unreachable", host, port)`.
    """
    _check_name(name)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise BadArg(f"port must be a port number 1..65535, got {port!r}")
    if os_pid is None:
        os_pid = os.getpid()
    elif not isinstance(os_pid, int) or isinstance(os_pid, bool) or not 1 <= os_pid < 2**31:
        raise BadArg(f"os_pid must be a positive int, got {os_pid!r}")
    if host is not None and (not isinstance(host, str) or not 1 <= len(host) <= _MAX_NAME):
        raise BadArg(f"host must be a non-empty str of at most {_MAX_NAME}, got {host!r}")
    req = Register(name, port, os_pid, host)
    reply = _request("127.0.0.1", _port_arg(epmd_port), req, _check_timeout(timeout))
    if not isinstance(reply, Ok):
        raise _refused(reply, f"registering {name!r}")


def unregister(
    name: str,
    os_pid: int | None = None,
    *,
    epmd_port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Drop the registration of `name` on this host; nothing happens if there is none.

    Args:
        name: the node's short name.
        os_pid: when given, drop it only if this process registered it (or is gone).
        epmd_port: the port mapper's port (default: `epmd_port()`).
        timeout: seconds to wait for the daemon.

    Raises:
        BadArg: a malformed argument.
        OtpError: reason `"not_owner"`, or `("epmd_unreachable", host, port)`.
    """
    _check_name(name)
    if os_pid is not None and (
        not isinstance(os_pid, int) or isinstance(os_pid, bool) or not 1 <= os_pid < 2**31
    ):
        raise BadArg(f"os_pid must be a positive int or None, got {os_pid!r}")
    req = Unregister(name, os_pid)
    reply = _request("127.0.0.1", _port_arg(epmd_port), req, _check_timeout(timeout))
    if not isinstance(reply, Ok):
        raise _refused(reply, f"unregistering {name!r}")


def lookup(
    name: str,
    host: str = "127.0.0.1",
    *,
    epmd_port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int | None:
    """Return the port node `name` listens on at `host`, or None if it is not registered.

    Raises:
        BadArg: a malformed argument.
        OtpError: `("epmd_unreachable", host, port)` when the daemon does not answer.
    """
    _check_name(name)
    reply = _request(host, _port_arg(epmd_port), Lookup(name), _check_timeout(timeout))
    if not isinstance(reply, Port):
        raise _refused(reply, f"looking up {name!r}")
    return reply.port


def names(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[tuple[str, int]]:
    """Return every node registered at `host` as `(name, port)`, sorted by name.

    Raises:
        OtpError: `("epmd_unreachable", host, port)` when the daemon does not answer.
    """
    reply = _request(host, _port_arg(epmd_port), Names(), _check_timeout(timeout))
    if not isinstance(reply, NameList):
        raise _refused(reply, "names")
    return [(n, p) for n, p in reply.names]


def nodes(
    host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[str]:
    """Return the full names (`name@host`) of the nodes registered at `host`, sorted by name.

    A node that registered without its host (an older version) is named with `host`.

    Raises:
        OtpError: `("epmd_unreachable", host, port)` when the daemon does not answer.
    """
    reply = _request(host, _port_arg(epmd_port), Names(), _check_timeout(timeout))
    if not isinstance(reply, NameList):
        raise _refused(reply, "names")
    return [f"{n}@{reply.hosts.get(n, host)}" for n, _ in reply.names]


def ensure_epmd(port: int | None = None, *, idle: float | None = None, timeout: float = 5.0) -> int:
    """Make sure a port mapper answers on this host, starting one if none does.

    Behind the scenes:
    1. Ping the daemon on `port`; if it answers, done.
    2. Else start `python -m transport._epmd --detach`: it forks a daemon in its own session
       (so it outlives the caller and its terminal), which binds the port and tells its
       starter whether it got it.
    3. Two nodes racing here both start one: one bind wins, the loser exits quietly, and
       both callers then ping the winner.

    Args:
        port: the port mapper's port (default: `epmd_port()`).
        idle: the new daemon's idle timeout (default: `$PYOTP_EPMD_IDLE` or 10 s).
        timeout: seconds to wait for a daemon in all.

    Returns:
        The port mapper's port.

    Raises:
        BadArg: a malformed argument.
        OtpError: `("epmd_unreachable", "127.0.0.1", port)` when no daemon answers in time
            (e.g. another program holds the port), or `("epmd_start_failed", code)`.
    """
    port = epmd_port(port)
    timeout = _check_timeout(timeout)
    if idle is not None:
        idle = _idle(idle)
    deadline = time.monotonic() + timeout
    if _listening(port):
        try:
            ping(epmd_port=port, timeout=min(1.0, timeout))
            return port
        except OtpError:
            pass  # a dying daemon, or a stranger on the port: try to start ours anyway
    cmd = [sys.executable, "-m", "transport._epmd", "--port", str(port), "--detach"]
    if idle is not None:
        cmd += ["--idle", repr(idle)]
    try:
        code = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=max(0.1, deadline - time.monotonic()) + 5.0,  # interpreter start-up
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OtpError(("epmd_start_failed", "timeout"), "port mapper did not start") from None
    if code.returncode not in (0, _EXIT_IN_USE):
        err = code.stderr.decode(errors="replace").strip().splitlines()
        raise OtpError(
            ("epmd_start_failed", code.returncode),
            f"port mapper failed to start (exit {code.returncode}): {err[-1] if err else ''}",
        )
    # Bound by us (0) or by a racing starter (3): either way the winner should answer now.
    ping(epmd_port=port, timeout=max(0.2, deadline - time.monotonic()))
    return port


def _listening(port: int) -> bool:
    """Return whether anything accepts TCP connections on 127.0.0.1:`port` (internal).

    A refused connection is known at once, where a ZeroMQ ping could only time out: this
    makes the first node's boot fast.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _port_arg(port: int | None) -> int:
    # The client calls take the daemon's port as keyword `epmd_port`, which shadows the
    # function of that name inside them.
    return epmd_port(port)


# --- daemon ---------------------------------------------------------------------------------


class _Entry(msgspec.Struct):
    """One registration (internal)."""

    port: int
    os_pid: int
    started: float  # the registering process's create_time: tells a reused pid apart
    host: str | None = None


def _started(os_pid: int) -> float | None:
    """Return the start time of live process `os_pid`, or None if it is gone or a zombie."""
    try:
        p = psutil.Process(os_pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # exists, but not ours to inspect: trust it is alive
        return 0.0


class _Table:
    """The registrations and the rules of the protocol, without sockets (internal)."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def alive(self, e: _Entry) -> bool:
        started = _started(e.os_pid)
        return started is not None and (started == e.started or 0.0 in (started, e.started))

    def sweep(self) -> None:
        """Drop every stale registration."""
        for name in [n for n, e in self.entries.items() if not self.alive(e)]:
            log.info("dropping stale registration %r (OS pid gone)", name)
            del self.entries[name]

    def handle(self, req: Any, local: bool) -> Reply:
        """Answer one decoded request; `local` tells whether the peer is on a loopback address."""
        if isinstance(req, Lookup):
            e = self.entries.get(req.name)
            if e is not None and not self.alive(e):
                del self.entries[req.name]
                e = None
            return Port(None if e is None else e.port)
        if isinstance(req, Names):
            self.sweep()
            return NameList(
                sorted((n, e.port) for n, e in self.entries.items()),
                {n: e.host for n, e in self.entries.items() if e.host is not None},
            )
        if isinstance(req, Ping):
            return Pong(os.getpid())
        if not local:
            return Error("not_local")
        if isinstance(req, Register):
            return self._register(req)
        if isinstance(req, Unregister):
            e = self.entries.get(req.name)
            if e is None:
                return Ok()
            if req.os_pid is not None and req.os_pid != e.os_pid and self.alive(e):
                return Error("not_owner")
            del self.entries[req.name]
            return Ok()
        return Error("bad_request")

    def _register(self, req: Register) -> Reply:
        started = _started(req.os_pid)
        if started is None:
            return Error("no_such_process")
        old = self.entries.get(req.name)
        if old is not None:
            if old.os_pid == req.os_pid and old.started == started:
                old.port = req.port  # a refresh by the same node
                old.host = req.host
                return Ok()
            if self.alive(old):
                return Error("name_taken")
        elif len(self.entries) >= _MAX_NAMES:
            self.sweep()
            if len(self.entries) >= _MAX_NAMES:
                return Error("table_full")
        self.entries[req.name] = _Entry(req.port, req.os_pid, started, req.host)
        return Ok()


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _bind(port: int, bind: str) -> Any:
    """Return a REP socket bound to `bind:port`; re-raise ZMQError(EADDRINUSE) if taken."""
    sock = zmq.Context.instance().socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, _MAX_REQUEST)
    sock.setsockopt(zmq.SNDTIMEO, 1000)  # a reply to a vanished client must never block us
    if ":" in bind:
        sock.setsockopt(zmq.IPV6, 1)
        bind = f"[{bind}]"
    try:
        sock.bind(f"tcp://{bind}:{port}")
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock


def serve(sock: Any, idle: float) -> None:
    """Run the daemon on bound REP socket `sock` until it has been idle for `idle` seconds.

    Idle means: no registration and no request at all for `idle` seconds. Counting requests
    too closes a race: a node that pinged the daemon (in `ensure_epmd`) has `idle` seconds to
    register before the daemon may leave. Until its first request the daemon waits at least
    `_FIRST_REQUEST_WAIT` s, so a starter slowed down by a loaded machine still finds it.
    """
    table = _Table()
    sweep_every = min(1.0, max(0.05, idle / 4))
    last_busy = time.monotonic()
    served = False
    next_sweep = last_busy + sweep_every
    # This loop is the whole daemon: one request at a time, housekeeping between them.
    while True:
        now = time.monotonic()
        limit = idle if served else max(idle, _FIRST_REQUEST_WAIT)
        wait = min(next_sweep, last_busy + limit) - now
        if sock.poll(max(0, int(wait * 1000) + 1), zmq.POLLIN):
            _serve_one(sock, table)
            last_busy = time.monotonic()
            served = True
        now = time.monotonic()
        if now >= next_sweep:
            table.sweep()
            next_sweep = now + sweep_every
        if table.entries:
            last_busy = now
        elif now - last_busy >= limit:
            # A last look, so a request already queued is answered rather than lost.
            if sock.poll(0, zmq.POLLIN):
                continue
            log.info("no node registered for %g s: exiting", idle)
            sock.close(linger=0)
            return


def _serve_one(sock: Any, table: _Table) -> None:
    frames = sock.recv_multipart(copy=False)
    reply: Reply
    if len(frames) != 1:
        reply = Error("bad_request")
    else:
        try:
            req = _request_decoder.decode(frames[0].buffer)
        except msgspec.DecodeError as e:
            log.warning("bad request from %s: %s", frames[0].get("Peer-Address"), e)
            reply = Error("bad_request")
        else:
            try:
                reply = table.handle(req, _is_loopback(frames[0].get("Peer-Address")))
            except Exception:  # a bug here must not take down every node's name service
                log.exception("failed to handle %r", req)
                reply = Error("internal_error")
    try:
        sock.send(_encoder.encode(reply))
    except zmq.Again:
        pass  # the client is gone; REP moves on to the next request anyway


def main(argv: list[str] | None = None) -> int:
    """Run the daemon from the command line; return the exit status.

    Exit status: 0 after an idle exit, or when the port is taken (another daemon won a start
    race); 3 from a `--detach` starter whose daemon found the port taken; 1 on other errors.
    """
    parser = argparse.ArgumentParser(
        prog="python -m transport._epmd", description="pyotp port mapper daemon"
    )
    parser.add_argument("--port", type=int, default=None, help=f"default ${EPMD_PORT_ENV} or 4370")
    parser.add_argument("--idle", type=float, default=None, help=f"default ${EPMD_IDLE_ENV} or 10")
    parser.add_argument("--bind", default=None, help=f"default ${EPMD_BIND_ENV} or 0.0.0.0")
    parser.add_argument("--detach", action="store_true", help="fork into the background")
    args = parser.parse_args(argv)
    try:
        port = epmd_port(args.port)
        idle = _idle(args.idle)
    except BadArg as e:
        parser.error(str(e))
    bind = args.bind or os.environ.get(EPMD_BIND_ENV) or "0.0.0.0"
    logging.basicConfig(level=logging.INFO, format="pyotp epmd %(levelname)s: %(message)s")
    if args.detach:
        return _detach(port, idle, bind)
    try:
        sock = _bind(port, bind)
    except zmq.ZMQError as e:
        if e.errno == errno.EADDRINUSE:
            return 0  # another daemon has it: nothing to do
        log.error("cannot bind %s:%s: %s", bind, port, e)
        return 1
    serve(sock, idle)
    return 0


def _detach(port: int, idle: float, bind: str) -> int:
    # Fork before any ZeroMQ context exists, so the child starts with a clean library state.
    # The child binds, then reports through the pipe; this parent relays that as its exit
    # status, so the starter knows the outcome without polling.
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        status = os.read(r, 1)
        os.close(r)
        if status == _BOUND:
            return 0
        os.waitpid(pid, 0)  # the loser is gone before its starter hears of it
        return _EXIT_IN_USE if status == _IN_USE else 1
    os.close(r)
    os.setsid()  # its own session: no SIGHUP/SIGINT from the starter's terminal
    os.chdir("/")  # hold no directory of the starter's (tests remove theirs)
    try:
        sock = _bind(port, bind)
    except zmq.ZMQError as e:
        os.write(w, _IN_USE if e.errno == errno.EADDRINUSE else b"E")
        if e.errno != errno.EADDRINUSE:
            print(f"pyotp epmd: cannot bind {bind}:{port}: {e}", file=sys.stderr)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.write(w, _BOUND)
    os.close(w)
    try:
        serve(sock, idle)
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
