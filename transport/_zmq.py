"""ZeroMQ streams between schedulers: PUSH → PULL over ipc:// (one node) and tcp:// (nodes).

Where it sits: scheduler router → **mesh / node ports** (this module) → the peer's PULL socket.

Each scheduler binds one PULL socket (ipc:// for its node, and tcp:// for other nodes) and
holds one PUSH socket per peer, so every ordered pair of schedulers has its own FIFO stream.
Frames queued during one loop turn leave as one ZeroMQ message per peer (batching is worth
about 5x): at the end of the turn, or earlier when a process is about to wait in `receive`
(`flush_early`, once per turn), so a call's request and its reply skip the end-of-turn hop.
A batch never exceeds the receivers' frame limit: a long turn is split into several.
Inbound, the PULL socket's edge-triggered FD is drained in slices so a flood of frames
cannot starve the processes of this scheduler.

Closing: a PUSH socket closed right after its last send can lose messages even with LINGER
(libzmq #4660), so the pool only closes sockets after the peers have acknowledged (Bye).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, Callable

import zmq

from ._frames import encode_batch
from ._handshake import CHALLENGE_SIZE

__all__ = ["Mesh", "NodePorts"]

log = logging.getLogger("pyotp.transport")

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)  # plain ints: zmq's flag enums make `&` cost microseconds
# zmq_poll with no wait reads a socket's readiness in about half the time of
# getsockopt(ZMQ_EVENTS) (pyzmq turns each option number into an enum first).
_zmq_poll = zmq.zmq_poll
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_SLICE = 64  # inbound ZeroMQ messages handled per loop callback before yielding
_HELD_FOR = 10.0  # seconds a message under a not-yet-applied token is kept, undecoded
_HELD_MAX = 64 * 1024 * 1024  # bytes of such messages kept at most
# A node stream message is the sender's session token (TOKEN_SIZE bytes), then the batch.
TOKEN_SIZE = CHALLENGE_SIZE


class _Streams:
    """Internal: batching and flushing shared by the mesh and the node ports."""

    loop: asyncio.AbstractEventLoop
    out: dict
    max_batch: int

    def _init_streams(self, loop: asyncio.AbstractEventLoop, max_batch: int) -> None:
        self.loop = loop
        self.out = {}
        self.max_batch = max_batch
        self._flush_scheduled = False
        self.early = False  # frames were queued this turn and no early flush happened yet
        self.closed = False

    def _queued(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.early = True
            self.loop.call_soon(self.flush)

    def flush_early(self) -> None:
        """Send what is queued now, once per loop turn: a process is about to wait.

        A request (or a reply) then leaves without waiting for the rest of the turn, while
        a turn in which many processes send and wait still goes out in few batches.
        """
        if self.early:
            self.early = False
            self._send_queued()

    def flush(self) -> None:
        """Send every queued batch now."""
        self._flush_scheduled = False
        self.early = False
        self._send_queued()

    def _send_queued(self) -> None:
        for key, frames in self.out.items():
            if frames:
                batch = list(frames)
                frames.clear()
                self._send_batches(key, batch)

    def _send_batches(self, key: Any, frames: list) -> None:
        try:
            data = encode_batch(frames)
        except Exception as exc:  # a bug upstream must not wedge the stream
            log.error("dropping %d frames to %s: %s", len(frames), key, exc)
            return
        if len(data) > self.max_batch and len(frames) > 1:
            # Over the receivers' frame limit (which would drop the connection): split.
            half = len(frames) // 2
            self._send_batches(key, frames[:half])
            self._send_batches(key, frames[half:])
            return
        self._send(key, data)

    def _send(self, key: Any, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close every socket (after the peers acknowledged; see the module docstring)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            self.loop.remove_reader(self.fd)
        except Exception:  # the loop may already be closed
            pass
        for sock in self.push.values():
            sock.close(linger=1000)
        self.push.clear()
        self.pull.close(linger=0)


def _pull(ctx: Any, max_frame: int) -> Any:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame)  # larger: the connection is dropped, undecoded
    return sock


def _push(ctx: Any, endpoint: str) -> Any:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    return sock


class Mesh(_Streams):
    """Internal: the ipc:// streams of one scheduler to the other schedulers of its node."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        on_batch: Callable[[bytes], None],
        max_frame: int = 128 * 1024 * 1024 + 65536,
    ) -> None:
        self._init_streams(loop, max_frame - 65536)
        self.ctx = zmq.Context.instance()
        self.pull = _pull(self.ctx, max_frame)
        self.pull.bind(endpoint)
        self.endpoint = endpoint
        self.on_batch = on_batch
        self.push: dict[int, Any] = {}
        self.fd = self.pull.getsockopt(zmq.FD)
        self._inbound = [(self.pull, _POLLIN)]
        loop.add_reader(self.fd, self._readable)

    def connect(self, peer: int, endpoint: str) -> None:
        """Open (or reopen, dropping anything queued for an old peer) the stream to `peer`."""
        old = self.push.pop(peer, None)
        if old is not None:
            old.close(linger=0)
        self.push[peer] = _push(self.ctx, endpoint)
        self.out[peer] = []

    def disconnect(self, peer: int) -> None:
        """Drop the stream to a dead peer and whatever was queued for it."""
        sock = self.push.pop(peer, None)
        if sock is not None:
            sock.close(linger=0)
        self.out.pop(peer, None)

    def put(self, peer: int, frame: Any) -> None:
        """Queue `frame` for `peer`; it leaves with this loop turn's batch."""
        out = self.out.get(peer)
        if out is None:
            return  # peer down: dropped, as a message to a dead process is
        out.append(frame)
        if not self._flush_scheduled:
            self._queued()

    def _send(self, peer: Any, data: bytes) -> None:
        sock = self.push.get(peer)
        if sock is None:
            return
        try:
            sock.send(data, zmq.NOBLOCK, copy=len(data) < 65536)
        except zmq.ZMQError as exc:
            log.error("dropping a batch to scheduler %s: %s", peer, exc)

    def poll(self) -> bool:
        """Handle one inbound message if one waits, outside the reader; True if so.

        Reading the socket's state consumes its FD's edge: the caller must `rearm` before
        the loop next waits.
        """
        pull = self.pull
        try:
            if not _zmq_poll(self._inbound, 0):
                return False
            data = pull.recv(zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        self.on_batch(data)
        return True

    def rearm(self) -> None:
        """After reading outside the reader: run it again if a message waits (edge FD)."""
        try:
            if _zmq_poll(self._inbound, 0):
                self.loop.call_soon(self._readable)
        except zmq.ZMQError:
            pass

    def _readable(self) -> None:
        pull = self.pull
        handle = self.on_batch
        for _ in range(_SLICE):
            try:
                data = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if not self.closed:
                    log.error("receive failed: %s", exc)
                return
            handle(data)
        # More may be waiting; the FD is edge-triggered and will not fire again for it.
        self.loop.call_soon(self._readable)

class NodePorts(_Streams):
    """Internal: one scheduler's tcp:// streams to the schedulers of other nodes.

    Inbound, a PULL socket on a tcp port takes messages token + batch (the token is the
    first TOKEN_SIZE bytes: one ZeroMQ part, so one recv per message); only tokens
    handed out by a completed cookie handshake are accepted — anything else is dropped and
    counted before it is decoded. A message under a token this scheduler has not applied yet
    is held (undecoded, for a few seconds): the peer may finish the handshake and write before
    this node's NodeUp reaches this scheduler. Outbound, one PUSH per remote scheduler.

    `watch` reports a node whose scheduler 0 drops its tcp connection (its OS process died,
    or closed it) within milliseconds, as Erlang sees a closed connection; heartbeats remain
    for a node cut off without a close.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        on_batch: Callable[[str, bytes], None],
        max_frame: int = 128 * 1024 * 1024 + 65536,
    ) -> None:
        self._init_streams(loop, max_frame - 65536)
        self.ctx = zmq.Context.instance()
        self.pull = _pull(self.ctx, max_frame)
        try:
            port = self.pull.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError:
            self.pull.close(linger=0)  # a host this machine cannot listen on
            raise
        self.endpoint = f"tcp://{host}:{port}"
        self.on_batch = on_batch
        self.accept: dict[bytes, str] = {}  # token -> node name
        self.push: dict[tuple[str, int], Any] = {}
        self.tokens: dict[str, bytes] = {}
        self.endpoints: dict[str, dict[int, str]] = {}
        self.rejected = 0
        self._reported = 0  # rejections logged so far
        self._report_at = -1.0  # loop time of the last such log line
        self._expiry: Any = None  # the timer that drops held messages nobody claimed
        self.held: dict[bytes, tuple[float, list[bytes]]] = {}
        self.held_bytes = 0
        self.watches: dict[str, tuple[Any, Any, int]] = {}  # node -> (push, monitor, fd)
        self.fd = self.pull.getsockopt(zmq.FD)
        self._inbound = [(self.pull, _POLLIN)]
        loop.add_reader(self.fd, self._readable)

    def node_up(self, name: str, token: bytes, accept: bytes, endpoints: dict[int, str]) -> None:
        self.node_down(name)
        self.tokens[name] = token
        self.accept[accept] = name
        self.endpoints[name] = dict(endpoints)
        entry = self.held.pop(accept, None)
        if entry is not None:
            for data in entry[1]:  # in arrival order, before anything read later
                self.held_bytes -= len(data)
                self.on_batch(name, memoryview(data)[TOKEN_SIZE:])

    def watch(self, name: str, on_lost: Callable[[str], None]) -> None:
        """Call `on_lost(name)` once if the tcp connection to `name`'s scheduler 0 drops."""
        endpoint = self.endpoints.get(name, {}).get(0)
        if endpoint is None or self.closed:
            return
        self._unwatch(name)
        key = (name, 0)
        sock = self.push.get(key)
        if sock is None:
            sock = self.push[key] = _push(self.ctx, endpoint)
            self.out[key] = []
        monitor = sock.get_monitor_socket(_DISCONNECTED)
        fd = monitor.getsockopt(zmq.FD)
        self.watches[name] = (sock, monitor, fd)
        self.loop.add_reader(fd, self._watch_readable, name, on_lost)
        self._watch_readable(name, on_lost)  # an edge FD: read what came before

    def _watch_readable(self, name: str, on_lost: Callable[[str], None]) -> None:
        entry = self.watches.get(name)
        if entry is None:
            return
        monitor = entry[1]
        lost = False
        try:
            while monitor.getsockopt(_EVENTS) & _POLLIN:
                parts = monitor.recv_multipart(zmq.NOBLOCK)
                if struct.unpack_from("=H", parts[0])[0] == _DISCONNECTED:
                    lost = True
        except zmq.ZMQError:
            return
        if lost:
            self._unwatch(name)
            on_lost(name)

    def _unwatch(self, name: str) -> None:
        entry = self.watches.pop(name, None)
        if entry is None:
            return
        sock, monitor, fd = entry
        try:
            self.loop.remove_reader(fd)
        except Exception:  # the loop may already be closed
            pass
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)

    def close(self) -> None:
        for name in list(self.watches):
            self._unwatch(name)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        super().close()

    def node_down(self, name: str) -> None:
        self._unwatch(name)
        self.tokens.pop(name, None)
        self.endpoints.pop(name, None)
        for token in [t for t, n in self.accept.items() if n == name]:
            del self.accept[token]
        for key in [k for k in self.push if k[0] == name]:
            self.push.pop(key).close(linger=0)
            self.out.pop(key, None)

    def connected(self, name: str) -> bool:
        return name in self.tokens

    def put(self, name: str, index: int, frame: Any) -> None:
        key = (name, index)
        out = self.out.get(key)
        if out is None:
            endpoint = self.endpoints.get(name, {}).get(index)
            if endpoint is None:
                return  # node or scheduler unknown: dropped, as a send to a dead process is
            self.push[key] = _push(self.ctx, endpoint)
            out = self.out[key] = []
        out.append(frame)
        if not self._flush_scheduled:
            self._queued()

    def _send(self, key: Any, data: bytes) -> None:
        sock = self.push.get(key)
        token = self.tokens.get(key[0])
        if sock is None or token is None:
            return
        try:
            sock.send(token + data, zmq.NOBLOCK, copy=len(data) < 65536)
        except zmq.ZMQError as exc:
            log.error("dropping a batch to %s: %s", key, exc)

    def _hold(self, token: bytes, data: bytes) -> None:
        now = self.loop.time()
        self._expire_held(now)
        if len(token) < TOKEN_SIZE or self.held_bytes + len(data) > _HELD_MAX:
            self.rejected += 1  # not from an authenticated node: never decoded
            self._report_rejected()
            return
        entry = self.held.get(token)
        if entry is None:
            entry = self.held[token] = (now + _HELD_FOR, [])
            if self._expiry is None:
                self._expiry = self.loop.call_later(_HELD_FOR, self._expire_due)
        entry[1].append(data)
        self.held_bytes += len(data)

    def _expire_due(self) -> None:
        self._expiry = None
        self._expire_held(self.loop.time())
        if self.held and not self.closed:
            soonest = min(deadline for deadline, _ in self.held.values())
            self._expiry = self.loop.call_at(soonest, self._expire_due)

    def _expire_held(self, now: float) -> None:
        """Drop held messages whose token no handshake applied in time (never decoded)."""
        for t in [t for t, (deadline, _) in self.held.items() if deadline < now]:
            _, msgs = self.held.pop(t)
            self.rejected += len(msgs)
            self.held_bytes -= sum(len(m) for m in msgs)
        self._report_rejected()

    def _report_rejected(self) -> None:
        # At most one line a second, with counts: a flood must not flood the log.
        now = self.loop.time()
        if self.rejected > self._reported and now - self._report_at >= 1.0:
            self._report_at = now
            log.warning("dropped %d message(s) on %s not from an authenticated node "
                        "(%d so far)", self.rejected - self._reported, self.endpoint,
                        self.rejected)
            self._reported = self.rejected

    def poll(self) -> bool:
        """Handle one inbound message if one waits (see `Mesh.poll`); True if so."""
        try:
            if not _zmq_poll(self._inbound, 0):
                return False
        except zmq.ZMQError:
            return False
        self._readable(0)
        return True

    def rearm(self) -> None:
        """After reading outside the reader: run it again if a message waits (edge FD)."""
        try:
            if _zmq_poll(self._inbound, 0):
                self.loop.call_soon(self._readable)
        except zmq.ZMQError:
            pass

    def _readable(self, limit: int = _SLICE) -> None:
        """Read up to `limit` messages (0: one, for `poll`, which leaves re-arming to its
        caller); then run again later if more may wait."""
        pull = self.pull
        accept = self.accept
        for _ in range(limit or 1):
            try:
                data = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if not self.closed:
                    log.error("node receive failed: %s", exc)
                return
            token = data[:TOKEN_SIZE]
            node = accept.get(token)
            if node is None:
                self._hold(token, data)
                continue
            self.on_batch(node, memoryview(data)[TOKEN_SIZE:])
        if limit == _SLICE:  # the reader: more may wait, and the FD will not say so again
            self.loop.call_soon(self._readable)
