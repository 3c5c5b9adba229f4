"""Baseline for `scripts/bench`: the plainest fast actor runtime on one uvloop loop.

One asyncio Task per actor, a `collections.deque` mailbox, and one waiter Future parked while
the actor waits. `send` hands a message straight to a waiting receiver (no queueing, no
wake-up for nothing) and otherwise appends it. There is no selective receive, no pid table,
no links, no names: this is the ceiling for in-process Python messaging that pyotp is
measured against (see /work/shared/PEERS.md). It is deliberately not tuned in pyotp's favour;
a monitor (one DOWN message to a watcher when the actor ends) is the only extra, because the
spawn workload needs a way to learn that an actor has exited.
"""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import count
from typing import Any, Callable

__all__ = ["Actor", "receive", "send", "spawn"]

_refs = count(1)
# The runtime's table of live actors: asyncio holds tasks only weakly, so without it an idle
# actor nobody references would be garbage-collected (a real runtime must keep it alive).
_live: set[Actor] = set()


class Actor:
    """An actor: its task, its mailbox, and the Future it waits on (if any)."""

    __slots__ = ("mbox", "task", "waiter")

    def __init__(self) -> None:
        self.mbox: deque = deque()
        self.waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None


def send(actor: Actor, msg: Any) -> None:
    """Deliver `msg`: straight to the waiting receiver, else to the end of the mailbox."""
    w = actor.waiter
    if w is not None:
        actor.waiter = None
        if not w.done():  # a cancelled receiver's Future must not be resolved
            w.set_result(msg)
            return
    actor.mbox.append(msg)


async def receive(actor: Actor) -> Any:
    """Remove and return the oldest message, waiting for one if the mailbox is empty."""
    mbox = actor.mbox
    if mbox:
        return mbox.popleft()
    fut = asyncio.get_running_loop().create_future()
    actor.waiter = fut
    return await fut


def spawn(fn: Callable[..., Any], *args: Any, monitor: Actor | None = None) -> Any:
    """Start `fn(actor, *args)` as a task; with `monitor=w` return `(actor, ref)`.

    A monitoring actor gets `("DOWN", ref, actor, reason)` when the new one ends.
    """
    actor = Actor()
    _live.add(actor)
    ref = next(_refs) if monitor is not None else None
    actor.task = asyncio.get_running_loop().create_task(_run(actor, fn, args, monitor, ref))
    return (actor, ref) if monitor is not None else actor


async def _run(actor: Actor, fn: Callable[..., Any], args: tuple, watcher: Any, ref: Any) -> None:
    reason: Any = "normal"
    try:
        await fn(actor, *args)
    except Exception as e:
        reason = e
    finally:
        _live.discard(actor)
        if watcher is not None:
            send(watcher, ("DOWN", ref, actor, reason))
