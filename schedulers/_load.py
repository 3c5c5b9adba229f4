"""Load of a scheduler: long steps (Erlang's long_schedule), loop lag, CPU, and placement.

Where it sits: each scheduler measures itself here and reports to its peers (router Load
frames); `spawn(placement="auto")` picks the least-loaded scheduler from those reports.

Long steps are caught without touching the hot path: a heartbeat callback on the loop stamps
the time every 10 ms, and a watchdog thread notices when the stamp goes stale — a process is
then computing without yielding. It is logged once per step, with its pid, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import msgspec
import psutil

from transport._frames import Load

__all__ = ["LoadMonitor", "SchedulerStatistics", "choose_scheduler"]

log = logging.getLogger("pyotp.scheduler")

_BEAT = 0.01
_REPORT = 0.25


class SchedulerStatistics(msgspec.Struct, frozen=True):
    """The load figures of one scheduler, as `pyotp.scheduler_statistics()` returns them."""

    index: int
    creation: int
    os_pid: int
    processes: int
    run_queue: int
    long_steps: int
    cpu: float
    lag: float


class LoadMonitor:
    """Internal: heartbeat, watchdog thread and periodic load reports of one scheduler."""

    def __init__(self, sched: Any, threshold: float = 0.1) -> None:
        self.sched = sched
        self.loop: asyncio.AbstractEventLoop = sched.loop
        self.threshold = threshold
        self.last_beat = time.monotonic()
        self.lag = 0.0
        self.cpu = 0.0
        self.os_process = psutil.Process()
        self.os_process.cpu_percent(None)
        self._reported_beat = -1
        self._warned: set = set()
        self._beats = 0
        self._stop = threading.Event()
        self._handle: Any = None
        self._report_handle: Any = None
        self._thread = threading.Thread(target=self._watch, name="pyotp-watchdog", daemon=True)

    def start(self) -> None:
        self._handle = self.loop.call_later(_BEAT, self._beat, time.monotonic() + _BEAT)
        self._report_handle = self.loop.call_later(_REPORT, self._report)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for h in (self._handle, self._report_handle):
            if h is not None:
                h.cancel()
        self._thread.join(timeout=1)

    def _beat(self, due: float) -> None:
        now = time.monotonic()
        # exponential average of how late the heartbeat ran: the loop's backlog
        self.lag = 0.8 * self.lag + 0.2 * max(0.0, now - due)
        self.last_beat = now
        self._beats += 1
        self._handle = self.loop.call_later(_BEAT, self._beat, now + _BEAT)

    def _watch(self) -> None:
        while not self._stop.wait(self.threshold / 4):
            stale = time.monotonic() - self.last_beat
            if stale > self.threshold and self._reported_beat != self._beats:
                self._reported_beat = self._beats
                self.sched.long_steps += 1
                pid = self._running_pid()
                # Warn once per process (a CPU-bound worker would otherwise flood the log);
                # every long step is still counted and logged at debug level. A step of no
                # process is the runtime's own (importing a spawn target's module, say):
                # counted, logged at debug level only.
                first = pid is not None and pid not in self._warned
                if first and len(self._warned) < 10_000:
                    self._warned.add(pid)
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "long_schedule: %s has run for more than %d ms without yielding "
                    "on scheduler %d",
                    f"process {pid}" if pid is not None else "scheduler work (no process)",
                    int(stale * 1000), self.sched.index,
                )

    def _running_pid(self) -> Any:
        try:
            task = asyncio.current_task(self.loop)
            frame = task.get_coro().cr_frame if task is not None else None
            proc = frame.f_locals.get("proc") if frame is not None else None
            return proc.pid if proc is not None else None
        except Exception:  # racing the loop thread: a best-effort name only
            return None

    def statistics(self) -> SchedulerStatistics:
        sched = self.sched
        return SchedulerStatistics(
            sched.index, sched.creation, self.os_process.pid, len(sched.procs),
            _run_queue(sched), sched.long_steps, self.cpu, self.lag,
        )

    def _report(self) -> None:
        self.cpu = self.os_process.cpu_percent(None)
        router = self.sched.router
        if router is not None:
            s = self.statistics()
            frame = Load(s.index, s.creation, s.processes, s.run_queue, s.long_steps, s.cpu,
                         s.lag)
            router.loads[s.index] = frame
            router.pending_spawns[s.index] = 0
            router.broadcast(frame)
        self._report_handle = self.loop.call_later(_REPORT, self._report)


def _run_queue(sched: Any) -> int:
    # Processes not parked in receive: ready to run or running. Sampled, bounded work.
    n = 0
    for i, proc in enumerate(sched.procs.values()):
        if i >= 10_000:
            return int(n * len(sched.procs) / 10_000)
        if proc.waiter is None:
            n += 1
    return n


def choose_scheduler(sched: Any) -> int:
    """Return the index of the least-loaded live scheduler (this one on ties)."""
    router = sched.router
    if router is None:
        return sched.index
    best, best_score = sched.index, None
    for index in sorted(router.creations, key=lambda i: i != sched.index):
        load = router.loads.get(index)
        pending = router.pending_spawns.get(index, 0)
        if load is None:
            score = pending
        else:
            busy = load.cpu / 100.0 + min(load.lag, 1.0) * 10
            score = load.runq + pending + busy * 2
        if best_score is None or score < best_score:
            best, best_score = index, score
    return best
