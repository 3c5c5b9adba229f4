"""The scheduler pool: scheduler 0 starts, watches, replaces and stops the others.

Where it sits: `pyotp.run(schedulers=N)` → **pool** (in the calling OS process, beside
scheduler 0) → N-1 worker OS processes (`schedulers/_worker.py`), each one scheduler.

Behind the scenes:
1. A private directory holds one ipc:// endpoint per scheduler; every scheduler binds its own
   and connects to all others (a full mesh), so any two exchange frames directly.
2. Workers are started with their index, creation and the endpoints; each says Hello.
3. The pool polls its workers. A worker that dies (killed, out of memory, a crashing C
   extension) does not take the node down: every scheduler is told (Peer down), links and
   monitors to its processes fire with "noconnection", and a fresh worker with a new creation
   takes its index, so stale pids never reach new processes.
4. Shutdown: Stop(1) → every scheduler ends its processes and answers Bye (that answer is the
   acknowledgement that its last frames went out); then Stop(2) → workers close and exit;
   stragglers are killed; the directory is removed. Workers also die with the node process
   (parent-death signal, and a parent check), so no orphan is ever left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import psutil
import zmq

from transport import _codec
from transport import _frames as F
from transport._zmq import Mesh, NodePorts

from ._router import MAX_MESSAGE_SIZE, Router

__all__ = ["Pool"]

log = logging.getLogger("pyotp.scheduler")

_START_TIMEOUT = 60.0


class Pool:
    """Internal: scheduler 0's view of the node's scheduler OS processes."""

    def __init__(
        self, sched: Any, n: int, host: str | None = None, max_message_size: int | None = None,
        busy_wait: float | None = None,
    ) -> None:
        self.sched = sched
        self.max_message_size = max_message_size
        self.busy_wait = busy_wait
        self.loop = sched.loop
        self.n = n
        _sweep_stale_dirs()
        # The owner's OS pid is in the name, so a later node can remove what a SIGKILLed
        # node could not (see _sweep_stale_dirs).
        self.dir = tempfile.mkdtemp(prefix=f"pyotp-{os.getpid()}-")
        self.endpoints = {k: f"ipc://{self.dir}/s{k}" for k in range(n)}
        frame_limit = frame_size_limit(max_message_size)
        self.mesh = Mesh(self.loop, self.endpoints[0], self._on_batch, frame_limit)
        self.router = Router(sched, self.mesh, {0: sched.creation})
        self.router.control = self._on_control
        if max_message_size is not None:
            self.router.max_message_size = max_message_size
        if busy_wait is not None:
            self.router.spin = busy_wait
        self.workers: dict[int, subprocess.Popen] = {}
        self.creations: dict[int, int] = {}
        self._hello: dict[int, asyncio.Future] = {}
        self._byes: set[int] = set()
        self._bye_event = asyncio.Event()
        self._watch_task: asyncio.Task | None = None
        self.stopping = False
        # Distributed nodes: every scheduler also has a tcp port for other nodes' frames.
        self.host = host
        self.tcp_endpoints: dict[int, str] = {}
        if host is not None:
            try:
                ports = NodePorts(self.loop, host, self.router.on_node_batch, frame_limit)
            except zmq.ZMQError as e:
                self.mesh.close()
                shutil.rmtree(self.dir, ignore_errors=True)
                raise OSError(e.errno, f"cannot listen on host {host!r}: {e.strerror}") from None
            self.router.ports = ports
            self.tcp_endpoints[0] = ports.endpoint
        main = sys.modules.get("__main__")
        _codec.MAIN_PATH = getattr(main, "__file__", None)

    def _on_batch(self, data: bytes) -> None:
        self.router.on_batch(data)

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Start every worker and wait until all have said Hello."""
        for k in range(1, self.n):
            self.mesh.connect(k, self.endpoints[k])
            self.creations[k] = self.sched.creation
            self.router.creations[k] = self.sched.creation
        for k in range(1, self.n):
            self._launch(k)
        await self._wait_hellos(list(range(1, self.n)))
        self._watch_task = self.loop.create_task(self._watch())

    def _launch(self, k: int) -> None:
        config = {
            "index": k,
            "creation": self.creations[k],
            "node": self.sched.node,
            "endpoints": self.endpoints,
            "creations": dict(self.router.creations),
            "sys_path": sys.path,
            "main_path": _codec.MAIN_PATH,
            "parent": os.getpid(),
            "host": self.host,
            "max_message_size": self.max_message_size,
            "busy_wait": self.busy_wait,
        }
        self._hello[k] = self.loop.create_future()
        self.workers[k] = subprocess.Popen(
            [sys.executable, "-m", "schedulers._worker", json.dumps(config)],
            stdin=subprocess.DEVNULL,
            start_new_session=False,
        )

    async def _wait_hellos(self, indices: list[int]) -> None:
        futs = [self._hello[k] for k in indices]
        if not futs:
            return
        _, pending = await asyncio.wait(futs, timeout=_START_TIMEOUT)
        if pending:
            missing = [k for k in indices if not self._hello[k].done()]
            raise RuntimeError(f"scheduler(s) {missing} did not start in {_START_TIMEOUT} s")

    def _on_control(self, frame: Any) -> None:
        t = type(frame)
        if t is F.Hello:
            fut = self._hello.get(frame.index)
            if fut is not None and not fut.done() and frame.creation == self.creations.get(
                frame.index
            ):
                if frame.tcp:
                    self.tcp_endpoints[frame.index] = frame.tcp
                fut.set_result(True)
        elif t is F.Bye:
            self._byes.add(frame.index)
            if len(self._byes) >= len(self.workers):
                self._bye_event.set()

    # ------------------------------------------------------------------ watch and replace

    async def _watch(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.05)
            for k, proc in list(self.workers.items()):
                if proc.poll() is not None and not self.stopping:
                    await self._replace(k, proc.returncode)

    async def _replace(self, k: int, code: int) -> None:
        log.error("scheduler %d (OS pid %d) died with exit code %s; replacing it",
                  k, self.workers[k].pid, code)
        self.router.peer_down(k)
        self.router.broadcast(F.Peer(k, 0, False))
        # The successor is announced at once: frames for it (a supervisor restarting what
        # was lost, say) queue in ZeroMQ until it binds, instead of failing meanwhile.
        self.creations[k] += 1
        self.router.peer_up(k, self.creations[k], self.endpoints[k])
        self.router.broadcast(F.Peer(k, self.creations[k], True))
        self._launch(k)
        try:
            await self._wait_hellos([k])
        except RuntimeError as exc:
            log.error("%s", exc)

    # ------------------------------------------------------------------ stop

    async def stop(self, grace: float = 5.0) -> None:
        """Shut every scheduler down (see the module docstring) and leave nothing behind."""
        self.stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        live = {k for k, p in self.workers.items() if p.poll() is None}
        self.router.broadcast(F.Stop(1))
        self.mesh.flush()
        await self.sched.shutdown(grace)
        if live:
            try:
                await asyncio.wait_for(self._wait_byes(live), grace + 5)
            except TimeoutError:
                log.error("schedulers %s did not finish shutting down", live - self._byes)
        self.router.broadcast(F.Stop(2))
        self.mesh.flush()
        deadline = self.loop.time() + 5
        while self.loop.time() < deadline and any(
            p.poll() is None for p in self.workers.values()
        ):
            await asyncio.sleep(0.01)
        for p in self.workers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.mesh.close()
        if self.router.ports is not None:
            self.router.ports.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _wait_byes(self, live: set[int]) -> None:
        while not live <= self._byes:
            self._bye_event.clear()
            await self._bye_event.wait()

    def kill_all(self) -> None:
        """Last resort (the loop is gone): kill every worker and remove the directory."""
        for p in self.workers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _sweep_stale_dirs() -> None:
    """Remove socket directories of nodes that died without cleaning up (SIGKILL)."""
    tmp = tempfile.gettempdir()
    try:
        entries = os.listdir(tmp)
    except OSError:
        return
    for entry in entries:
        parts = entry.split("-")
        if len(parts) != 3 or parts[0] != "pyotp" or not parts[1].isdigit():
            continue
        owner = int(parts[1])
        if owner == os.getpid() or psutil.pid_exists(owner):
            continue
        shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)


def frame_size_limit(max_message_size: int | None) -> int:
    """The largest ZeroMQ message a scheduler accepts: one maximal message plus framing.

    ZeroMQ drops the connection of a peer that sends more (before anything is decoded), so a
    flood from an unauthenticated or broken peer costs no memory; the sender's own check
    (`max_message_size`, at `send`) keeps honest peers far below it.
    """
    return 2 * (max_message_size or MAX_MESSAGE_SIZE) + 65536
