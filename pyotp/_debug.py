"""Debug options of a behaviour process: `sys_.statistics` and `sys_.trace` (Erlang's
`sys` debug structure).

Where it sits: `pyotp.sys_.statistics/trace` → `("$system", from_, ("debug", opt))` → the
behaviour loop (gen_server, gen_statem, gen_event) → **_debug**.

A behaviour loop holds one `Debug` object, or None while no option is on: the loops test
`dbg is not None` once per message, so a process nobody traces pays nothing else. With an
option on, the loop reports three events: a message in, a reply out, a new state.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["Debug", "request"]

_log = logging.getLogger("pyotp.sys")

_UNSET = object()


class Debug:
    """Internal: the statistics and trace options of one behaviour process."""

    __slots__ = ("proc", "trace", "stats", "last")

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.trace = False
        self.stats: dict[str, Any] | None = None
        self.last: Any = _UNSET  # the last state seen, to report changes only

    def _name(self) -> str:
        return self.proc.name or repr(self.proc.pid)

    def msg_in(self, msg: Any) -> None:
        """A message was taken from the mailbox (system messages are not events)."""
        if type(msg) is tuple and msg:
            tag = msg[0]
            if tag == "$system":
                return
            if self.stats is not None:
                self.stats["messages_in"] += 1
            if self.trace:
                n = len(msg)
                if tag == "$gen_call" and n == 3 and type(msg[1]) is tuple and msg[1]:
                    _log.info("*DBG* %s got call %r from %r", self._name(), msg[2], msg[1][0])
                elif tag == "$gen_cast" and n == 2:
                    _log.info("*DBG* %s got cast %r", self._name(), msg[1])
                elif tag == "$gen_notify" and n == 2:
                    _log.info("*DBG* %s got event %r", self._name(), msg[1])
                else:
                    _log.info("*DBG* %s got %r", self._name(), msg)
            return
        if self.stats is not None:
            self.stats["messages_in"] += 1
        if self.trace:
            _log.info("*DBG* %s got %r", self._name(), msg)

    def msg_out(self, msg: Any, from_: Any) -> None:
        """A reply `msg` went to the caller of `from_`."""
        if self.stats is not None:
            self.stats["messages_out"] += 1
        if self.trace:
            to = from_[0] if type(from_) is tuple and from_ else from_
            _log.info("*DBG* %s sent %r to %r", self._name(), msg, to)

    def new_state(self, state: Any) -> None:
        """The loop is about to wait with `state`; report it if it changed."""
        last = self.last
        self.last = state
        if state is last or last is _UNSET:
            return
        try:
            same = bool(state == last)
        except Exception:  # a state whose == raises counts as changed
            same = False
        if not same and self.trace:
            _log.info("*DBG* %s new state %r", self._name(), state)


def request(proc: Any, dbg: Debug | None, opt: Any, state: Any) -> tuple[Debug | None, Any]:
    """Apply the debug request `opt` (("statistics", flag) or ("trace", flag)).

    `state` is the process's current state (the baseline for state-change events). Returns
    the new debug object (None when every option is off) and the reply: "ok", or for
    ("statistics", "get") ("ok", stats) / "no_statistics", or ("error", ...) for a bad
    request.
    """
    if not (type(opt) is tuple and len(opt) == 2 and opt[0] in ("statistics", "trace")):
        return dbg, ("error", ("unknown_debug_option", opt))
    kind, flag = opt
    if kind == "statistics" and flag == "get":
        if dbg is None or dbg.stats is None:
            return dbg, "no_statistics"
        s = dbg.stats
        return dbg, (
            "ok",
            {
                "start_time": s["start_time"],
                "current_time": time.time(),
                "reductions": proc.reductions - s["reductions0"],
                "messages_in": s["messages_in"],
                "messages_out": s["messages_out"],
            },
        )
    if type(flag) is not bool:
        return dbg, ("error", ("bad_debug_flag", opt))
    if dbg is None:
        dbg = Debug(proc)
    if kind == "statistics":
        dbg.stats = (
            {
                "start_time": time.time(),
                "reductions0": proc.reductions,
                "messages_in": 0,
                "messages_out": 0,
            }
            if flag
            else None
        )
    else:
        dbg.trace = flag
    dbg.last = state
    if dbg.stats is None and not dbg.trace:
        return None, "ok"
    return dbg, "ok"
