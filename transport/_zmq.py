"""Sockets between schedulers: a full mesh of one-way streams, unix (same node) or tcp (nodes).

Where it sits: scheduler router → **mesh** (this module) → the peer's listening socket.

Each scheduler listens on one socket and holds one outbound stream per peer, so every ordered
pair of schedulers has its own FIFO stream. Frames queued during one loop turn are flushed as
one length-prefixed message per peer at the end of the turn (batching is worth about 5x).
Inbound, each readable callback handles a bounded slice so a flood of frames cannot starve
the processes of this scheduler.

The module keeps its historical name: the streams were ZeroMQ PUSH/PULL sockets. Plain
non-blocking sockets on the event loop replaced them because a round trip through ZeroMQ's
IO threads and its mailbox FD cost 120-170 µs here against ~20 µs for a unix socket written
and read by the loops themselves (the node handshake and the port mapper still use ZeroMQ).
What ZeroMQ gave that this module keeps: a peer may connect before the other end listens
(connects are retried and frames wait), frames are never reordered, and an inbound message
over the size limit drops the connection before anything is decoded.

Wire format of one message: a 4-byte big-endian length, then the batch. Between nodes the
batch is preceded by a 1-byte token length and the session token: only tokens handed out by
a completed cookie handshake are accepted; anything else is dropped and counted, undecoded.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from typing import Any, Callable

from ._frames import encode_batch

__all__ = ["Mesh", "NodePorts"]

log = logging.getLogger("pyotp.transport")

_READ_SLICE = 1 << 20  # inbound bytes handled per loop callback before yielding
_RECV = 1 << 18
_HEADER = struct.Struct(">I")
_RETRY_FIRST = 0.002  # connect retries (peer not listening yet), doubling up to _RETRY_MAX
_RETRY_MAX = 0.1
_LINGER = 2.0  # seconds close() may block to write what is still queued
_SOFT_ERRORS = (BlockingIOError, InterruptedError)
_HELD_FOR = 10.0  # seconds a message under a not yet accepted token is held (see NodePorts)
_HELD_MAX = 8 << 20  # bytes held so at most, over all such tokens


def _parse(endpoint: str) -> tuple[int, Any]:
    """Return (address family, address) of "ipc://path" or "tcp://host:port"."""
    if endpoint.startswith("ipc://"):
        return socket.AF_UNIX, endpoint[6:]
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        return socket.AF_INET6 if ":" in host else socket.AF_INET, (host.strip("[]"), int(port))
    raise ValueError(f"unsupported endpoint {endpoint!r}")


class _Out:
    """One outbound stream: connects (retrying while the peer is not up), then writes."""

    __slots__ = ("loop", "endpoint", "sock", "queue", "connecting", "closed", "retry", "handle",
                 "writer")

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.sock: socket.socket | None = None
        self.queue: list[memoryview] = []  # bytes not yet written, in order
        self.connecting = False
        self.closed = False
        self.retry = _RETRY_FIRST
        self.handle: Any = None
        self.writer = False
        self._connect()

    def _connect(self) -> None:
        self.handle = None
        if self.closed:
            return
        family, addr = _parse(self.endpoint)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
        if err in (0, errno.EISCONN):
            self._connected(sock)
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY) and family != socket.AF_UNIX:
            self.sock = sock
            self.connecting = True
            self.loop.add_writer(sock.fileno(), self._connect_done)
        else:
            sock.close()  # not listening yet (or a full backlog): try again soon
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        if not self.closed:
            self.handle = self.loop.call_later(self.retry, self._connect)
            self.retry = min(self.retry * 2, _RETRY_MAX)

    def _connect_done(self) -> None:
        sock = self.sock
        self.loop.remove_writer(sock.fileno())
        self.connecting = False
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            sock.close()
            self.sock = None
            self._schedule_retry()
        else:
            self._connected(sock)

    def _connected(self, sock: socket.socket) -> None:
        self.sock = sock
        self.retry = _RETRY_FIRST
        # A reader only to notice the peer closing (EOF) or failing; peers never write back.
        self.loop.add_reader(sock.fileno(), self._peer_closed)
        if self.queue:
            self._write_queued()

    def _peer_closed(self) -> None:
        sock = self.sock
        try:
            if sock.recv(4096):
                return  # nothing is expected on this stream; ignore it
        except _SOFT_ERRORS:
            return
        except OSError:
            pass
        self._lost()

    def _lost(self) -> None:
        """The connection broke: drop what it held and reconnect for what comes next."""
        sock = self.sock
        if sock is None:
            return
        self._forget(sock)
        self.queue.clear()  # a half-written message cannot be resumed on a new stream
        self._schedule_retry()

    def _forget(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self.writer or self.connecting:
                self.loop.remove_writer(fd)
        self.writer = False
        self.connecting = False
        sock.close()
        self.sock = None

    def write(self, header: bytes, data: bytes) -> None:
        queue = self.queue
        if queue or self.sock is None or self.connecting:
            queue.append(memoryview(header))
            queue.append(memoryview(data))
            return
        try:
            sent = self.sock.sendmsg((header, data))
        except _SOFT_ERRORS:
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(header) + len(data):
            if sent < len(header):
                queue.append(memoryview(header)[sent:])
                queue.append(memoryview(data))
            else:
                queue.append(memoryview(data)[sent - len(header):])
            self._want_write()

    def _want_write(self) -> None:
        if not self.writer and self.sock is not None:
            self.writer = True
            self.loop.add_writer(self.sock.fileno(), self._write_queued)

    def _write_queued(self) -> None:
        queue = self.queue
        sock = self.sock
        while queue:
            try:
                sent = sock.sendmsg(queue[:64])
            except _SOFT_ERRORS:
                break
            except OSError:
                self._lost()
                return
            while sent:
                n = len(queue[0])
                if sent >= n:
                    sent -= n
                    del queue[0]
                else:
                    queue[0] = queue[0][sent:]
                    sent = 0
        if queue:
            self._want_write()
        elif self.writer:
            self.writer = False
            self.loop.remove_writer(sock.fileno())

    def close(self, linger: float) -> None:
        """Close, first writing what is queued (blocking up to `linger` seconds)."""
        if self.closed:
            return
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
        sock = self.sock
        if sock is None:
            return
        queue = self.queue if not self.connecting else []
        self._forget_keep_open(sock)
        if queue and linger > 0:
            try:
                sock.settimeout(linger)
                for part in queue:
                    sock.sendall(part)
            except OSError:
                pass
        queue.clear()
        sock.close()

    def _forget_keep_open(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        try:
            self.loop.remove_reader(fd)
            if self.writer or self.connecting:
                self.loop.remove_writer(fd)
        except Exception:  # the loop may already be closed
            pass
        self.writer = False
        self.sock = None


class _Listener:
    """A listening socket and its inbound streams; calls `on_message(conn, data)` per message."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        on_message: Callable[[bytes], None],
        max_frame: int,
    ) -> None:
        self.loop = loop
        self.on_message = on_message
        self.max_frame = max_frame
        family, addr = _parse(endpoint)
        if family == socket.AF_UNIX:
            try:
                os.unlink(addr)  # a predecessor's socket file (a replaced scheduler)
            except FileNotFoundError:
                pass
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
        self.sock = sock
        self.family = family
        if family == socket.AF_UNIX:
            self.endpoint = endpoint
        else:
            host, port = sock.getsockname()[:2]
            self.endpoint = f"tcp://{host}:{port}"
        self.conns: dict[int, tuple[socket.socket, bytearray]] = {}
        self._view = memoryview(bytearray(_RECV))
        self.closed = False
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except _SOFT_ERRORS:
                return
            except OSError as exc:
                log.error("accept failed: %s", exc)
                return
            conn.setblocking(False)
            if self.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = conn.fileno()
            self.conns[fd] = (conn, bytearray())
            self.loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        entry = self.conns.get(fd)
        if entry is None:
            return
        conn, buf = entry
        # recv_into one reused buffer: recv(n) would allocate (and for a large n, mmap and
        # unmap) n bytes per call, which cost more than the read itself.
        view = self._view
        got = 0
        while got < _READ_SLICE:
            try:
                n = conn.recv_into(view)
            except _SOFT_ERRORS:
                break
            except OSError:
                n = 0
            if not n:
                self._parse(fd, buf)
                self._drop(fd)
                return
            got += n
            buf += view[:n]
            if n < _RECV:
                break
        if not self._parse(fd, buf):
            self._drop(fd)
        # Level-triggered: if more is waiting the loop calls again after other callbacks.

    def _parse(self, fd: int, buf: bytearray) -> bool:
        """Hand every complete message in `buf` on; False when the stream must be dropped."""
        pos = 0
        end = len(buf)
        handle = self.on_message
        limit = self.max_frame
        ok = True
        while end - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > limit:
                log.warning("dropped an inbound stream: a message of %d bytes exceeds %d", n,
                            limit)
                ok = False
                break
            if end - pos - 4 < n:
                break
            data = bytes(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            try:
                handle(data)
            except Exception as exc:  # a bad message never kills the scheduler
                log.error("inbound message failed: %s: %s", type(exc).__name__, exc)
            if fd not in self.conns:
                return True  # closed meanwhile (shutdown)
        if pos:
            del buf[:pos]
        return ok

    def _drop(self, fd: int) -> None:
        entry = self.conns.pop(fd, None)
        if entry is not None:
            try:
                self.loop.remove_reader(fd)
            except Exception:  # the loop may already be closed
                pass
            entry[0].close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in list(self.conns):
            self._drop(fd)
        try:
            self.loop.remove_reader(self.sock.fileno())
        except Exception:  # the loop may already be closed
            pass
        self.sock.close()
        if self.family == socket.AF_UNIX:
            try:
                os.unlink(self.endpoint[6:])
            except OSError:
                pass


def _header(n: int) -> bytes:
    return _HEADER.pack(n)


class Mesh:
    """Internal: the streams of one scheduler to its peers (unix sockets, one node)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        on_batch: Callable[[bytes], None],
        max_frame: int = 64 * 1024 * 1024 + 4096,
    ) -> None:
        self.loop = loop
        self.on_batch = on_batch
        self.listener = _Listener(loop, endpoint, on_batch, max_frame)
        self.endpoint = endpoint
        self.push: dict[int, _Out] = {}
        self.out: dict[int, list] = {}
        self._flush_scheduled = False
        self.early = False  # frames were queued this turn and no early flush happened yet
        self.closed = False

    def connect(self, peer: int, endpoint: str) -> None:
        """Open (or reopen, dropping anything queued for an old peer) the stream to `peer`."""
        old = self.push.pop(peer, None)
        if old is not None:
            old.close(0)
        self.push[peer] = _Out(self.loop, endpoint)
        self.out[peer] = []

    def disconnect(self, peer: int) -> None:
        """Drop the stream to a dead peer and whatever was queued for it."""
        sock = self.push.pop(peer, None)
        if sock is not None:
            sock.close(0)
        self.out.pop(peer, None)

    def put(self, peer: int, frame: Any) -> None:
        """Queue `frame` for `peer`; it leaves with this loop turn's batch."""
        out = self.out.get(peer)
        if out is None:
            return  # peer down: dropped, as a message to a dead process is
        out.append(frame)
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
        for peer, frames in self.out.items():
            if frames:
                try:
                    data = encode_batch(frames)
                except Exception as exc:  # a bug upstream must not wedge the stream
                    log.error("dropping %d frames to scheduler %d: %s", len(frames), peer, exc)
                    frames.clear()
                    continue
                frames.clear()
                self.push[peer].write(_HEADER.pack(len(data)), data)

    def close(self) -> None:
        """Close every stream (after the peers acknowledged), writing what is queued first."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        for out in self.push.values():
            out.close(_LINGER)
        self.push.clear()
        self.listener.close()


class NodePorts:
    """Internal: one scheduler's streams to the schedulers of other nodes (tcp).

    Inbound, a tcp port takes messages [token, batch]; only tokens handed out by a completed
    cookie handshake are accepted — anything else is dropped and counted before it is
    decoded. Outbound, one stream per remote scheduler, batched per loop turn like the mesh.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        on_batch: Callable[[str, bytes], None],
        max_frame: int = 64 * 1024 * 1024 + 4096,
    ) -> None:
        self.loop = loop
        self.on_batch = on_batch
        self.listener = _Listener(loop, f"tcp://{host}:0", self._on_message, max_frame + 256)
        self.endpoint = self.listener.endpoint
        self.accept: dict[bytes, str] = {}  # token -> node name
        self.push: dict[tuple[str, int], _Out] = {}
        self.tokens: dict[str, bytes] = {}
        self.out: dict[tuple[str, int], list] = {}
        self.endpoints: dict[str, dict[int, str]] = {}
        self.rejected = 0
        # Messages under a token not (yet) accepted, held undecoded: a node that finished the
        # handshake may write before this node has applied it (its NodeUp is still on the way).
        self.held: dict[bytes, tuple[float, list[bytes]]] = {}
        self.held_bytes = 0
        self._flush_scheduled = False
        self.early = False
        self.closed = False

    def _on_message(self, data: bytes) -> None:
        n = data[0] if data else 0
        token = data[1 : 1 + n] if n else b""
        node = self.accept.get(token)
        if node is None:
            self._hold(token, data)
            return
        self.on_batch(node, data[1 + n :])

    def _hold(self, token: bytes, data: bytes) -> None:
        now = self.loop.time()
        for t in [t for t, (deadline, _) in self.held.items() if deadline < now]:
            self._reject_held(t)
        if not token or self.held_bytes + len(data) > _HELD_MAX:
            self.rejected += 1  # not from an authenticated node: never decoded
            return
        entry = self.held.get(token)
        if entry is None:
            entry = self.held[token] = (now + _HELD_FOR, [])
        entry[1].append(data)
        self.held_bytes += len(data)

    def _reject_held(self, token: bytes) -> None:
        _, msgs = self.held.pop(token)
        self.rejected += len(msgs)
        self.held_bytes -= sum(len(m) for m in msgs)

    def node_up(self, name: str, token: bytes, accept: bytes, endpoints: dict[int, str]) -> None:
        self.node_down(name)
        self.tokens[name] = token
        self.accept[accept] = name
        self.endpoints[name] = dict(endpoints)
        entry = self.held.pop(accept, None)
        if entry is not None:
            for data in entry[1]:  # in arrival order, before anything read later
                self.held_bytes -= len(data)
                self.on_batch(name, data[1 + data[0] :])

    def node_down(self, name: str) -> None:
        self.tokens.pop(name, None)
        self.endpoints.pop(name, None)
        for token in [t for t, n in self.accept.items() if n == name]:
            del self.accept[token]
        for key in [k for k in self.push if k[0] == name]:
            self.push.pop(key).close(0)
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
            self.push[key] = _Out(self.loop, endpoint)
            out = self.out[key] = []
        out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.early = True
            self.loop.call_soon(self.flush)

    @staticmethod
    def _head(token: bytes, n: int) -> bytes:
        return _HEADER.pack(n + 1 + len(token)) + bytes((len(token),)) + token

    def flush_early(self) -> None:
        """Send what is queued now, once per loop turn (see `Mesh.flush_early`)."""
        if self.early:
            self.early = False
            self._send_queued()

    def flush(self) -> None:
        self._flush_scheduled = False
        self.early = False
        self._send_queued()

    def _send_queued(self) -> None:
        for key, frames in self.out.items():
            if frames:
                try:
                    data = encode_batch(frames)
                except Exception as exc:  # a bug upstream must not wedge the stream
                    log.error("dropping %d frames to %s: %s", len(frames), key, exc)
                    frames.clear()
                    continue
                frames.clear()
                token = self.tokens.get(key[0])
                if token is None:
                    continue
                self.push[key].write(self._head(token, len(data)), data)

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        for out in self.push.values():
            out.close(1.0)
        self.push.clear()
        self.listener.close()
