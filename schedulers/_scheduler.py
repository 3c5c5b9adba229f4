"""The scheduler: one per OS process. This loop *is* the scheduler.

Where it sits: `pyotp` (spawn, link, monitor, exit, register, timers) → **scheduler** →
`deliver` into a mailbox, or (another scheduler or node) a frame to transport.

The uvloop event loop steps the green processes (asyncio tasks); this object owns what is
around them: the pid table, the node-wide name registry, links, monitors, exit signals, timers
and the crash reports. Signals are handled here, not by the target process, so a process
blocked in user code is still killed by `exit(pid, "kill")` at its next await.

Invariants:
- A process is dead the moment `terminate` runs: its pid no longer resolves, its name is
  freed before any linked or monitoring process hears of the exit, and its task is cancelled.
- Exit signals raised while handling an exit are queued and drained in order, never by
  recursion, so a chain of 100,000 linked processes dies without exhausting the stack.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections import deque
from typing import Any, Callable

from transport import BadArg, Crash, Exit, Pid, Ref

from . import _process
from ._process import Process, _current, deliver
from ._timers import TimerWheel

__all__ = ["Scheduler", "get", "set_current"]

crash_log = logging.getLogger("pyotp.crash")
log = logging.getLogger("pyotp.process")

_sched: Scheduler | None = None


def get() -> Scheduler | None:
    """Return this OS process's running scheduler, or None outside `pyotp.run`."""
    return _sched


def set_current(sched: Scheduler | None) -> None:
    global _sched
    _sched = sched


class Scheduler:
    """Internal: the scheduler of this OS process (one uvloop loop of green processes)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node: str = "nonode@nohost",
        index: int = 0,
        creation: int = 1,
    ) -> None:
        self.loop = loop
        self.node = node
        self.index = index
        self.creation = creation
        self.procs: dict[int, Process] = {}
        # node-wide registry cache: name -> pid (a local pid is the live one, with its process)
        self.names: dict[str, Pid] = {}
        # monitors by name on another node: ref -> (name, node). The watcher's `monitors`
        # holds a placeholder pid (the name is resolved over there); a DOWN made here when
        # that node is lost must still name (name, node), as Erlang's does.
        self.name_monitors: dict[Ref, tuple[str, str]] = {}
        # set when the node has other schedulers: frames to them go through it
        self.router: Any = None
        self.timers: dict[Ref, tuple[asyncio.TimerHandle, float]] = {}
        # timers of other schedulers this one sent a cancel for -> deadline (see cancel_timer)
        self.cancelled_elsewhere: dict[Ref, float] = {}
        self._prune_cancelled_at = 1024
        self.next_serial = 1
        self.next_ref = 1
        self._signals: deque = deque()
        self._draining = False
        self.long_steps = 0
        self.load: Any = None  # the LoadMonitor, once started
        _process.wheel = TimerWheel(loop)

    # ------------------------------------------------------------------ spawn

    def spawn(
        self,
        fn: Callable[..., Any],
        args: tuple,
        parent: Process | None,
        link: bool = False,
        monitor: bool = False,
        trap_exit: bool = False,
    ) -> Any:
        """Start a green process running `fn(*args)`; return its pid (and monitor ref)."""
        # Serials carry their origin scheduler in the low byte, so any scheduler can allocate
        # a pid for any other without a round trip and without collisions.
        serial = (self.next_serial << 8) | self.index
        self.next_serial += 1
        pid = Pid(self.node, self.index, serial, self.creation)
        proc = Process(pid, parent.pid if parent is not None else None, fn)
        proc.trap_exit = trap_exit
        pid._proc = proc
        self.procs[serial] = proc
        ref = None
        if link and parent is not None:
            proc.links = {parent.pid}
            if parent.links is None:
                parent.links = {pid}
            else:
                parent.links.add(pid)
        if monitor and parent is not None:
            ref = self.make_ref()
            self._add_monitor(parent, proc, ref, pid)
        proc.task = self.loop.create_task(self._run(proc, fn, args))
        if monitor:
            return pid, ref
        return pid

    def start_process(
        self, pid: Pid, fn: Any, args: tuple, parent: Pid | None, link: bool,
        monitor_ref: Ref | None, trap_exit: bool,
    ) -> None:
        """Start a process under a pid allocated elsewhere (a Spawn frame from a peer)."""
        proc = Process(pid, parent, fn)
        proc.trap_exit = trap_exit
        pid._proc = proc
        self.procs[pid.serial] = proc
        if link and parent is not None:
            proc.links = {parent}
        if monitor_ref is not None and parent is not None:
            proc.watchers = {monitor_ref: (parent, pid)}
        proc.task = self.loop.create_task(self._run(proc, fn, args))

    async def _run(self, proc: Process, fn: Callable[..., Any], args: tuple) -> Any:
        _current.set(proc)
        result = None
        try:
            result = fn(*args)
            if hasattr(result, "__await__"):
                result = await result
            reason: Any = "normal"
        except Exit as e:
            reason = e.reason
        except asyncio.CancelledError:
            if proc.reason is not None:
                return None  # killed by a signal: already terminated
            reason = "killed"
        except BaseException as e:
            if proc.reason is not None:
                return None
            reason = Crash.from_exception(e)
            crash_log.error(
                "crash report: process %r running %s exited with reason:\n%s",
                proc.pid,
                _fn_name(fn),
                reason.traceback.rstrip(),
            )
        if proc.reason is None:
            self.terminate(proc, reason, cancel=False)
        return result

    # ------------------------------------------------------------------ exits

    def terminate(self, proc: Process, reason: Any, cancel: bool = True) -> None:
        """Mark `proc` dead with `reason`; fire its links and monitors (see invariants).

        `cancel=False` only from the process's own runner, whose task is ending anyway.
        """
        if proc.reason is not None:
            return
        proc.reason = reason
        pid = proc.pid
        pid._proc = None
        self.procs.pop(pid.serial, None)
        if proc.name is not None:
            if self.names.get(proc.name) == pid:
                del self.names[proc.name]
            if self.router is not None:
                self.router.name_released(proc.name, pid)
        task = proc.task
        if cancel and task is not None and not task.done():
            task.cancel()  # also when proc is the running task: it stops at its next await
        proc.mbox = None
        _process.unpark(proc)
        router = self.router
        if proc.monitors:
            for ref, target in proc.monitors.items():
                if self.name_monitors:
                    self.name_monitors.pop(ref, None)
                t = target._proc
                if t is not None:
                    if t.watchers:
                        t.watchers.pop(ref, None)
                elif router is not None:
                    router.demonitor(target, ref)
            proc.monitors = None
        if proc.watchers:
            for ref, (watcher, ident) in proc.watchers.items():
                w = watcher._proc or self.lookup(watcher)
                if w is not None:
                    if w.monitors:
                        w.monitors.pop(ref, None)
                    deliver(w, ("DOWN", ref, "process", ident, reason))
                elif router is not None:
                    router.down(watcher, ref, ident, reason)
            proc.watchers = None
        if proc.links:
            for other in proc.links:
                self._signals.append((pid, other, reason, True))
            proc.links = None
            self._drain()

    def exit_signal(self, sender: Pid, target: Pid, reason: Any, linked: bool = False) -> None:
        """Send an exit signal from `sender` to `target` (Erlang's exit/2 or a link firing)."""
        self._signals.append((sender, target, reason, linked))
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            signals = self._signals
            while signals:
                sender, target, reason, linked = signals.popleft()
                proc = target._proc or self.lookup(target)
                if proc is None:
                    if self.router is not None and not self.is_local(target):
                        self.router.exit(sender, target, reason, linked)
                    continue
                if linked:
                    if proc.links is None or sender not in proc.links:
                        continue  # unlinked meanwhile
                    proc.links.discard(sender)
                self._handle_exit(proc, sender, reason, linked)
        finally:
            self._draining = False

    def _handle_exit(self, proc: Process, sender: Pid, reason: Any, linked: bool) -> None:
        if reason == "kill" and not linked:
            self.terminate(proc, "killed")
        elif proc.trap_exit:
            deliver(proc, ("EXIT", sender, reason))
        elif reason == "normal":
            if not linked and sender == proc.pid:
                self.terminate(proc, "normal")
        else:
            self.terminate(proc, reason)

    # ------------------------------------------------------------------ links, monitors

    def link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        other = pid._proc or self.lookup(pid)
        remote = other is None and self.router is not None and not self.is_local(pid)
        if remote and self.router.link(proc.pid, pid):
            if proc.links is None:
                proc.links = {pid}
            else:
                proc.links.add(pid)
            return
        if other is None:
            # Linking to a dead process: an exit signal "noproc" from it, as if it had died.
            if proc.trap_exit:
                deliver(proc, ("EXIT", pid, "noproc"))
                return
            raise Exit("noproc")
        if proc.links is None:
            proc.links = {pid}
        else:
            proc.links.add(pid)
        if other.links is None:
            other.links = {proc.pid}
        else:
            other.links.add(proc.pid)

    def unlink(self, proc: Process, pid: Pid) -> None:
        if proc.links:
            proc.links.discard(pid)
        other = pid._proc or self.lookup(pid)
        if other is not None:
            if other.links:
                other.links.discard(proc.pid)
        elif self.router is not None and not self.is_local(pid):
            self.router.unlink(proc.pid, pid)

    def _add_monitor(self, watcher: Process, target: Process, ref: Ref, ident: Any) -> None:
        if watcher.monitors is None:
            watcher.monitors = {ref: target.pid}
        else:
            watcher.monitors[ref] = target.pid
        if target.watchers is None:
            target.watchers = {ref: (watcher.pid, ident)}
        else:
            target.watchers[ref] = (watcher.pid, ident)

    def monitor(self, watcher: Process, target: Pid | str | tuple) -> Ref:
        ref = self.make_ref()
        if type(target) is Pid:
            pid: Pid | None = target
            ident: Any = target
        else:
            name = target if type(target) is str else target[0]
            node = self.node if type(target) is str else target[1]
            ident = (name, node)
            if node != self.node:
                if self.router is None or self.router.ports is None:
                    deliver(watcher, ("DOWN", ref, "process", ident, "noconnection"))
                    return ref
                # By name on another node: that node resolves it; DOWN names (name, node).
                placeholder = Pid(node, 0, 0, 0)
                self.name_monitors[ref] = ident
                if watcher.monitors is None:
                    watcher.monitors = {ref: placeholder}
                else:
                    watcher.monitors[ref] = placeholder
                self.router.monitor_name(watcher.pid, name, node, ref)
                return ref
            pid = self.names.get(name)
        proc = None if pid is None else (pid._proc or self.lookup(pid))
        if proc is not None:
            self._add_monitor(watcher, proc, ref, ident)
        elif pid is not None and self.router is not None and not self.is_local(pid):
            if watcher.monitors is None:
                watcher.monitors = {ref: pid}
            else:
                watcher.monitors[ref] = pid
            self.router.monitor(watcher.pid, pid, ref, ident)
        else:
            deliver(watcher, ("DOWN", ref, "process", ident, "noproc"))
        return ref

    def demonitor(self, watcher: Process, ref: Ref, flush: bool) -> bool:
        target = watcher.monitors.pop(ref, None) if watcher.monitors else None
        if target is not None:
            ident = self.name_monitors.pop(ref, None) if self.name_monitors else None
            if ident is not None and self.router is not None:
                # By name on another node: that node resolves the name again to drop it.
                self.router.demonitor_name(ident[0], ident[1], ref)
                target = None
        if target is not None:
            t = target._proc or self.lookup(target)
            if t is not None:
                if t.watchers:
                    t.watchers.pop(ref, None)
            elif self.router is not None:
                self.router.demonitor(target, ref)
        if flush and watcher.mbox:
            i = 0
            for msg in list(watcher.mbox):
                if type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN" and msg[1] == ref:
                    watcher.remove_at(i)
                else:
                    i += 1
        return True

    # ------------------------------------------------------------------ lookups

    def lookup(self, pid: Pid) -> Process | None:
        """Return the live local process of `pid`, or None."""
        if pid.scheduler != self.index or pid.creation != self.creation or pid.node != self.node:
            return None
        return self.procs.get(pid.serial)

    def is_local(self, pid: Pid) -> bool:
        """True when `pid` belongs to this scheduler (alive or not)."""
        return pid.scheduler == self.index and pid.node == self.node

    def resolve(self, dest: Any) -> Process | None:
        """Return the live local process for a pid or a registered name, else None."""
        if type(dest) is not Pid:
            dest = self.names.get(dest)
            if dest is None:
                return None
        return dest._proc or self.lookup(dest)

    def register(self, name: str, pid: Pid) -> None:
        """Register `name` on this scheduler alone (a one-scheduler node)."""
        if name in self.names:
            raise BadArg(f"register: the name {name!r} is already registered", "badarg")
        self.attach_name(name, pid)
        self.names[name] = self.resolve(pid).pid

    def attach_name(self, name: str, pid: Pid) -> None:
        """Give the local process `pid` its name, or raise BadArg why not."""
        proc = self.resolve(pid)
        if proc is None:
            raise BadArg(f"register: {pid!r} is not a live process", "badarg")
        if proc.name is not None:
            raise BadArg(f"register: {pid!r} already has the name {proc.name!r}", "badarg")
        proc.name = name

    def unregister(self, name: str) -> None:
        """Remove `name` on this scheduler alone (a one-scheduler node)."""
        pid = self.names.pop(name, None)
        if pid is None:
            raise BadArg(f"unregister: the name {name!r} is not registered", "badarg")
        proc = self.resolve(pid)
        if proc is not None and proc.name == name:
            proc.name = None

    # ------------------------------------------------------------------ refs, timers

    def make_ref(self) -> Ref:
        n = self.next_ref
        self.next_ref = n + 1
        return Ref(self.node, self.index, self.creation, n)

    def send_after(self, seconds: float, dest: Any, msg: Any, send: Callable) -> Ref:
        tref = self.make_ref()
        # uvloop's clock is CLOCK_MONOTONIC (in ms), as time.monotonic() is: the deadline
        # the ref carries reads the same in every OS process of the host.
        tref.deadline = deadline = time.monotonic() + seconds
        handle = self.loop.call_later(seconds, self._fire_timer, tref, dest, msg, send)
        self.timers[tref] = (handle, deadline)
        return tref

    def _fire_timer(self, tref: Ref, dest: Any, msg: Any, send: Callable) -> None:
        self.timers.pop(tref, None)
        try:
            send(dest, msg)
        except BadArg:
            pass  # a timer to a name nobody holds any more is dropped, as in Erlang

    def cancel_timer(self, tref: Ref) -> float | None:
        """Cancel a timer; return the seconds that were left, or None if it had fired.

        A timer lives on the scheduler that made it. For a timer of another scheduler of
        this node the cancel goes there as a frame, asynchronously (the call is plain, it
        cannot wait for an answer), and the time left is read from the deadline the ref
        carries. That leaves a small race, as Erlang's `cancel_timer(Ref, [{async, true}])`
        has: a timer whose deadline comes while the cancel is in flight (or while its
        scheduler is busy) may still fire although a time left was returned. A timer whose
        deadline has passed is not cancelled and None is returned, which stays true: it
        fires. A ref of another node (Erlang: not a local timer) gives None.
        """
        if tref.scheduler != self.index and tref.node == self.node:
            return self._cancel_elsewhere(tref)
        entry = self.timers.pop(tref, None)
        if entry is None:
            return None
        handle, deadline = entry
        handle.cancel()
        return max(0.0, deadline - time.monotonic())

    def _cancel_elsewhere(self, tref: Ref) -> float | None:
        deadline = tref.deadline
        if deadline is None or self.router is None or tref in self.cancelled_elsewhere:
            return None  # not a timer ref, or cancelled before (Erlang: false)
        left = deadline - time.monotonic()
        if left <= 0 or not self.router.cancel_timer(tref):
            return None
        cancelled = self.cancelled_elsewhere
        cancelled[tref] = deadline
        if len(cancelled) >= self._prune_cancelled_at:
            # Forget cancels whose deadline has passed: those timers read as fired anyway.
            now = time.monotonic()
            for ref in [r for r, d in cancelled.items() if d <= now]:
                del cancelled[ref]
            self._prune_cancelled_at = max(1024, 2 * len(cancelled))
        return left

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, grace: float = 5.0) -> None:
        """End every process: exit signal "shutdown" from its parent, then kill stragglers.

        Processes are signalled newest first, so children hear before their supervisors.
        """
        if not self.procs:
            # A parked process (see _process._dead_end) is no longer in procs: its task
            # must still be abandoned, or the loop's close waits for it forever.
            await self._abandon_stuck_tasks()
            return
        for proc in sorted(self.procs.values(), key=lambda p: -p.pid.serial):
            if proc.reason is None:
                sender = proc.parent or proc.pid
                if proc.trap_exit:
                    deliver(proc, ("EXIT", sender, "shutdown"))
                else:
                    self.terminate(proc, "shutdown")
        deadline = self.loop.time() + grace
        while self.procs and self.loop.time() < deadline:
            await asyncio.sleep(0.005)
        for proc in list(self.procs.values()):
            self.terminate(proc, "killed")
        for handle, _ in self.timers.values():
            handle.cancel()
        self.timers.clear()
        await asyncio.sleep(0)
        await self._abandon_stuck_tasks()

    async def _abandon_stuck_tasks(self, grace: float = 1.0) -> None:
        """Leave behind the tasks of dead processes still running `grace` s after the end:
        their code swallowed its end and went on (or its cleanup awaits for that long).

        Such a task never finishes (see _process._dead_end), and the event loop's close
        would cancel it, let it catch that too, and wait for it forever. It is taken off
        asyncio's task list and kept alive for good: finalizing its coroutine would run its
        code once more, after the loop is gone.
        """
        runner = Scheduler._run.__code__
        deadline = self.loop.time() + grace
        while True:
            stuck = [
                t for t in asyncio.all_tasks(self.loop)
                if not t.done() and getattr(t.get_coro(), "cr_code", None) is runner
            ]
            if not stuck or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)
        unregister = getattr(asyncio.tasks, "_unregister_task", None)
        for task in stuck:
            log.warning("abandoning %s: its process is dead but its code has not finished", task)
            task._log_destroy_pending = False
            if unregister is not None:  # CPython's; without it the loop's close waits on it
                unregister(task)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(task))


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
