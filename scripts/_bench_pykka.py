"""Pykka side of `scripts/bench`: the same workloads on `pykka.ThreadingActor` (a thread each).

Memory is measured with fewer actors than the others (one OS thread per actor), and there is
no supervisor in Pykka, so the restart workload is skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pykka
from _bench_common import percentiles, rss_after_gc

__all__ = ["WORKLOADS"]


class _Actor(pykka.ThreadingActor):
    use_daemon_thread = True  # an idle actor left behind never keeps the worker alive


class _Pong(_Actor):
    def on_receive(self, message: Any) -> None:
        message[1].tell("pong")


class _Ping(_Actor):
    def __init__(self, pong: Any, n: int, done: threading.Event) -> None:
        super().__init__()
        self.pong, self.left, self.done = pong, n, done

    def on_receive(self, message: Any) -> None:
        if self.left == 0:
            self.done.set()
            return
        self.left -= 1
        self.pong.tell(("ping", self.actor_ref))


def pingpong(n: int) -> dict[str, Any]:
    done = threading.Event()
    ping = _Ping.start(_Pong.start(), n, done)
    t0 = time.perf_counter()
    ping.tell("go")
    done.wait()
    dt = time.perf_counter() - t0
    pykka.ActorRegistry.stop_all()
    return {"rate": n / dt}


class _RingNode(_Actor):
    def __init__(self, done: threading.Event) -> None:
        super().__init__()
        self.done, self.nxt = done, None

    def on_receive(self, message: Any) -> None:
        if type(message) is not int:
            self.nxt = message
        elif message == 0:
            self.done.set()
        else:
            self.nxt.tell(message - 1)


def ring(n: int, size: int = 1000) -> dict[str, Any]:
    done = threading.Event()
    nodes = [_RingNode.start(done) for _ in range(size)]
    for i, p in enumerate(nodes):
        p.tell(nodes[(i + 1) % size])
    t0 = time.perf_counter()
    nodes[0].tell(n)
    done.wait()
    dt = time.perf_counter() - t0
    pykka.ActorRegistry.stop_all()
    return {"rate": n / dt}


class _Noop(_Actor):
    def __init__(self, q: queue.SimpleQueue) -> None:
        super().__init__()
        self.q = q

    def on_stop(self) -> None:
        self.q.put(None)


def spawn_exit(n: int) -> dict[str, Any]:
    q: queue.SimpleQueue = queue.SimpleQueue()
    t0 = time.perf_counter()
    for _ in range(n):
        _Noop.start(q).stop(block=False)
    for _ in range(n):
        q.get()
    return {"rate": n / (time.perf_counter() - t0)}


class _Idle(_Actor):
    def __init__(self, started: queue.SimpleQueue) -> None:
        super().__init__()
        self.started = started

    def on_start(self) -> None:
        self.started.put(None)


def memory(n: int) -> dict[str, Any]:
    started: queue.SimpleQueue = queue.SimpleQueue()
    before = rss_after_gc()
    for _ in range(n):
        _Idle.start(started)
    for _ in range(n):
        started.get()  # every actor's thread is up and blocked on its inbox
    return {"bytes": (rss_after_gc() - before) / n, "n": n}


class _Echo(_Actor):
    def on_receive(self, message: Any) -> Any:
        return message


def call(n: int) -> dict[str, Any]:
    srv = _Echo.start()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n + n // 10):
        t0 = clock()
        srv.ask("ping")
        samples.append(clock() - t0)
    pykka.ActorRegistry.stop_all()
    result = percentiles(samples[n // 10 :])
    result["label"] = "ActorRef.ask"
    return result


def restart(n: int) -> dict[str, Any]:
    return {"skipped": "Pykka has no supervisor"}


WORKLOADS = {
    "pingpong": pingpong,
    "ring": ring,
    "spawn": spawn_exit,
    "memory": memory,
    "call": call,
    "restart": restart,
}
