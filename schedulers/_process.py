"""A green process and the hot paths that touch it: deliver, receive, self.

Where it sits: `pyotp.send(pid, msg)` → **deliver** (same scheduler: straight into the
mailbox, no copy) … `await pyotp.receive(...)` → **receive** (this module).

A process is an asyncio task plus a mailbox. The mailbox is a deque, made on the first message
that has to wait (an idle process that never queued anything carries none). A process blocked
in `receive` parks one waiter future and its compiled pattern on itself; `deliver` tests a new
message against that pattern and hands a match straight to the waiter, so a waiting receiver is
never woken for a message it does not want and never rescans its queue.

Receive marker (Erlang's call/reply optimisation): `make_ref` records the mailbox length; a
receive whose pattern holds that ref starts its scan there, since no older message can hold a
ref that did not exist when it arrived. Every removal from the queue keeps the mark right.
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from itertools import islice
from typing import Any, Callable

from transport import BadArg, Exit, NotInProcess, Pid, Ref, Timeout

from ._match import compile_patterns
from ._timers import EXPIRED, TimerWheel

__all__ = [
    "Process", "current", "current_process", "deliver", "deliver_many", "receive", "self_pid",
    "unpark",
]

log = logging.getLogger("pyotp.process")
_current: contextvars.ContextVar[Process] = contextvars.ContextVar("pyotp_process")
current = _current.get


class Process:
    """Internal: one green process. Users hold its `Pid`, never this object."""

    __slots__ = (
        "pid",
        "task",
        "mbox",
        "waiter",
        "matcher",
        "links",
        "monitors",
        "watchers",
        "trap_exit",
        "name",
        "reason",
        "reductions",
        "parent",
        "fn",
        "marker_ref",
        "marker_pos",
        "suspended",
        "info",
        "exit_raised",
    )

    def __init__(self, pid: Pid, parent: Pid | None, fn: Any) -> None:
        self.pid = pid
        self.task = None
        self.mbox: deque | None = None
        self.waiter = None
        self.matcher: Callable[[Any], bool] | None = None
        self.links: set[Pid] | None = None
        # refs of monitors this process holds -> monitored pid
        self.monitors: dict[Ref, Any] | None = None
        # refs of monitors on this process -> (watcher pid, identity in the DOWN message)
        self.watchers: dict[Ref, tuple[Pid, Any]] | None = None
        self.trap_exit = False
        self.name: str | None = None
        self.reason: Any = None  # None while alive, the exit reason once dead
        self.reductions = 0
        self.parent = parent
        self.fn = fn
        self.marker_ref: Ref | None = None
        self.marker_pos = 0
        self.suspended = False
        self.info: dict | None = None  # behaviour metadata (module, state hooks) for sys_/code
        self.exit_raised = False  # a receive after its death raised Exit (see _dead_end)

    def __repr__(self) -> str:
        return f"<Process {self.pid!r}>"

    def queue_len(self) -> int:
        return len(self.mbox) if self.mbox else 0

    def remove_at(self, i: int) -> Any:
        """Remove and return the i-th queued message, keeping the receive marker right."""
        mbox = self.mbox
        if i == 0:
            msg = mbox.popleft()
        else:
            msg = mbox[i]
            del mbox[i]
        if i < self.marker_pos:
            self.marker_pos -= 1
        return msg


def deliver(proc: Process, msg: Any) -> None:
    """Put `msg` in `proc`'s mailbox, or hand it straight to its waiting `receive`."""
    w = proc.waiter
    if w is not None:
        m = proc.matcher
        try:
            ok = m is None or m(msg)
        except Exception as exc:  # a raising predicate fails the receive, in the receiver
            proc.waiter = None
            _counts[0] -= 1
            if not w.done():
                w.set_exception(exc)
            ok = False
        if ok:
            proc.waiter = None
            _counts[0] -= 1
            if not w.done():
                w.set_result(msg)
                return
    mbox = proc.mbox
    if mbox is None:
        proc.mbox = deque((msg,))
    else:
        mbox.append(msg)


def current_process(what: str = "this call") -> Process:
    """Return the calling process, or raise NotInProcess."""
    proc = _current.get(None)
    if proc is None:
        raise NotInProcess(what)
    return proc


def self_pid() -> Pid:
    """Return the pid of the calling process.

    Raises:
        NotInProcess: called from plain code, outside a pyotp process.
    """
    proc = _current.get(None)
    if proc is None:
        raise NotInProcess("pyotp.self()")
    return proc.pid


# The scheduler's timer wheel (one per OS process); set when the scheduler starts.
wheel: TimerWheel | None = None

# [processes of this OS process parked in receive, not yet woken]: the others are running or
# ready to run (or await something else). Whoever clears a parked process's `waiter` to wake
# it takes it off this count (`unpark`). A process polls the sockets for a frame from another
# scheduler only when no other process could use the time (see Router.await_reply).
_counts = [0]


def waiting() -> int:
    """How many processes of this OS process are parked in `receive` now."""
    return _counts[0]


def unpark(proc: Process) -> None:
    """Clear `proc`'s waiter (the caller resolves or drops it): it is no longer parked."""
    if proc.waiter is not None:
        proc.waiter = None
        _counts[0] -= 1


# Set by the router of a scheduler with peers: called when a process has just parked in
# `receive`, so the frames it queued (a call's request, a reply) leave now, not at the end of
# the turn.
flush_hook: Callable[[], Any] | None = None


async def receive(*patterns: Any, timeout: float | None = None) -> Any:
    """Remove and return the oldest message matching any of `patterns` (any message if none).

    Other messages stay queued in order. `timeout` is in seconds (`None` waits forever,
    `0` polls).

    Raises:
        pyotp.Timeout: no matching message arrived in time.
        NotInProcess: called from plain code, outside a pyotp process.
        BadArg: `timeout` is not None or a non-negative number.
    """
    proc = _current.get(None)
    if proc is None:
        raise NotInProcess("pyotp.receive()")
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        raise BadArg(f"receive timeout must be None or seconds >= 0, got {timeout!r}")
    if patterns:
        return await receive_matching(proc, compile_patterns(patterns), timeout, patterns)
    mbox = proc.mbox
    if mbox and proc.reason is None:  # any message, one queued: no second coroutine
        proc.reductions += 1
        if proc.marker_pos:
            proc.marker_pos -= 1
        return mbox.popleft()
    return await receive_matching(proc, None, timeout, patterns)


def deliver_many(proc: Process, msgs: list) -> None:
    """`deliver` each of `msgs` in order; the ones after a wake-up are queued in one step."""
    if proc.waiter is not None:
        i = 0
        for msg in msgs:
            i += 1
            deliver(proc, msg)
            if proc.waiter is None:
                break
        else:
            return
        msgs = msgs[i:]
        if not msgs:
            return
    mbox = proc.mbox
    if mbox is None:
        proc.mbox = deque(msgs)
    else:
        mbox.extend(msgs)


async def receive_matching(
    proc: Process,
    matcher: Callable[[Any], bool] | None,
    timeout: float | None,
    patterns: tuple = (),
) -> Any:
    """Internal receive with a compiled matcher (behaviours call this directly)."""
    if proc.reason is not None:
        if not proc.exit_raised:
            # Dead already, e.g. a `finally` cleanup of a killed process: end it, as before.
            proc.exit_raised = True
            raise Exit(proc.reason)
        await _dead_end(proc)
    mbox = proc.mbox
    if mbox:
        if matcher is None:
            proc.reductions += 1
            if proc.marker_pos:
                proc.marker_pos -= 1
            return mbox.popleft()
        start = 0
        mref = proc.marker_ref
        if mref is not None and _holds_ref(patterns, mref):
            start = proc.marker_pos
        i = start
        for msg in islice(mbox, start, None):
            if matcher(msg):
                proc.reductions += 1
                return proc.remove_at(i)
            i += 1
    if timeout == 0:
        raise Timeout()
    fut = wheel.loop.create_future()  # the wheel's loop is this scheduler's
    proc.waiter = fut
    proc.matcher = matcher
    counts = _counts
    counts[0] += 1
    if flush_hook is not None:
        flush_hook()  # parked already: a match it receives meanwhile resolves `fut`
    if timeout is None:
        try:
            msg = await fut
        finally:
            if proc.waiter is fut:  # not woken by a message: a kill or a cancel
                proc.waiter = None
                counts[0] -= 1
    else:
        key = wheel.arm(timeout, fut)
        try:
            msg = await fut
        finally:
            wheel.cancel(key, fut)
            if proc.waiter is fut:  # the timer, a kill or a cancel
                proc.waiter = None
                counts[0] -= 1
        if msg is EXPIRED:
            raise Timeout()
    proc.reductions += 1
    return msg


async def _dead_end(proc: Process) -> None:
    """Park for good a process that is already dead yet called `receive` again.

    Its end was raised in it (a CancelledError, then Exit from the first `receive` after its
    death, so a cleanup in a `finally` still ends) and its code caught both and went on,
    e.g. a loop under a bare `except:`. Raising again would spin such a loop and freeze the
    scheduler; Erlang would not run it at all. So it never runs again: its links and monitors
    have fired, and at shutdown its task is abandoned (see Scheduler.shutdown).
    """
    log.warning(
        "process %r caught the exit that ended it (%r) and called receive again: it is "
        "dead and will not run again (do not swallow BaseException in a process)",
        proc.pid, proc.reason,
    )
    await wheel.loop.create_future()  # never resolved


def _holds_ref(patterns: tuple, ref: Ref) -> bool:
    """True when every pattern needs `ref` (itself or a top-level tuple element): only then
    can no message older than the ref match, and the scan may start at the marker."""
    if not patterns:
        return False
    for p in patterns:
        if type(p) is tuple:
            if not _tuple_holds(p, ref):
                return False
        elif p is not ref and (type(p) is not Ref or p != ref):
            return False
    return True


def _tuple_holds(p: tuple, ref: Ref) -> bool:
    for e in p:
        if e is ref or (type(e) is Ref and e == ref):
            return True
    return False
