"""Baseline side of `scripts/bench`: the same workloads on `_bench_baseline` (deque+Future).

Each workload runs in `asyncio.Runner(loop_factory=uvloop.new_event_loop)`, with the main
coroutine as an actor of its own so it receives exactly as a pyotp process does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import uvloop
from _bench_baseline import Actor, receive, send, spawn
from _bench_common import percentiles, rss_after_gc

__all__ = ["WORKLOADS"]


def _run(main: Callable[[Actor], Any]) -> Any:
    async def boot() -> Any:
        me = Actor()
        me.task = asyncio.current_task()
        return await main(me)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(boot())


async def _pong(me: Actor) -> None:
    while True:
        msg = await receive(me)
        send(msg[1], "pong")


def pingpong(n: int) -> dict[str, Any]:
    async def main(me: Actor) -> float:
        pong = spawn(_pong)
        t0 = time.perf_counter()
        for _ in range(n):
            send(pong, ("ping", me))
            await receive(me)
        return time.perf_counter() - t0

    return {"rate": n / _run(main)}


async def _ring_node(me: Actor, main: Actor) -> None:
    nxt = await receive(me)
    while True:
        hops = await receive(me)
        if hops == 0:
            send(main, "done")
        else:
            send(nxt, hops - 1)


def ring(n: int, size: int = 1000) -> dict[str, Any]:
    async def main(me: Actor) -> float:
        nodes = [spawn(_ring_node, me) for _ in range(size)]
        for i, p in enumerate(nodes):
            send(p, nodes[(i + 1) % size])
        t0 = time.perf_counter()
        send(nodes[0], n)
        await receive(me)
        return time.perf_counter() - t0

    return {"rate": n / _run(main)}


async def _noop(me: Actor) -> None:
    return None


def spawn_exit(n: int) -> dict[str, Any]:
    async def main(me: Actor) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            spawn(_noop, monitor=me)
        for _ in range(n):
            await receive(me)
        return time.perf_counter() - t0

    return {"rate": n / _run(main)}


async def _idle(me: Actor) -> None:
    await receive(me)


async def _ready(me: Actor, main: Actor) -> None:
    send(main, "ready")


def memory(n: int) -> dict[str, Any]:
    async def main(me: Actor) -> float:
        before = rss_after_gc()
        for _ in range(n):
            spawn(_idle)
        spawn(_ready, me)  # runs after every idle actor has parked (tasks start in order)
        await receive(me)
        return (rss_after_gc() - before) / n

    return {"bytes": _run(main), "n": n}


async def _server(me: Actor) -> None:
    while True:
        frm, ref, req = await receive(me)
        send(frm, (ref, req))


def call(n: int) -> dict[str, Any]:
    async def main(me: Actor) -> list[int]:
        srv = spawn(_server)
        samples = []
        clock = time.perf_counter_ns
        for ref in range(n + n // 10):
            t0 = clock()
            send(srv, (me, ref, "ping"))
            await receive(me)
            samples.append(clock() - t0)
        return samples[n // 10 :]

    result = percentiles(_run(main))
    result["label"] = "raw send/receive request-response"
    return result


def restart(n: int) -> dict[str, Any]:
    return {"skipped": "no supervisor in the baseline"}


WORKLOADS = {
    "pingpong": pingpong,
    "ring": ring,
    "spawn": spawn_exit,
    "memory": memory,
    "call": call,
    "restart": restart,
}
