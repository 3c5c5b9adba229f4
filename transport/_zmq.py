"""ZeroMQ sockets between the schedulers of one node: a full mesh of PUSH → PULL over ipc://.

Where it sits: scheduler router → **mesh** (this module) → the peer's PULL socket.

Each scheduler binds one PULL socket and holds one PUSH socket per peer, so every ordered
pair of schedulers has its own FIFO stream. Frames queued during one loop turn are flushed
as one ZeroMQ message per peer at the start of the next turn (batching is worth about 5x).
Inbound, the PULL socket's edge-triggered FD is drained in slices so a flood of frames
cannot starve the processes of this scheduler.

Closing: a PUSH socket closed right after its last send can lose messages even with LINGER
(libzmq #4660), so the pool only closes sockets after the peers have acknowledged (Bye).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import zmq

from ._frames import encode_batch

__all__ = ["Mesh", "NodePorts"]

log = logging.getLogger("pyotp.transport")

_SLICE = 64  # inbound ZeroMQ messages handled per loop callback before yielding


class Mesh:
    """Internal: the sockets of one scheduler to its peers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        on_batch: Callable[[bytes], None],
        max_frame: int = 64 * 1024 * 1024 + 4096,
    ) -> None:
        self.loop = loop
        self.ctx = zmq.Context.instance()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, max_frame)
        self.pull.bind(endpoint)
        self.endpoint = endpoint
        self.on_batch = on_batch
        self.push: dict[int, Any] = {}
        self.out: dict[int, list] = {}
        self._flush_scheduled = False
        self._fd = self.pull.getsockopt(zmq.FD)
        loop.add_reader(self._fd, self._readable)
        self.closed = False

    def connect(self, peer: int, endpoint: str) -> None:
        """Open (or reopen, dropping anything queued for an old peer) the stream to `peer`."""
        old = self.push.pop(peer, None)
        if old is not None:
            old.close(linger=0)
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 2000)
        sock.connect(endpoint)
        self.push[peer] = sock
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
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every queued batch now."""
        self._flush_scheduled = False
        for peer, frames in self.out.items():
            if frames:
                try:
                    data = encode_batch(frames)
                except Exception as exc:  # a bug upstream must not wedge the stream
                    log.error("dropping %d frames to scheduler %d: %s", len(frames), peer, exc)
                    frames.clear()
                    continue
                frames.clear()
                try:
                    self.push[peer].send(data, zmq.NOBLOCK, copy=len(data) < 65536)
                except zmq.ZMQError as exc:
                    log.error("dropping a batch to scheduler %d: %s", peer, exc)

    def _readable(self) -> None:
        pull = self.pull
        handle = self.on_batch
        for _ in range(_SLICE):
            try:
                data = pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if self.closed:
                    return
                log.error("receive failed: %s", exc)
                return
            handle(data)
        # More may be waiting; the FD is edge-triggered and will not fire again for it.
        self.loop.call_soon(self._readable)

    def close(self) -> None:
        """Close every socket (after the peers acknowledged; see the module docstring)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            self.loop.remove_reader(self._fd)
        except Exception:  # the loop may already be closed
            pass
        for sock in self.push.values():
            sock.close(linger=1000)
        self.push.clear()
        self.pull.close(linger=0)


class NodePorts:
    """Internal: one scheduler's sockets to the schedulers of other nodes (tcp://).

    Inbound, a PULL socket on a tcp port takes two-part messages [token, batch]; only tokens
    handed out by a completed cookie handshake are accepted — anything else is dropped and
    counted before it is decoded. Outbound, one PUSH socket per remote scheduler, batched per
    loop turn like the local mesh.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        on_batch: Callable[[str, bytes], None],
        max_frame: int = 64 * 1024 * 1024 + 4096,
    ) -> None:
        self.loop = loop
        self.ctx = zmq.Context.instance()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, max_frame)
        port = self.pull.bind_to_random_port(f"tcp://{host}")
        self.endpoint = f"tcp://{host}:{port}"
        self.on_batch = on_batch
        self.accept: dict[bytes, str] = {}  # token -> node name
        self.push: dict[tuple[str, int], Any] = {}
        self.tokens: dict[str, bytes] = {}
        self.out: dict[tuple[str, int], list] = {}
        self.endpoints: dict[str, dict[int, str]] = {}
        self.rejected = 0
        self._flush_scheduled = False
        self._fd = self.pull.getsockopt(zmq.FD)
        loop.add_reader(self._fd, self._readable)
        self.closed = False

    def node_up(self, name: str, token: bytes, accept: bytes, endpoints: dict[int, str]) -> None:
        self.node_down(name)
        self.tokens[name] = token
        self.accept[accept] = name
        self.endpoints[name] = dict(endpoints)

    def node_down(self, name: str) -> None:
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
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 2000)
            sock.connect(endpoint)
            self.push[key] = sock
            out = self.out[key] = []
        out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        for key, frames in self.out.items():
            if frames:
                try:
                    data = encode_batch(frames)
                except Exception as exc:  # a bug upstream must not wedge the stream
                    log.error("dropping %d frames to %s: %s", len(frames), key, exc)
                    frames.clear()
                    continue
                frames.clear()
                try:
                    self.push[key].send_multipart([self.tokens[key[0]], data], zmq.NOBLOCK)
                except (zmq.ZMQError, KeyError) as exc:
                    log.error("dropping a batch to %s: %s", key, exc)

    def _readable(self) -> None:
        pull = self.pull
        for _ in range(_SLICE):
            try:
                parts = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if not self.closed:
                    log.error("node receive failed: %s", exc)
                return
            node = self.accept.get(parts[0]) if len(parts) == 2 else None
            if node is None:
                self.rejected += 1  # not from an authenticated node: never decoded
                continue
            self.on_batch(node, parts[1])
        self.loop.call_soon(self._readable)

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            self.loop.remove_reader(self._fd)
        except Exception:  # the loop may already be closed
            pass
        for sock in self.push.values():
            sock.close(linger=1000)
        self.push.clear()
        self.pull.close(linger=0)
