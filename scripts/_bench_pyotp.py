"""pyotp side of `scripts/bench`: each workload boots a node with `pyotp.run(main)`.

Every function takes the workload size and returns a result dict (see `_bench_worker`).
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from _bench_common import percentiles, rss_after_gc

import pyotp
from pyotp import ANY, make_ref, receive, send, spawn, spawn_monitor

__all__ = ["WORKLOADS", "call_label"]


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


gen_server = _optional("pyotp.gen_server")
supervisor = _optional("pyotp.supervisor")


def call_label() -> str:
    return "gen_server.call" if gen_server is not None else "raw make_ref/send/receive"


# ------------------------------------------------------------------ ping-pong


async def _pong() -> None:
    while True:
        msg = await receive()
        send(msg[1], "pong")


def pingpong(n: int) -> dict[str, Any]:
    async def main() -> float:
        me = pyotp.self()
        pong = spawn(_pong)
        t0 = time.perf_counter()
        for _ in range(n):
            send(pong, ("ping", me))
            await receive()
        return time.perf_counter() - t0

    return {"rate": n / pyotp.run(main)}


# ------------------------------------------------------------------ ring


async def _ring_node(main: Any) -> None:
    nxt = await receive()
    while True:
        hops = await receive()
        if hops == 0:
            send(main, "done")
        else:
            send(nxt, hops - 1)


def ring(n: int, size: int = 1000) -> dict[str, Any]:
    async def main() -> float:
        me = pyotp.self()
        nodes = [spawn(_ring_node, me) for _ in range(size)]
        for i, p in enumerate(nodes):
            send(p, nodes[(i + 1) % size])
        t0 = time.perf_counter()
        send(nodes[0], n)
        await receive()
        return time.perf_counter() - t0

    return {"rate": n / pyotp.run(main)}


# ------------------------------------------------------------------ spawn + exit


async def _noop() -> None:
    return None


def spawn_exit(n: int) -> dict[str, Any]:
    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            spawn_monitor(_noop)
        for _ in range(n):
            await receive()  # the DOWNs: nothing else reaches this mailbox
        return time.perf_counter() - t0

    return {"rate": n / pyotp.run(main)}


# ------------------------------------------------------------------ memory


async def _idle() -> None:
    await receive()


async def _ready(main: Any) -> None:
    send(main, "ready")


def memory(n: int) -> dict[str, Any]:
    async def main() -> float:
        me = pyotp.self()
        before = rss_after_gc()
        for _ in range(n):
            spawn(_idle)
        # Tasks start in spawn order, so when this one runs every idle one is parked.
        spawn(_ready, me)
        await receive()
        return (rss_after_gc() - before) / n

    return {"bytes": pyotp.run(main), "n": n}


# ------------------------------------------------------------------ call / reply


async def _raw_server() -> None:
    while True:
        frm, ref, req = await receive()
        send(frm, (ref, req))


def _echo_class() -> Any:
    class Echo(gen_server.GenServer):
        def init(self, arg: Any) -> Any:
            return ("ok", arg)

        def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
            return ("reply", req, state)

    return Echo


def call(n: int) -> dict[str, Any]:
    async def main() -> list[int]:
        samples = []
        clock = time.perf_counter_ns
        if gen_server is not None:
            srv = await gen_server.start_link(_echo_class(), None)
            gcall = gen_server.call
            for _ in range(n + n // 10):
                t0 = clock()
                await gcall(srv, "ping", timeout=5)
                samples.append(clock() - t0)
        else:
            me = pyotp.self()
            srv = spawn(_raw_server)
            for _ in range(n + n // 10):
                t0 = clock()
                ref = make_ref()
                send(srv, (me, ref, "ping"))
                await receive((ref, ANY))
                samples.append(clock() - t0)
        return samples[n // 10 :]  # the first tenth warms up

    result = percentiles(pyotp.run(main))
    result["label"] = call_label()
    return result


# ------------------------------------------------------------------ supervisor restart


def _restart_classes() -> tuple[Any, Any]:
    class Child(gen_server.GenServer):
        def init(self, bench: Any) -> Any:
            send(bench, ("started", pyotp.self()))
            return ("ok", None)

        def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
            return ("reply", req, state)

    class Sup(supervisor.Supervisor):
        def init(self, arg: Any) -> Any:
            bench, n = arg
            flags = {"strategy": "one_for_one", "intensity": 2 * n + 10, "period": 3600}
            child = {
                "id": "c",
                "start": (gen_server.start_link, (Child, bench), {}),
                "restart": "permanent",
                "shutdown": "brutal_kill",
                "type": "worker",
            }
            return ("ok", (flags, [child]))

    return Child, Sup


def restart(n: int) -> dict[str, Any]:
    if supervisor is None or gen_server is None:
        return {"skipped": "supervisor not available"}
    _, sup_cls = _restart_classes()

    async def main() -> list[int]:
        me = pyotp.self()
        await supervisor.start_link(sup_cls, (me, n))
        _, pid = await receive(("started", ANY))
        samples = []
        clock = time.perf_counter_ns
        for _ in range(n):
            t0 = clock()
            pyotp.exit(pid, "kill")
            _, pid = await receive(("started", ANY))
            await gen_server.call(pid, "ping", timeout=5)
            samples.append(clock() - t0)
        return samples

    return percentiles(pyotp.run(main))


WORKLOADS = {
    "pingpong": pingpong,
    "ring": ring,
    "spawn": spawn_exit,
    "memory": memory,
    "call": call,
    "restart": restart,
}
