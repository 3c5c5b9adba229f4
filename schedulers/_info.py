"""`process_info` of a local process, as a dict (used locally and for peers' requests)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["info_of"]


def info_of(proc: Any, me: Any = None, name_monitors: Any = None) -> dict[str, Any]:
    """Internal: the process_info dict of a live local process.

    `name_monitors` (the scheduler's ref -> (name, node) of monitors by name on other
    nodes) makes those read `("process", (name, node))`, as Erlang's process_info does.
    """
    if proc is me:
        status = "running"
    elif proc.reason is not None:
        status = "exiting"
    elif proc.suspended:  # set by the behaviours' suspend loops (sys_.suspend)
        status = "suspended"
    elif proc.waiter is not None or _blocked(proc.task):
        status = "waiting"
    else:
        status = "runnable"
    qlen = proc.queue_len()
    memory = 600 + (sys.getsizeof(proc.mbox) if proc.mbox is not None else 0) + 64 * qlen
    fn = proc.fn
    return {
        "status": status,
        "message_queue_len": qlen,
        "links": sorted(proc.links) if proc.links else [],
        "monitors": [
            ("process", _monitored(ref, p, name_monitors)) for ref, p in proc.monitors.items()
        ] if proc.monitors else [],
        "monitored_by": [w for w, _ in proc.watchers.values()] if proc.watchers else [],
        "registered_name": proc.name,
        "trap_exit": proc.trap_exit,
        "scheduler": proc.pid.scheduler,
        "node": proc.pid.node,
        "current_function": (
            _module_name(getattr(fn, "__module__", None)),
            getattr(fn, "__qualname__", repr(fn)),
        ),
        "reductions": proc.reductions,
        "memory": memory,
    }


def _module_name(module: Any) -> Any:
    """The module as the node's code names it: the main script, which a scheduler that is
    not the script's own OS process loads as "__mp_main__", reads "__main__" everywhere."""
    return "__main__" if module == "__mp_main__" else module


def _blocked(task: Any) -> bool:
    """True when `task` awaits a future that is not done yet (e.g. `asyncio.sleep`): it is
    off the run queue, as an Erlang process in a receive (`timer:sleep`) is."""
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


def _monitored(ref: Any, pid: Any, name_monitors: Any) -> Any:
    """What a monitor watches: its pid, or (name, node) for a monitor by name."""
    if name_monitors and ref in name_monitors:
        return name_monitors[ref]  # by name on another node
    target = getattr(pid, "_proc", None)  # by name here: its ident is kept with the watch
    entry = target.watchers.get(ref) if target is not None and target.watchers else None
    if entry is not None and type(entry[1]) is tuple:
        return entry[1]
    return pid
