"""gen_statem: the generic state machine behaviour (Erlang/OTP's `gen_statem`).

Where it sits: user callbacks (a `GenStatem` subclass) → **gen_statem** (owns the loop) →
`pyotp._gen` (start with init ack, call, reply, stop) → process primitives → scheduler.

Design notes (the loop, in OTP's terms):
- Events come from two places: the *internal queue* (events inserted by `next_event`,
  postponed events retried after a state change, and zero-time timeouts) and the mailbox.
  The internal queue is always drained first, so an inserted event is handled before any
  message not yet received.
- A transition is applied in this order: replies are sent as the actions are read; the current
  event is postponed if asked; on a state change the postponed events go back to the front of
  the queue (oldest first) and the state timeout is cancelled; `next_event`s go in front of
  everything (first action first); then timeouts are (re)started, the last action of each
  timeout type winning, zero-time ones appended to the end of the queue.
- With `state_enter`, the enter call runs after the state is set and before the transition is
  applied; its actions join the transition's. It may not change state, postpone or insert
  events.
- The event timeout is cancelled by any event (received or queued, e.g. a zero-time timeout),
  and never started while events are queued (they would cancel it anyway). Timers are
  `send_after` messages carrying a token: a message or queued zero-time event whose token is no
  longer current is dropped, so a cancelled timer can never fire.
- A crash in a callback calls `terminate` with the `Crash` reason, logs one crash report on
  logger `pyotp.crash`, and ends the process with that reason. Breaking the behaviour's rules
  (a bad return or action, an undefined state function) does the same with OTP's error term
  as a plain tuple, e.g. `("bad_return_from_state_function", result)`.

System requests (`("$system", from_, req)`, for `stop` and `pyotp.sys_`): `("terminate",
reason)`; `"get_state"` replies `(state, data)`; `("replace_state", fn)` replies the new
`(state, data)` (or `("error", ("callback_failed", crash))` when `fn` raised, leaving the
state as it was); `"suspend"` / `"resume"` reply `"ok"` (a suspended machine handles only system
requests); `"get_status"` replies OTP's shape `("status", pid, ("module", "gen_statem"),
[{}, "running" | "suspended", parent, [], misc])`; `("code_change", module, old_vsn, extra)` replies
`"ok"` or `("error", reason)`.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections import deque
from typing import Any

from schedulers import current_process, get, receive_matching
from transport import BadArg, Crash, Exit, Pid

from . import _api, _debug, _gen

__all__ = ["GenStatem", "call", "cast", "reply", "start", "start_link", "stop"]

_crash_log = logging.getLogger("pyotp.crash")

_MODES = ("state_functions", "handle_event_function")
_TIMER_MSG = "$gen_statem_timeout"  # (tag, token, timeout type): a timer firing
_CANCEL = object()
_BAD_ACTION = "bad_action_from_state_function"
_BAD_ENTER_ACTION = "bad_state_enter_action_from_state_function"  # postpone, next_event


# --------------------------------------------------------------------------- callbacks


class GenStatem:
    """Base class of a state machine; subclass it and implement the callbacks.

    Client call → callback it triggers:
        `start` / `start_link`        → `init(args)` (then the "enter" call with state_enter)
        `call(dest, req)`             → event (("call", from_), req)
        `cast(dest, msg)`             → event ("cast", msg)
        a plain message `m`           → event ("info", m)
        a timeout action firing       → event ("timeout" | ("timeout", name) |
                                                "state_timeout", msg)
        `stop(dest, reason)`, parent EXIT (when trapping exits), a stop return, a crash
                                      → `terminate(reason, state, data)`
        `pyotp.code.upgrade`          → `code_change(old_vsn, state, data, extra)`

    An event is handled by the method named after the current state,
    `state(event_type, content, data)` with `callback_mode = "state_functions"`, or by
    `handle_event(event_type, content, state, data)` with `"handle_event_function"`. Add
    `"state_enter"` (a list, e.g. `["state_functions", "state_enter"]`) to get the call
    `("enter", old_state, data)` after every state change and on start (old = the state).

    `init` returns `("ok", state, data)`, `("ok", state, data, actions)`, `("stop", reason)`
    or `"ignore"`. State callbacks return `("next_state", s, d[, actions])`,
    `("keep_state", d[, actions])`, `"keep_state_and_data"`,
    `("keep_state_and_data", actions)`, `("repeat_state", d[, actions])`,
    `"repeat_state_and_data"`, `("repeat_state_and_data", actions)`, `"stop"`,
    `("stop", reason[, d])` or `("stop_and_reply", reason, replies[, d])`.

    Actions (one action or a list): `"postpone"`, `("reply", from_, r)`,
    `("next_event", type, content)`, `("state_timeout", t, msg)`, `("timeout", t, msg)`,
    `(("timeout", name), t, msg)`, `"hibernate"`. Times are seconds; `None`, `"infinity"` or
    `"cancel"` cancel the timer; `0` fires right after the events already queued;
    `(type, "update", msg)` changes the message of a running timer. Callbacks may be `def` or
    `async def`.
    """

    callback_mode: str | list[str] = "state_functions"

    def init(self, args: Any) -> Any:
        """Return the initial `("ok", state, data[, actions])`; override it."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement init(args)")

    def terminate(self, reason: Any, state: Any, data: Any) -> Any:
        """Clean up before the machine exits with `reason`; the default does nothing."""
        return None

    def code_change(self, old_vsn: Any, state: Any, data: Any, extra: Any) -> Any:
        """Return `("ok", state, data)` converted for the new code; the default keeps them."""
        return ("ok", state, data)


def _parse_mode(cls: Any) -> tuple[str, bool]:
    """Return (mode, state_enter) of `cls.callback_mode` (a str, a list, or a no-argument
    callable returning one); raise BadArg naming the class when it is none of these."""
    mode = getattr(cls, "callback_mode", None)
    if callable(mode):
        try:
            mode = mode()
        except Exception as e:  # e.g. a method wanting self: not the API's class attribute
            raise BadArg(
                f"{getattr(cls, '__qualname__', cls)!r}: callback_mode must be a class attribute "
                f"(a str or a list of str); calling it raised {e!r}"
            ) from None
    if type(mode) is str:
        items: list = [mode]
    elif type(mode) in (list, tuple):
        items = list(mode)
    else:
        items = []
    kinds = [m for m in items if m in _MODES]
    enter = "state_enter" in items
    if len(kinds) != 1 or len(kinds) + enter != len(items):
        raise BadArg(
            f"{getattr(cls, '__qualname__', cls)!r}: callback_mode must be 'state_functions' or "
            f"'handle_event_function', optionally in a list with 'state_enter'; got {mode!r}"
        )
    return kinds[0], enter


# --------------------------------------------------------------------------- API


async def start(
    module: type,
    args: Any = None,
    *,
    name: Any = None,
    timeout: float | None = None,
    spawn_opts: dict[str, Any] | None = None,
    **spawn_kw: Any,
) -> Pid | None:
    """Start a state machine running `module` (a `GenStatem` subclass), not linked.

    Args:
        module: the callback class; it is instantiated in the new process.
        args: passed to `init`.
        name: register the machine under this name (a str) before `init` runs.
        timeout: seconds to wait for `init` (None = forever).
        spawn_opts: options for `pyotp.spawn` (also accepted as keyword arguments).

    Returns:
        The pid, or None when `init` returned "ignore".

    Raises:
        StartError: `init` returned `("stop", reason)` or crashed (its reason), the name is
            taken (`("already_started", pid)`), or `init` did not finish in time ("timeout").
        BadArg: `module` is not a class with a valid `callback_mode`, or bad options.
    """
    return await _start(module, args, False, name, timeout, spawn_opts, spawn_kw)


async def start_link(
    module: type,
    args: Any = None,
    *,
    name: Any = None,
    timeout: float | None = None,
    spawn_opts: dict[str, Any] | None = None,
    **spawn_kw: Any,
) -> Pid | None:
    """Start a state machine linked to the caller; see `start` for arguments and errors."""
    return await _start(module, args, True, name, timeout, spawn_opts, spawn_kw)


async def _start(
    module: Any, args: Any, link: bool, name: Any, timeout: Any, spawn_opts: Any, spawn_kw: Any
) -> Pid | None:
    what = "gen_statem.start_link" if link else "gen_statem.start"
    if not isinstance(module, (type, GenStatem)):
        raise BadArg(f"{what} expects a GenStatem subclass (or instance), got {module!r}")
    _parse_mode(module)
    if spawn_opts is not None and type(spawn_opts) is not dict:
        raise BadArg(f"{what}: spawn_opts must be a dict, got {spawn_opts!r}")
    opts = {k: v for k, v in {**(spawn_opts or {}), **spawn_kw}.items() if v is not None}
    bad = set(opts) - {"scheduler", "node", "placement", "near", "trap_exit"}
    if bad:
        raise BadArg(f"{what}: unknown spawn options {sorted(bad)!r}")
    return await _gen.start(
        _statem_main,
        (module, args),
        link=link,
        name=name,
        timeout=timeout,
        spawn_opts=opts,
        what=what,
    )


async def call(dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """Send `request` as a `("call", from_)` event and wait for the reply.

    Args:
        dest: a pid, a registered name, or `(name, node)`.
        timeout: seconds to wait (None = forever); 5 s by default, as `gen_server.call`.

    Raises:
        CallTimeout: no reply in time (a late reply is dropped).
        CallExit: the machine is dead or unknown ("noproc"), or exited during the call
            (its exit reason).
    """
    return await _gen.call(dest, request, timeout, what="gen_statem.call")


def cast(dest: Any, msg: Any) -> None:
    """Send `msg` as a "cast" event without waiting; never raises for `dest` (as gen_server)."""
    _gen.cast_to(dest, ("$gen_cast", msg))


async def stop(dest: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the machine at `dest`: it calls `terminate(reason, ...)` and exits with `reason`.

    Raises:
        CallExit: "noproc" if there is no such process; its exit reason if it ended with
            another reason (e.g. `terminate` crashed).
        CallTimeout: it did not stop within `timeout` seconds.
    """
    await _gen.stop(dest, reason, timeout)


_MISSING = object()


def reply(from_: Any, value: Any = _MISSING) -> None:
    """Reply `value` to the caller `from_` (the `from_` of a `("call", from_)` event).

    Also accepts a reply action `("reply", from_, value)` or a list of them, as OTP's reply/1.

    Raises:
        BadArg: `from_` is not the `from_` of a call event.
    """
    if value is _MISSING:
        replies = from_ if type(from_) is list else [from_]
        for r in replies:
            if not (type(r) is tuple and len(r) == 3 and r[0] == "reply"):
                raise BadArg(f"gen_statem.reply expects ('reply', from_, value), got {r!r}")
            _gen.reply(r[1], r[2])
        return
    _gen.reply(from_, value)


# --------------------------------------------------------------------------- the machine


class _Stop(Exception):
    """Internal: a callback asked to stop; carries the reason."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason


class _Zero:
    """Internal: a queued zero-time timeout; fires only while its token is current."""

    __slots__ = ("key", "token")

    def __init__(self, key: Any, token: int) -> None:
        self.key = key
        self.token = token


def _timer_key(ttype: Any) -> Any:
    """The dict key of timeout type `ttype`: itself, or a hashable copy when its name is an
    unhashable term (a list, a dict), which OTP allows as a generic timeout's name.

    Raises:
        TypeError: `ttype` holds something that has no hashable form.
    """
    try:
        hash(ttype)
        return ttype
    except TypeError:
        key = ("$term", _frozen(ttype))
        hash(key)
        return key


def _frozen(term: Any) -> Any:
    t = type(term)
    if t is tuple:
        return tuple(_frozen(e) for e in term)
    if t is list:
        return ("$list", tuple(_frozen(e) for e in term))
    if t is dict:
        return ("$dict", frozenset((_frozen(k), _frozen(v)) for k, v in term.items()))
    return term


class _Opts:
    """Internal: what the actions of one transition asked for."""

    __slots__ = ("postpone", "next_events", "timeouts")

    def __init__(self) -> None:
        self.postpone = False
        self.next_events: list = []
        self.timeouts: list = []  # (type, time | _CANCEL | "update", msg), in action order


class _Error(Exception):
    """Internal: the machine broke OTP's rules (a bad return or action); ends it with `reason`.

    The exit reason is the plain Erlang-style tuple, e.g.
    `("bad_return_from_state_function", result)`, as OTP's error term without its stacktrace.
    """

    def __init__(self, reason: tuple) -> None:
        super().__init__(repr(reason))
        self.reason = reason


def _fail(reason: tuple) -> _Error:
    return _Error(reason)


def _is_from(f: Any) -> bool:
    return type(f) is tuple and len(f) == 2 and type(f[0]) is Pid


def _valid_event_type(t: Any) -> bool:
    if type(t) is str:
        return t in ("cast", "info", "timeout", "state_timeout", "internal")
    return (
        type(t) is tuple
        and len(t) == 2
        and ((t[0] == "call" and _is_from(t[1])) or t[0] == "timeout")
    )


def _normal(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (
        type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown"
    )


async def _invoke(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _statem_main(starter: _gen.Starter, module: Any, args: Any) -> None:
    proc = current_process("gen_statem")
    cls = module if isinstance(module, type) else type(module)
    try:
        mod = cls() if module is cls else module
        proc.info = {"behaviour": "gen_statem", "module": cls.__module__, "callback": mod}
        result = await _invoke(mod.init, args)
    except Exit as e:
        starter.fail(e.reason)
        raise
    except Exception as e:  # a crash in init fails the start with its Crash
        crash = Crash.from_exception(e)
        _crash_log.error(
            "gen_statem %r (%s) crashed in init:\n%s",
            proc.pid,
            cls.__qualname__,
            crash.traceback.rstrip(),
        )
        starter.fail(crash)
        raise Exit(crash) from None
    if result == "ignore":
        starter.ignore()
        return
    if type(result) is tuple and len(result) == 2 and result[0] == "stop":
        starter.fail(result[1])
        raise Exit(result[1])
    if not (type(result) is tuple and len(result) in (3, 4) and result[0] == "ok"):
        reason = ("bad_return_from_init", result)
        starter.fail(reason)
        raise Exit(reason)
    machine = _Machine(proc, cls, mod, result[1], result[2])
    starter.ok()
    await machine.run(result[3] if len(result) == 4 else None)


class _Machine:
    """Internal: the running state of one gen_statem process."""

    def __init__(self, proc: Any, cls: type, mod: Any, state: Any, data: Any) -> None:
        self.proc = proc
        self.cls = cls
        self.mod = mod
        self.mode, self.state_enter = _parse_mode(cls)
        self.state = state
        self.data = data
        self.queue: deque = deque()
        self.postponed: list = []
        # _timer_key(type) -> [token, timer ref | None, msg, type]
        self.timers: dict[Any, list] = {}
        self.token = 0
        self.suspended = False
        self.event: Any = None  # the event being handled, for crash reports
        self.dbg: Any = None  # sys_ statistics/trace; None costs one test per event

    # ------------------------------------------------------------------ the loop

    async def run(self, init_actions: Any) -> None:
        """Apply init's actions and enter call, then handle events until the machine stops."""
        await self._guard(self._init_transition(init_actions))
        proc = self.proc
        queue = self.queue
        # This loop *is* the state machine: queued events first, then the mailbox.
        while True:
            if queue and not self.suspended:
                item = queue.popleft()
                if type(item) is _Zero:
                    entry = self.timers.get(item.key)
                    if entry is None or entry[0] != item.token:
                        continue  # cancelled or restarted since it was queued
                    del self.timers[item.key]
                    event = (entry[3], entry[2])
                else:
                    event = item
            else:
                matcher = self._suspended_match if self.suspended else None
                msg = await receive_matching(proc, matcher, None)
                if self.dbg is not None:
                    self.dbg.msg_in(msg)
                event = await self._classify(msg)
                if event is None:
                    continue
            if "timeout" in self.timers:
                self._cancel_timer("timeout")  # any event, queued or received, cancels it
            self.event = event
            await self._guard(self._handle(event))
            if self.dbg is not None:
                self.dbg.new_state((self.state, self.data))

    def _suspended_match(self, m: Any) -> bool:
        return (
            type(m) is tuple
            and len(m) == 3
            and (m[0] == "$system" or (m[0] == "EXIT" and m[1] == self._parent()))
        )

    async def _guard(self, step: Any) -> None:
        # Every way out of a callback goes through terminate (unless the process is dead).
        try:
            await step
        except _Stop as s:
            await self._terminate(s.reason)
        except _Error as e:
            self._report(e.reason, repr(e.reason))
            await self._terminate(e.reason, logged=True)
        except Exit as e:
            if self.proc.reason is not None:
                raise
            await self._terminate(e.reason)
        except Exception as e:  # a crashing callback ends the machine
            crash = Crash.from_exception(e)
            self._report(crash, crash.traceback.rstrip())
            await self._terminate(crash, logged=True)

    async def _classify(self, msg: Any) -> Any:
        """Turn a mailbox message into an event, or handle it and return None."""
        if type(msg) is tuple and msg:
            tag = msg[0]
            n = len(msg)
            if tag == "$gen_call" and n == 3 and _is_from(msg[1]):
                return (("call", msg[1]), msg[2])
            if tag == "$gen_cast" and n == 2:
                return ("cast", msg[1])
            if tag == _TIMER_MSG and n == 3:
                entry = self.timers.get(msg[2])
                if entry is None or entry[0] != msg[1]:
                    return None  # a timer cancelled after it had fired
                del self.timers[msg[2]]
                return (entry[3], entry[2])
            if tag == "$system" and n == 3 and _is_from(msg[1]):
                await self._system(msg[1], msg[2])
                return None
            if tag == "EXIT" and n == 3 and msg[1] == self._parent() and self.proc.trap_exit:
                self.event = ("info", msg)
                await self._terminate(msg[2])
        return ("info", msg)

    # ------------------------------------------------------------------ callbacks

    async def _call_state(self, etype: Any, content: Any) -> Any:
        if self.mode == "handle_event_function":
            fn = getattr(self.mod, "handle_event", None)
            if fn is None:
                raise _fail(("undef_callback", (self.cls.__qualname__, "handle_event")))
            return await _invoke(fn, etype, content, self.state, self.data)
        state = self.state
        fn = getattr(self.mod, state, None) if type(state) is str else None
        if fn is None or not callable(fn):
            raise _fail(("undef_state_function", (self.cls.__qualname__, state, (etype, content))))
        return await _invoke(fn, etype, content, self.data)

    async def _handle(self, event: tuple) -> None:
        result = await self._call_state(event[0], event[1])
        kind, nstate, ndata, actions = self._parse(result)
        opts = _Opts()
        self._collect(actions, opts, False)
        old = self.state
        changed = nstate != old
        self.state = nstate
        self.data = ndata
        if self.state_enter and (changed or kind == "repeat"):
            await self._enter(old, opts)
        self._transition(event, changed, opts)

    async def _init_transition(self, actions: Any) -> None:
        opts = _Opts()
        self._collect(actions, opts, False, init=True)
        if self.state_enter:
            await self._enter(self.state, opts)
        self._transition(None, True, opts)

    async def _enter(self, old: Any, opts: _Opts) -> None:
        while True:
            self.event = ("enter", old)
            result = await self._call_state("enter", old)
            kind, nstate, ndata, actions = self._parse(result)
            if nstate != self.state:
                raise _fail(("bad_state_enter_return_from_state_function", result))
            self.data = ndata
            self._collect(actions, opts, True)
            if kind != "repeat":  # repeat_state from an enter call repeats the enter call
                return

    def _parse(self, result: Any) -> tuple:
        """Return (kind, state, data, actions) of a state callback's result; send stop replies."""
        state, data = self.state, self.data
        if type(result) is str:
            if result == "keep_state_and_data":
                return ("keep", state, data, None)
            if result == "repeat_state_and_data":
                return ("repeat", state, data, None)
            if result == "stop":
                raise _Stop("normal")
        elif type(result) is tuple and result:
            tag, n = result[0], len(result)
            if tag == "next_state" and n in (3, 4):
                return ("next", result[1], result[2], result[3] if n == 4 else None)
            if tag == "keep_state" and n in (2, 3):
                return ("keep", state, result[1], result[2] if n == 3 else None)
            if tag == "keep_state_and_data" and n == 2:
                return ("keep", state, data, result[1])
            if tag == "repeat_state" and n in (2, 3):
                return ("repeat", state, result[1], result[2] if n == 3 else None)
            if tag == "repeat_state_and_data" and n == 2:
                return ("repeat", state, data, result[1])
            if tag == "stop" and n in (2, 3):
                if n == 3:
                    self.data = result[2]
                raise _Stop(result[1])
            if tag == "stop_and_reply" and n in (3, 4):
                replies = result[2] if type(result[2]) is list else [result[2]]
                for r in replies:
                    if not (
                        type(r) is tuple and len(r) == 3 and r[0] == "reply" and _is_from(r[1])
                    ):
                        raise _fail(("bad_reply_action_from_state_function", r))
                for r in replies:
                    _gen.reply(r[1], r[2])
                if n == 4:
                    self.data = result[3]
                raise _Stop(result[1])
        raise _fail(("bad_return_from_state_function", result))

    def _collect(self, actions: Any, opts: _Opts, enter: bool, init: bool = False) -> None:
        """Read `actions` in order into `opts`; replies are sent right away.

        init's actions have no event to postpone: a postpone there is ignored (as in OTP).

        Raises:
            _Error: `(_BAD_ENTER_ACTION, a)` for a postpone or next_event in an enter call,
                `(_BAD_ACTION, a)` for any other bad action.
        """
        if actions is None:
            return
        for a in actions if type(actions) is list else [actions]:
            if type(a) is str:
                if a == "postpone":
                    if enter:
                        raise _fail((_BAD_ENTER_ACTION, a))
                    opts.postpone = not init
                    continue
                if a == "hibernate":
                    continue  # nothing to shrink: an idle green process holds no stack
                raise _fail((_BAD_ACTION, a))
            if type(a) in (int, float) and type(a) is not bool:
                self._add_timeout(opts, ("timeout", a, a))  # bare Time, as in OTP
                continue
            if type(a) is not tuple or not a:
                raise _fail((_BAD_ACTION, a))
            tag, n = a[0], len(a)
            if tag == "reply" and n == 3 and _is_from(a[1]):
                _gen.reply(a[1], a[2])
                if self.dbg is not None:
                    self.dbg.msg_out(a[2], a[1])
            elif tag == "postpone" and n == 2 and type(a[1]) is bool:
                if enter and a[1]:
                    raise _fail((_BAD_ENTER_ACTION, a))
                opts.postpone = a[1] and not init
            elif tag == "hibernate" and n == 2 and type(a[1]) is bool:
                pass
            elif tag == "next_event" and enter:
                raise _fail((_BAD_ENTER_ACTION, a))
            elif tag == "next_event" and n == 3 and _valid_event_type(a[1]):
                opts.next_events.append((a[1], a[2]))
            elif tag in ("timeout", "state_timeout") or (
                type(tag) is tuple and len(tag) == 2 and tag[0] == "timeout"
            ):
                self._add_timeout(opts, a)
            else:
                raise _fail((_BAD_ACTION, a))

    def _add_timeout(self, opts: _Opts, a: tuple) -> None:
        ttype, n = a[0], len(a)
        if type(ttype) is tuple:
            try:
                _timer_key(ttype)
            except TypeError:
                raise _fail((_BAD_ACTION, a)) from None
        if n == 2 and a[1] == "cancel":
            opts.timeouts.append((ttype, _CANCEL, None))
            return
        if n == 3 and a[1] == "update":
            opts.timeouts.append((ttype, "update", a[2]))
            return
        if n not in (3, 4):
            raise _fail((_BAD_ACTION, a))
        t = a[1]
        if t is None or t in ("infinity", "cancel"):
            opts.timeouts.append((ttype, _CANCEL, None))
            return
        if type(t) not in (int, float) or type(t) is bool:
            raise _fail((_BAD_ACTION, a))
        if n == 4:  # options: {"abs": True} or [("abs", True)]: t is a loop.time() instant
            o = a[3]
            absolute = (
                o.get("abs", False)
                if type(o) is dict
                else ("abs", True) in (o if type(o) is list else [o])
            )
            if absolute:
                t = max(0.0, t - get().loop.time())
        if t < 0:
            raise _fail((_BAD_ACTION, a))
        opts.timeouts.append((ttype, t, a[2]))

    # ------------------------------------------------------------------ transition, timers

    def _transition(self, event: Any, changed: bool, opts: _Opts) -> None:
        queue = self.queue
        if opts.postpone:
            self.postponed.append(event)
        if changed:
            if self.postponed:
                queue.extendleft(reversed(self.postponed))  # retried oldest first
                self.postponed = []
            self._cancel_timer("state_timeout")
        if opts.next_events:
            queue.extendleft(reversed(opts.next_events))  # first action handled first
        if opts.timeouts:
            self._start_timeouts(opts.timeouts)

    def _start_timeouts(self, timeouts: list) -> None:
        last: dict = {}
        for ttype, t, msg in timeouts:  # the last action of each type wins, in its place
            key = _timer_key(ttype)
            last.pop(key, None)
            last[key] = (ttype, t, msg)
        timers = self.timers
        for key, (ttype, when, msg) in last.items():
            t = when
            if t is _CANCEL:
                self._cancel_timer(key)
                continue
            if t == "update":
                entry = timers.get(key)
                if entry is not None:
                    entry[2] = msg
                    continue
                t = 0  # no such timer: as a zero-time timeout, as in OTP
            if key == "timeout" and self.queue:
                self._cancel_timer(key)
                continue  # a queued event would cancel it at once
            self._cancel_timer(key)
            self.token += 1
            token = self.token
            if t == 0:
                timers[key] = [token, None, msg, ttype]
                self.queue.append(_Zero(key, token))
            else:
                tref = _api.send_after(t, self.proc.pid, (_TIMER_MSG, token, key))
                timers[key] = [token, tref, msg, ttype]

    def _cancel_timer(self, key: Any) -> None:
        entry = self.timers.pop(key, None)
        if entry is not None and entry[1] is not None:
            _api.cancel_timer(entry[1])

    # ------------------------------------------------------------------ system, terminate

    async def _system(self, from_: Any, req: Any) -> None:
        if type(req) is tuple and len(req) == 2 and req[0] == "terminate":
            self.event = None
            await self._terminate(req[1])
        if req == "get_state":
            _gen.system_reply(from_, (self.state, self.data))
        elif type(req) is tuple and len(req) == 2 and req[0] == "replace_state":
            try:
                new = await _invoke(req[1], (self.state, self.data))
                if not (type(new) is tuple and len(new) == 2):
                    raise BadArg(f"replace_state fn must return (state, data), got {new!r}")
            except Exception as e:  # a bad fn leaves the machine as it was
                _gen.system_reply(from_, ("error", ("callback_failed", Crash.from_exception(e))))
                return
            self.state, self.data = new
            _gen.system_reply(from_, new)
        elif req == "suspend":
            self.suspended = self.proc.suspended = True  # process_info: "suspended"
            _gen.system_reply(from_, "ok")
        elif req == "resume":
            self.suspended = self.proc.suspended = False
            _gen.system_reply(from_, "ok")
        elif req == "get_status":
            _gen.system_reply(from_, self._status())
        elif type(req) is tuple and len(req) == 4 and req[0] == "code_change":
            _gen.system_reply(from_, await self._code_change(req[1], req[2], req[3]))
        elif type(req) is tuple and len(req) == 2 and req[0] == "debug":
            self.dbg, answer = _debug.request(self.proc, self.dbg, req[1], (self.state, self.data))
            _gen.system_reply(from_, answer)
        else:
            _gen.system_reply(from_, ("error", ("unknown_system_msg", req)))

    def _parent(self) -> Pid:
        # Started without a link: its own parent (as OTP), which is also whom node shutdown
        # names as the sender of its "shutdown" EXIT.
        return self.proc.parent or self.proc.pid

    def _status(self) -> tuple:
        # OTP's sys:get_status shape, as gen_server gives it.
        sys_state = "suspended" if self.suspended else "running"
        parent = self._parent()
        name = self.proc.name or self.proc.pid
        misc = [
            ("header", f"Status for state machine {name}"),
            (
                "data",
                [
                    ("Status", sys_state),
                    ("Parent", parent),
                    ("Logged Events", []),
                    ("Postponed", list(self.postponed)),
                ],
            ),
            (
                "data",
                [
                    ("State", (self.state, self.data)),
                    ("Callback mode", (self.mode, self.state_enter)),
                    ("Timeouts", [(e[3], e[2]) for e in self.timers.values()]),
                ],
            ),
        ]
        return (
            "status",
            self.proc.pid,
            ("module", "gen_statem"),
            [{}, sys_state, parent, [], misc],
        )

    async def _code_change(self, module: Any, old_vsn: Any, extra: Any) -> Any:
        # Pick up the class from the (reloaded) module by its qualified name; `module` is the
        # dotted name code.upgrade reloaded (this machine's class lives there).
        cls = self.cls
        new_cls: Any = sys.modules.get(cls.__module__)
        for part in cls.__qualname__.split("."):
            new_cls = getattr(new_cls, part, None)
        if not isinstance(new_cls, type):
            new_cls = cls
        try:
            mode = _parse_mode(new_cls)
            result = await _invoke(
                new_cls.code_change, self.mod, old_vsn, self.state, self.data, extra
            )
            if not (type(result) is tuple and len(result) == 3 and result[0] == "ok"):
                raise ValueError(f"code_change must return ('ok', state, data), got {result!r}")
        except Exception as e:  # a failed upgrade keeps the old code and state
            return ("error", Crash.from_exception(e))
        mod = self.mod
        if new_cls is not cls:
            try:
                mod.__class__ = new_cls  # keep the instance's attributes
            except TypeError:
                mod = new_cls()  # incompatible layout: a fresh instance of the new class
        self.cls, self.mod = new_cls, mod
        self.proc.info = {"behaviour": "gen_statem", "module": new_cls.__module__, "callback": mod}
        self.mode, self.state_enter = mode
        self.state, self.data = result[1], result[2]
        return "ok"

    def _report(self, reason: Any, text: str) -> None:
        _crash_log.error(
            "gen_statem %r (%s) terminating\n  last event: %r\n  state: %r\n  data: %r\n"
            "  reason: %s",
            self.proc.pid,
            self.cls.__qualname__,
            self.event,
            self.state,
            self.data,
            text,
        )

    async def _terminate(self, reason: Any, logged: bool = False) -> None:
        """Call `terminate`, then end the process with `reason` (never returns)."""
        for key in list(self.timers):
            self._cancel_timer(key)
        self.queue.clear()
        self.postponed = []
        try:
            await _invoke(self.mod.terminate, reason, self.state, self.data)
        except Exit as e:
            if self.proc.reason is not None:
                raise
            reason = e.reason
        except Exception as e:  # a crash in terminate becomes the exit reason
            crash = Crash.from_exception(e)
            self._report(crash, "in terminate: " + crash.traceback.rstrip())
            raise Exit(crash) from None
        if not logged and not _normal(reason):
            self._report(reason, repr(reason))
        raise Exit(reason)
