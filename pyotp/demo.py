"""The bundled demo: `pyotp run pyotp.demo:main --schedulers auto`.

A small, self-contained job that shows the runtime at work in a few seconds:

    main ──▶ tally (gen_server, registered "demo_tally"): collects results
         └─▶ foreman (traps exits) ──links──▶ workers (spawned with placement="auto")
                 hands out jobs: count the primes in a range (CPU-bound)

One job is rigged to make its worker die. The foreman gets the worker's EXIT, starts a
replacement and hands the job out again, so the run still ends with every range counted:
let it fail, then heal. The summary is printed and returned.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pyotp
from pyotp import gen_server

__all__ = ["main"]

_JOBS = 24
_SPAN = 15_000
_SLICE = 500  # numbers a worker checks between two yields
_WORKERS = 8
_FAULTY_JOB = 5  # this job's first run kills its worker, to show the healing


def _count_primes(lo: int, hi: int) -> int:
    """Count primes in [lo, hi) by trial division: deliberately CPU-bound."""
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


class Tally(gen_server.GenServer):
    """Collects job results: cast `("result", job, primes)`, call `"summary"`."""

    def init(self, jobs: int) -> tuple:
        return ("ok", {"jobs": jobs, "done": {}, "waiting": None})

    def handle_cast(self, msg: Any, state: dict) -> tuple:
        _, job, primes = msg
        state["done"][job] = primes
        if state["waiting"] is not None and len(state["done"]) == state["jobs"]:
            gen_server.reply(state["waiting"], sum(state["done"].values()))
            state["waiting"] = None
        return ("noreply", state)

    def handle_call(self, request: Any, from_: Any, state: dict) -> tuple:
        if request == "total":  # replies once every job has reported
            if len(state["done"]) == state["jobs"]:
                return ("reply", sum(state["done"].values()), state)
            state["waiting"] = from_
            return ("noreply", state)
        return ("reply", ("error", "unknown_request"), state)


async def _worker(foreman: pyotp.Pid) -> None:
    """Ask the foreman for work until told to stop."""
    me = pyotp.self()
    while True:
        pyotp.send(foreman, ("ready", me))
        msg = await pyotp.receive(("job", int, bool), "stop")
        if msg == "stop":
            return
        _, job, faulty = msg
        if faulty:
            raise pyotp.Exit(("injected_fault", job))  # dies mid-job; the foreman heals it
        lo = job * _SPAN
        primes = 0
        for start in range(lo, lo + _SPAN, _SLICE):
            primes += _count_primes(start, min(start + _SLICE, lo + _SPAN))
            await asyncio.sleep(0)  # green processes share their scheduler: yield now and then
        gen_server.cast("demo_tally", ("result", job, primes))


async def _foreman(owner: pyotp.Pid, jobs: int, workers: int) -> None:
    """Start the workers, hand out jobs, replace workers that die; report to `owner`."""
    pyotp.process_flag("trap_exit", True)
    queue = [(job, job == _FAULTY_JOB) for job in range(jobs)]
    busy: dict[pyotp.Pid, int] = {}
    crew = {pyotp.spawn(_worker, pyotp.self(), link=True, placement="auto")
            for _ in range(workers)}
    restarts = 0
    handed = 0
    schedulers = {pid.scheduler for pid in crew}
    while crew:
        msg = await pyotp.receive()
        if msg[0] == "ready":
            pid = msg[1]
            busy.pop(pid, None)
            if queue:
                job, faulty = queue.pop(0)
                busy[pid] = job
                handed += 1
                pyotp.send(pid, ("job", job, faulty))
            else:
                pyotp.send(pid, "stop")
        elif msg[0] == "EXIT":
            _, pid, reason = msg
            crew.discard(pid)
            job = busy.pop(pid, None)
            if reason != "normal":
                if job is not None:
                    queue.insert(0, (job, False))  # hand the job out again, without the fault
                pid = pyotp.spawn(_worker, pyotp.self(), link=True, placement="auto")
                crew.add(pid)
                schedulers.add(pid.scheduler)
                restarts += 1
    pyotp.send(owner, ("foreman_done", handed, restarts, len(schedulers)))


async def main(jobs: int = _JOBS, workers: int = _WORKERS) -> dict[str, Any]:
    """Run the demo; print and return a summary.

    Returns:
        A dict with `jobs`, `primes` (the count below jobs * 15000), `worker_restarts`,
        `jobs_handed_out`, `schedulers_used` and `seconds`.
    """
    t0 = time.perf_counter()
    await gen_server.start_link(Tally, jobs, name="demo_tally")
    pyotp.spawn(_foreman, pyotp.self(), jobs, workers, link=True)
    _, handed, restarts, used = await pyotp.receive(("foreman_done", int, int, int), timeout=60)
    primes = await gen_server.call("demo_tally", "total", timeout=60)
    seconds = time.perf_counter() - t0
    summary = {
        "jobs": jobs,
        "primes": primes,
        "worker_restarts": restarts,
        "jobs_handed_out": handed,
        "schedulers_used": used,
        "seconds": round(seconds, 3),
    }
    print(f"pyotp demo on {pyotp.node()}: {workers} workers on {used} scheduler(s) counted "
          f"the primes below {jobs * _SPAN:,}: {primes:,}")
    print(f"  {handed} jobs handed out for {jobs} ranges; {restarts} worker crashed on purpose "
          f"and was replaced, its range redone")
    print(f"  done in {seconds:.2f} s")
    return summary
