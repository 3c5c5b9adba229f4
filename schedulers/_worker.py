"""A worker scheduler OS process: `python -m schedulers._worker CONFIG_JSON`.

Where it sits: started by the pool (`schedulers/_pool.py`) of the node process; runs one
scheduler until told to stop, or until the node process is gone (it never outlives it).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import signal
import sys
from typing import Any

import uvloop

from transport import _codec
from transport import _frames as F
from transport._zmq import Mesh, NodePorts

from ._load import LoadMonitor
from ._pool import frame_size_limit
from ._router import Router
from ._scheduler import Scheduler, set_current

__all__ = ["main"]


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGKILL to this process when its parent dies, even by SIGKILL.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # other systems: the parent check in _serve covers it


def main(argv: list[str]) -> None:
    """Run one worker scheduler with the JSON config in argv[1]."""
    config = json.loads(argv[1])
    _die_with_parent()
    if os.getppid() != config["parent"]:
        return  # the node died before we got going
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    sys.path[:] = config["sys_path"]
    gc.set_threshold(max(gc.get_threshold()[0], 10_000), *gc.get_threshold()[1:])  # as in run
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config))


async def _serve(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    index = config["index"]
    _codec.MAIN_PATH = config["main_path"]
    sched = Scheduler(loop, node=config["node"], index=index, creation=config["creation"])
    set_current(sched)
    endpoints = {int(k): v for k, v in config["endpoints"].items()}
    creations = {int(k): v for k, v in config["creations"].items()}
    creations[index] = config["creation"]
    routers: list[Router] = []

    def on_batch(data: bytes) -> None:
        routers[0].on_batch(data)

    frame_limit = frame_size_limit(config.get("max_message_size"))
    mesh = Mesh(loop, endpoints[index], on_batch, frame_limit)
    router = Router(sched, mesh, creations)
    routers.append(router)
    if config.get("max_message_size"):
        router.max_message_size = config["max_message_size"]
    if config.get("busy_wait") is not None:
        router.spin = config["busy_wait"]
    for k, endpoint in endpoints.items():
        if k != index:
            mesh.connect(k, endpoint)
    if config.get("host"):
        router.ports = NodePorts(loop, config["host"], router.on_node_batch, frame_limit)
    done = loop.create_future()
    tasks: set[asyncio.Task] = set()

    async def stop_processes() -> None:
        await sched.shutdown()
        mesh.put(0, F.Bye(index, 1))
        mesh.flush()

    def control(frame: Any) -> None:
        t = type(frame)
        if t is F.Peer:
            if frame.index == index:
                return
            if frame.up:
                router.peer_up(frame.index, frame.creation, endpoints[frame.index])
            else:
                router.peer_down(frame.index)
        elif t is F.Stop:
            if frame.phase == 1:
                task = loop.create_task(stop_processes())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif not done.done():
                done.set_result(None)

    router.control = control
    monitor = LoadMonitor(sched)
    monitor.start()
    sched.load = monitor
    parent = config["parent"]

    async def watch_parent() -> None:
        while True:
            await asyncio.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)  # the node is gone: nothing left to serve

    watcher = loop.create_task(watch_parent())
    tcp = router.ports.endpoint if router.ports is not None else ""
    mesh.put(0, F.Hello(index, config["creation"], tcp))
    mesh.flush()
    try:
        await done
    finally:
        watcher.cancel()
        monitor.stop()
        mesh.close()
        if router.ports is not None:
            router.ports.close()
        set_current(None)


if __name__ == "__main__":
    main(sys.argv)
