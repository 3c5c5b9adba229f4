"""Multi-scheduler side of `scripts/bench`: one node of several scheduler OS processes.

Each workload is one half of a comparison the driver prints as a ratio (see `PAIRS` in
`scripts/bench`): CPU-bound jobs over 2 schedulers vs 1, a message stream across schedulers vs
inside one, a gen_server call across schedulers vs a raw pyzmq REQ/REP round trip between two
OS processes, and spawn on another scheduler vs a local spawn. Every function takes the
workload size and returns a result dict (see `_bench_worker`).

Functions spawned on scheduler 1 live at module level: the worker scheduler imports this
module by name (the scripts directory is on the `sys.path` it inherits).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq
from _bench_common import percentiles

import pyotp
from pyotp import ANY, gen_server, receive, send

__all__ = ["WORKLOADS", "count_primes"]

T = 60  # liveness deadline for every wait (seconds); never reached in a healthy run

# ------------------------------------------------------------------ CPU-bound jobs

# One job counts the primes in [_CPU_LO, _CPU_LO + _CPU_SPAN) by trial division: the same
# range every time, so every job costs the same (~10 ms here) and the split is even.
_CPU_LO = 1_000_000
_CPU_SPAN = 2_500


def count_primes(lo: int, hi: int) -> int:
    """Count the primes in [lo, hi) by trial division: pure-Python CPU work."""
    count = 0
    for n in range(max(lo, 2), hi):
        if n % 2 == 0:
            count += n == 2
            continue
        d = 3
        while d * d <= n:
            if n % d == 0:
                break
            d += 2
        else:
            count += 1
    return count


async def cpu_worker(parent: pyotp.Pid) -> None:
    """Run each job `(lo, hi)` it is sent; answer `("done", self, primes)`; end on "stop"."""
    me = pyotp.self()
    while True:
        job = await receive()
        if job == "stop":
            return
        send(parent, ("done", me, count_primes(job[0], job[1])))


def cpu(n: int, schedulers: int) -> dict[str, Any]:
    """n equal jobs split evenly over one worker per scheduler, all handed out at once."""

    async def main() -> float:
        me = pyotp.self()
        workers = [pyotp.spawn(cpu_worker, me, scheduler=k) for k in range(schedulers)]
        for w in workers:  # warm up: the worker scheduler imports this module on first spawn
            send(w, (2, 3))
        for _ in workers:
            await receive(("done", ANY, ANY), timeout=T)
        job = (_CPU_LO, _CPU_LO + _CPU_SPAN)
        t0 = time.perf_counter()
        # Remote workers first: their batch leaves before the local worker starts computing.
        for i in reversed(range(n)):
            send(workers[i % schedulers], job)
        for _ in range(n):
            await receive(("done", ANY, ANY), timeout=T)
        elapsed = time.perf_counter() - t0
        for w in workers:
            send(w, "stop")
        return elapsed

    return {"rate": n / pyotp.run(main, schedulers=schedulers), "schedulers": schedulers}


def _mp_job(_: int) -> int:
    return count_primes(_CPU_LO, _CPU_LO + _CPU_SPAN)


def cpu_pool(n: int, processes: int) -> dict[str, Any]:
    """The same jobs on a `multiprocessing` pool: what this machine's cores allow right now."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_mp_job, range(processes))  # warm up
        t0 = time.perf_counter()
        pool.map(_mp_job, range(n), chunksize=1)
        elapsed = time.perf_counter() - t0
    return {"rate": n / elapsed, "processes": processes}


def cpu1(n: int) -> dict[str, Any]:
    return cpu(n, 1)


def cpu2(n: int) -> dict[str, Any]:
    return cpu(n, 2)


# ------------------------------------------------------------------ streaming


async def stream_counter(parent: pyotp.Pid, n: int) -> None:
    """Count `n` messages, then tell `parent` ("counted", n)."""
    for _ in range(n):
        await receive()
    send(parent, ("counted", n))


async def ready(parent: pyotp.Pid) -> None:
    send(parent, "ready")


def stream(n: int, scheduler: int) -> dict[str, Any]:
    """Send n messages to a counter on `scheduler`, yielding every 1,000 so batches flush."""

    async def main() -> float:
        me = pyotp.self()
        if scheduler:  # warm up the worker scheduler (module import) before timing
            pyotp.spawn(ready, me, scheduler=scheduler)
            await receive("ready", timeout=T)
        counter = pyotp.spawn(stream_counter, me, n, scheduler=scheduler)
        t0 = time.perf_counter()
        for i in range(n):
            send(counter, ("m", i))
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await receive(("counted", ANY), timeout=T)
        return time.perf_counter() - t0

    return {"rate": n / pyotp.run(main, schedulers=1 + (scheduler > 0))}


def stream_local(n: int) -> dict[str, Any]:
    return stream(n, 0)


def stream_cross(n: int) -> dict[str, Any]:
    return stream(n, 1)


# ------------------------------------------------------------------ call / reply


class Echo(gen_server.GenServer):
    """Replies to every call with the request."""

    def init(self, arg: Any) -> Any:
        return ("ok", arg)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        return ("reply", req, state)


def call_cross(n: int) -> dict[str, Any]:
    """gen_server.call from scheduler 0 to an echo server on scheduler 1; per-call times."""

    async def main() -> tuple[list[int], float]:
        srv = await gen_server.start_link(Echo, None, scheduler=1)
        gcall = gen_server.call
        clock = time.perf_counter_ns
        for _ in range(n // 10):  # warm-up
            await gcall(srv, "ping", timeout=5)
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            t1 = clock()
            await gcall(srv, "ping", timeout=5)
            samples.append(clock() - t1)
        return samples, time.perf_counter() - t0

    samples, elapsed = pyotp.run(main, schedulers=2)
    result = percentiles(samples)
    result["calls_per_s"] = n / elapsed
    return result


_REP_SERVER = """
import sys, msgspec, zmq
enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
sock = zmq.Context.instance().socket(zmq.REP)
sock.bind(sys.argv[1])
while True:
    msg = dec.decode(sock.recv())
    sock.send(enc.encode(msg))
    if msg == "stop":
        break
sock.close(linger=1000)
"""


def reqrep_zmq(n: int) -> dict[str, Any]:
    """Raw pyzmq REQ/REP round trips (msgspec-encoded) to a REP socket in another OS process."""
    tmp = tempfile.mkdtemp(prefix="pyotp-bench-")
    try:
        return _reqrep(n, f"ipc://{tmp}/rep")
    finally:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)


def _reqrep(n: int, endpoint: str) -> dict[str, Any]:
    server = subprocess.Popen([sys.executable, "-c", _REP_SERVER, endpoint])
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    clock = time.perf_counter_ns
    samples = []
    try:
        for i in range(n + n // 10):
            if i == n // 10:
                t_start = time.perf_counter()  # after the warm-up tenth
            t0 = clock()
            sock.send(enc.encode(("$gen_call", i, "ping")))
            dec.decode(sock.recv())
            samples.append(clock() - t0)
        elapsed = time.perf_counter() - t_start
        sock.send(enc.encode("stop"))
        sock.recv()
    finally:
        sock.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = percentiles(samples[n // 10 :])
    result["calls_per_s"] = n / elapsed
    return result


# ------------------------------------------------------------------ spawn


async def noop() -> None:
    return None


def spawn_exit(n: int, scheduler: int) -> dict[str, Any]:
    """spawn_monitor a process that returns at once on `scheduler`, n times; collect n DOWNs."""

    async def main() -> float:
        me = pyotp.self()
        if scheduler:
            pyotp.spawn(ready, me, scheduler=scheduler)
            await receive("ready", timeout=T)
        spawn_monitor = pyotp.spawn_monitor
        opts = {"scheduler": scheduler} if scheduler else {}  # local: the plain fast path
        t0 = time.perf_counter()
        for i in range(n):
            spawn_monitor(noop, **opts)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the batch go out (and the DOWNs come in)
        for _ in range(n):
            await receive()  # the DOWNs: nothing else reaches this mailbox
        return time.perf_counter() - t0

    return {"rate": n / pyotp.run(main, schedulers=1 + (scheduler > 0))}


def spawn_local(n: int) -> dict[str, Any]:
    return spawn_exit(n, 0)


def spawn_cross(n: int) -> dict[str, Any]:
    return spawn_exit(n, 1)


def mp1(n: int) -> dict[str, Any]:
    return cpu_pool(n, 1)


def mp2(n: int) -> dict[str, Any]:
    return cpu_pool(n, 2)


# ------------------------------------------------------------------ across nodes (tcp loopback)

_HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def peer_serve() -> None:
    """The peer node's main: an Echo gen_server registered as "bench_echo", then "ready"."""
    await gen_server.start(Echo, None, name="bench_echo")
    print("ready", flush=True)
    await receive(("never",))


class _PeerNode:
    """A second node OS process (`python _bench_multi.py peer NAME COOKIE`), on loopback tcp."""

    def __init__(self, cookie: str) -> None:
        self.name = f"benchpeer{os.getpid()}@127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen(
            [sys.executable, str(_HERE / "_bench_multi.py"), "peer", self.name, cookie],
            stdout=subprocess.PIPE, text=True, cwd=str(_HERE),
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"peer node did not start (said {line!r})")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def _on_two_nodes(body: Any) -> Any:
    """Run `body(peer_name)` as the main of a node connected to a fresh peer node."""
    cookie = secrets.token_hex(16)
    peer = _PeerNode(cookie)
    try:

        async def main() -> Any:
            if not await pyotp.net.connect(peer.name):
                raise RuntimeError(f"could not connect to {peer.name}")
            return await body(peer.name)

        name = f"bench{os.getpid()}@127.0.0.1:{_free_port()}"
        return pyotp.run(main, name=name, cookie=cookie)
    finally:
        peer.stop()


def node_stream(n: int) -> dict[str, Any]:
    """The stream workload to a counter on another node (two node OS processes, tcp)."""

    async def body(peer: str) -> float:
        me = pyotp.self()
        pyotp.spawn(ready, me, node=peer)  # warm up: the peer imports this module first
        await receive("ready", timeout=T)
        counter = pyotp.spawn(stream_counter, me, n, node=peer)
        t0 = time.perf_counter()
        for i in range(n):
            send(counter, ("m", i))
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await receive(("counted", ANY), timeout=T)
        return time.perf_counter() - t0

    return {"rate": n / _on_two_nodes(body)}


def node_call(n: int) -> dict[str, Any]:
    """gen_server.call to an echo server on another node, in sequence: per-call times and
    calls/s (n calls after a 10 % warm-up)."""

    async def body(peer: str) -> tuple[list[int], float]:
        srv = await pyotp.rpc.call(peer, pyotp.whereis, "bench_echo", timeout=T)
        gcall = gen_server.call
        clock = time.perf_counter_ns
        for _ in range(n // 10):
            await gcall(srv, "ping", timeout=5)
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            t1 = clock()
            await gcall(srv, "ping", timeout=5)
            samples.append(clock() - t1)
        return samples, time.perf_counter() - t0

    samples, elapsed = _on_two_nodes(body)
    result = percentiles(samples)
    result["calls_per_s"] = n / elapsed
    return result


def reqrep_zmq_tcp(n: int) -> dict[str, Any]:
    """Raw pyzmq REQ/REP round trips over tcp loopback to a REP socket in another OS process."""
    return _reqrep(n, f"tcp://127.0.0.1:{_free_port()}")


WORKLOADS = {
    "cpu1": cpu1,
    "cpu2": cpu2,
    "mp1": mp1,
    "mp2": mp2,
    "stream_local": stream_local,
    "stream_cross": stream_cross,
    "call_cross": call_cross,
    "reqrep_zmq": reqrep_zmq,
    "spawn_local": spawn_local,
    "spawn_cross": spawn_cross,
    "node_stream": node_stream,
    "node_call": node_call,
    "reqrep_zmq_tcp": reqrep_zmq_tcp,
}

if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "peer":
    import logging

    logging.disable(logging.CRITICAL)
    pyotp.run(peer_serve, name=sys.argv[2], cookie=sys.argv[3])
