"""A CPU-bound Python service on every core: a pool of plain-`def` gen_servers, one per scheduler.

    pool (supervisor, one_for_one)
    ├── cpu_worker_0   gen_server on scheduler 0 (this OS process)
    ├── cpu_worker_1   gen_server on scheduler 1 (a second OS process)
    └── ...            one per scheduler: `pyotp.run(main, schedulers="auto")`

Each worker's `handle_call` is ordinary synchronous Python (counting primes by trial division):
the drop-in case. The client fans the jobs out through one feeder process per worker, spawned
`near=` its worker so each call stays on one scheduler and only the results cross. Prints the
jobs/s and which OS pids did the work.

Run: `python examples/cpu_pool.py [SCHEDULERS]` (default "auto": one per usable CPU).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pyotp
from pyotp import gen_server, supervisor

__all__ = ["Pool", "PrimeWorker", "count_primes", "feeder", "main", "usable_cpus"]

JOBS = 48
SPAN = 10_000  # numbers per job: ~50 ms of pure-Python work each here
FIRST = 2_000_000


def count_primes(lo: int, hi: int) -> int:
    """Count the primes in [lo, hi) by trial division: deliberately CPU-bound."""
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


class PrimeWorker(gen_server.GenServer):
    """call ("count", lo, hi) → (primes in [lo, hi), OS pid, scheduler index)."""

    def init(self, index: int) -> tuple:
        return ("ok", index)

    def handle_call(self, request: Any, from_: Any, index: int) -> tuple:
        _, lo, hi = request
        return ("reply", (count_primes(lo, hi), os.getpid(), pyotp.self().scheduler), index)


class Pool(supervisor.Supervisor):
    """One PrimeWorker per scheduler, each registered as cpu_worker_<k>; restarted if it dies."""

    def init(self, schedulers: int) -> tuple:
        flags = {"strategy": "one_for_one", "intensity": 5, "period": 10}
        children = [
            {
                "id": ("worker", k),
                "start": (gen_server.start_link, (PrimeWorker, k), {"name": f"cpu_worker_{k}"}),
                "scheduler": k,
            }
            for k in range(schedulers)
        ]
        return ("ok", (flags, children))


async def feeder(client: pyotp.Pid, worker: str, jobs: list) -> None:
    """Call `worker` with each job in turn; send each result to `client`."""
    for lo, hi in jobs:
        primes, os_pid, sched = await gen_server.call(worker, ("count", lo, hi), timeout=60)
        pyotp.send(client, ("result", primes, os_pid, sched))


async def main(schedulers: int) -> dict[str, Any]:
    """Start the pool, fan JOBS jobs out evenly, print and return jobs/s and who did them."""
    await supervisor.start_link(Pool, schedulers, name="cpu_pool")
    me = pyotp.self()
    jobs = [(FIRST + i * SPAN, FIRST + (i + 1) * SPAN) for i in range(JOBS)]
    t0 = time.perf_counter()
    for k in range(schedulers):
        worker = pyotp.whereis(f"cpu_worker_{k}")
        # Interleaved shares keep the (slowly growing) cost per range even across workers.
        pyotp.spawn(feeder, me, f"cpu_worker_{k}", jobs[k::schedulers], near=worker)
    primes = 0
    by_pid: dict[int, list] = {}
    for _ in jobs:
        _, n, os_pid, sched = await pyotp.receive(("result", int, int, int), timeout=120)
        primes += n
        by_pid.setdefault(os_pid, [sched, 0])[1] += 1
    seconds = time.perf_counter() - t0
    print(
        f"{JOBS} jobs on {schedulers} scheduler(s): {JOBS / seconds:.1f} jobs/s "
        f"({seconds:.2f} s); {primes:,} primes in [{FIRST:,}, {FIRST + JOBS * SPAN:,})"
    )
    for os_pid, (sched, count) in sorted(by_pid.items(), key=lambda kv: kv[1][0]):
        print(f"  OS pid {os_pid} (scheduler {sched}): {count} jobs")
    return {"jobs_per_s": JOBS / seconds, "primes": primes, "os_pids": sorted(by_pid)}


def usable_cpus() -> int:
    """What `schedulers="auto"` resolves to: the CPUs this OS process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


if __name__ == "__main__":  # the worker schedulers import this file too: guard the entry point
    arg = sys.argv[1] if len(sys.argv) > 1 else "auto"
    n = usable_cpus() if arg == "auto" else int(arg)
    pyotp.run(main, n, schedulers=arg if arg == "auto" else n)
