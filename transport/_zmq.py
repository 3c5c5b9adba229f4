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

__all__ = ["Mesh"]

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
