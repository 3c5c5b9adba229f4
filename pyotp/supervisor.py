"""supervisor: the supervisor behaviour (Erlang's `supervisor`), itself a gen_server.

Where it sits: user `Supervisor.init` → **supervisor** (an internal `GenServer` that traps
exits) → `pyotp.gen_server` → process primitives → scheduler.

The supervisor starts its children in order, links to each, and on an `("EXIT", child,
reason)` message applies the restart type (permanent / transient / temporary) and the
strategy (one_for_one, one_for_all, rest_for_one, simple_one_for_one). More than `intensity`
restarts within `period` seconds shut it down with reason "shutdown". Children are always
stopped in reverse start order; each by its `shutdown`: "brutal_kill" (exit "kill"), seconds
(exit "shutdown", wait that long, then "kill") or "infinity".

Invariants:
- A child is unlinked (and monitored) before the supervisor asks it to stop, so its death
  during a shutdown never reaches the restart logic as an EXIT.
- A failed restart is retried through a message to itself, each attempt counted as a
  restart, so a child that can never start ends in "reached max restart intensity" instead
  of a busy loop.

Reports (logger `pyotp.supervisor`): child_terminated, start_error, shutdown_error,
reached_max_restart_intensity at ERROR; child started at INFO.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections import deque
from typing import Any

from schedulers import current_process, get, receive_matching
from transport import BadArg, Crash, Exit, OtpError, Pid, StartError, Timeout

from . import _api, _config, gen_server, placement

__all__ = [
    "Supervisor",
    "check_childspecs",
    "count_children",
    "delete_child",
    "restart_child",
    "start",
    "start_child",
    "start_link",
    "stop",
    "terminate_child",
    "which_children",
]

_log = logging.getLogger("pyotp.supervisor")

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
_RESTARTS = ("permanent", "transient", "temporary")
_AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
_PLACEMENT_KEYS = ("scheduler", "node", "placement", "near")


class Supervisor:
    """Base class of a supervisor callback module; subclass it and implement `init`.

    Client call → what it triggers in the supervisor process:
        `start_link(Sup, arg)`          → `init(arg)`, then every child started in order
        `start_child(sup, spec)`        → the child's start function (appended last)
        `terminate_child(sup, id)`      → the child stopped by its `shutdown`
        `restart_child(sup, id)`        → the stopped child's start function again
        `delete_child(sup, id)`         → its spec removed
        `which_children` / `count_children` → read the children
        a child's exit                  → restart per restart type and strategy

    `init(arg)` returns `("ok", (flags, children))` or `"ignore"`. `flags` is a dict with
    `strategy` ("one_for_one" default), `intensity` (1), `period` (5 s) and `auto_shutdown`
    ("never"); `children` a list of child spec dicts:
        id           any term naming the child (required)
        start        (fn, args) or (fn, args, kwargs) (required); fn may be async or plain and
                     returns the child's pid (linked to the caller), None for "ignore", or
                     raises StartError
        restart      "permanent" (default) | "transient" | "temporary"
        shutdown     "brutal_kill" | seconds (5.0 for a worker) | "infinity" (a supervisor)
        type         "worker" (default) | "supervisor"
        modules      list of module names, or "dynamic"
        significant  bool (only transient/temporary children, with auto_shutdown)
        scheduler, node, placement, near   passed to fn when it accepts them
    """

    def init(self, arg: Any) -> Any:
        """Return ("ok", (flags, children)) or "ignore"."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement init(arg)")


# ===================================================================== client API


async def start_link(
    sup: type[Supervisor] | Supervisor,
    arg: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    **spawn_opts: Any,
) -> Pid | None:
    """Start a supervisor linked to the caller; it runs `init(arg)` and starts its children.

    Returns:
        The supervisor's pid, or None when `init` returned "ignore".

    Raises:
        StartError: ("already_started", pid); ("supervisor_data", why) for bad flags;
            ("start_spec", why) for a bad child spec; ("bad_return", (module, "init", value));
            ("shutdown", ("failed_to_start_child", id, reason)) when a child failed to start.
        BadArg: `sup` is not a Supervisor subclass or instance.
    """
    _check_sup(sup, "supervisor.start_link")
    return await gen_server.start_link(
        _SupServer, (sup, arg), name=name, timeout=timeout, **spawn_opts
    )


async def start(
    sup: type[Supervisor] | Supervisor,
    arg: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    **spawn_opts: Any,
) -> Pid | None:
    """Start a supervisor without a link to the caller (as `gen_server.start`); otherwise
    as `start_link`, with the same return value and errors."""
    _check_sup(sup, "supervisor.start")
    return await gen_server.start(
        _SupServer, (sup, arg), name=name, timeout=timeout, **spawn_opts
    )


async def stop(sup: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the supervisor at `sup` (as `gen_server.stop`): its children stop first, in
    reverse start order.

    Raises:
        CallExit: "noproc" when there is no such supervisor; its exit reason otherwise.
        CallTimeout: it did not stop within `timeout` seconds.
    """
    await gen_server.stop(sup, reason, timeout)


def _check_sup(sup: Any, what: str) -> None:
    if not ((isinstance(sup, type) and issubclass(sup, Supervisor)) or isinstance(sup, Supervisor)):
        raise BadArg(f"{what} expects a Supervisor subclass or instance, got {sup!r}")


async def _request(sup: Any, request: Any, timeout: float | None) -> Any:
    r = await gen_server.call(sup, request, timeout)
    if r[0] == "ok":
        return r[1]
    raise OtpError(r[1], r[2])


async def start_child(
    sup: Any, spec_or_args: dict[str, Any] | list[Any], timeout: float | None = None
) -> Pid | None:
    """Add and start a child: a child spec dict, or for simple_one_for_one a list of extra
    args appended to the spec's args.

    Returns:
        The child's pid, or None when its start function returned "ignore".

    Raises:
        OtpError: ("already_started", pid), "already_present", a bad spec
            (e.g. ("invalid_restart_type", x)), or the start function's failure reason.
        CallExit: the supervisor is not running.
    """
    return await _request(sup, ("start_child", spec_or_args), timeout)


async def terminate_child(sup: Any, child_id: Any, timeout: float | None = None) -> None:
    """Stop a child by its `shutdown`; its spec stays (unless temporary or dynamic).

    For simple_one_for_one, `child_id` is the child's pid; a dead pid is fine (nothing to do).

    Raises:
        OtpError: "not_found" (for simple_one_for_one: a live pid that is not a child);
            "simple_one_for_one" for a non-pid id on such a supervisor.
    """
    await _request(sup, ("terminate_child", child_id), timeout)


async def restart_child(sup: Any, child_id: Any, timeout: float | None = None) -> Pid | None:
    """Start again a child that was stopped with `terminate_child`.

    Returns:
        The new pid, or None when its start function returned "ignore".

    Raises:
        OtpError: "running", "restarting", "not_found", "simple_one_for_one", or the start
            function's failure reason.
    """
    return await _request(sup, ("restart_child", child_id), timeout)


async def delete_child(sup: Any, child_id: Any, timeout: float | None = None) -> None:
    """Remove the spec of a stopped child.

    Raises:
        OtpError: "running", "restarting", "not_found", "simple_one_for_one".
    """
    await _request(sup, ("delete_child", child_id), timeout)


async def which_children(sup: Any, timeout: float | None = None) -> list[tuple]:
    """Return `(id, pid | "restarting" | None, type, modules)` per child, newest first.

    A simple_one_for_one supervisor's children have id None.
    """
    return await _request(sup, "which_children", timeout)


async def count_children(sup: Any, timeout: float | None = None) -> dict[str, int]:
    """Return `{"specs", "active", "supervisors", "workers"}` counts."""
    return await _request(sup, "count_children", timeout)


def check_childspecs(specs: list[dict[str, Any]], auto_shutdown: str | None = None) -> None:
    """Check a list of child specs; return None when they are all valid.

    Raises:
        OtpError: the first problem found, with Erlang's reason (e.g. "missing_id",
            ("duplicate_child_name", id), ("invalid_shutdown", x), ("bad_combination", ...)).
        NotInProcess: called from plain code, outside `pyotp.run` (as every public call).
    """
    current_process("supervisor.check_childspecs()")
    if type(specs) is not list:
        raise OtpError(
            ("badarg", specs), f"check_childspecs expects a list of specs, got {specs!r}"
        )
    if auto_shutdown is not None and auto_shutdown not in _AUTO_SHUTDOWN:
        raise OtpError(
            ("invalid_auto_shutdown", auto_shutdown),
            f"auto_shutdown must be one of {_AUTO_SHUTDOWN}, got {auto_shutdown!r}",
        )
    _parse_specs(specs, auto_shutdown)


# ===================================================================== child specs


class _Child:
    """Internal: one child spec and the pid it runs as (None, a Pid, or "restarting")."""

    __slots__ = (
        "args",
        "fn",
        "id",
        "kwargs",
        "modules",
        "pid",
        "restart",
        "shutdown",
        "significant",
        "type",
    )

    def __init__(self) -> None:
        self.pid: Any = None

    def started_with(self, extra: tuple) -> _Child:
        c = _Child()
        for k in _Child.__slots__:
            setattr(c, k, getattr(self, k))
        c.args = self.args + extra
        c.pid = None
        return c


def _spec_error(reason: Any, message: str) -> OtpError:
    return OtpError(reason, f"bad child spec: {message}")


def _parse_spec(spec: Any, auto_shutdown: str | None) -> _Child:
    """Validate one child spec dict; raise OtpError with Erlang's reason when it is bad."""
    if type(spec) is not dict:
        raise _spec_error(("invalid_child_spec", spec), f"expected a dict, got {spec!r}")
    if "id" not in spec:
        raise _spec_error("missing_id", f"{spec!r} has no 'id'")
    if "start" not in spec:
        raise _spec_error("missing_start", f"child {spec['id']!r} has no 'start'")
    c = _Child()
    c.id = spec["id"]
    start = spec["start"]
    if not (
        type(start) in (tuple, list)
        and len(start) in (2, 3)
        and callable(start[0])
        and type(start[1]) in (tuple, list)
        and (len(start) == 2 or type(start[2]) is dict)
    ):
        raise _spec_error(
            ("invalid_mfa", start),
            f"child {c.id!r}: 'start' must be (fn, args) or (fn, args, kwargs), got {start!r}",
        )
    c.fn = start[0]
    c.args = tuple(start[1])
    c.kwargs = dict(start[2]) if len(start) == 3 else {}
    c.restart = spec.get("restart", "permanent")
    if c.restart not in _RESTARTS:
        raise _spec_error(
            ("invalid_restart_type", c.restart),
            f"child {c.id!r}: restart must be one of {_RESTARTS}, got {c.restart!r}",
        )
    c.type = spec.get("type", "worker")
    if c.type not in ("worker", "supervisor"):
        raise _spec_error(
            ("invalid_child_type", c.type),
            f"child {c.id!r}: type must be 'worker' or 'supervisor', got {c.type!r}",
        )
    c.shutdown = spec.get("shutdown", 5.0 if c.type == "worker" else "infinity")
    sd = c.shutdown
    if not (
        sd in ("brutal_kill", "infinity")
        if type(sd) is str
        else type(sd) in (int, float) and sd >= 0
    ):
        raise _spec_error(
            ("invalid_shutdown", sd),
            f"child {c.id!r}: shutdown must be 'brutal_kill', 'infinity' or seconds >= 0, "
            f"got {sd!r}",
        )
    c.modules = _parse_modules(spec.get("modules"), c)
    sig = spec.get("significant", False)
    if type(sig) is not bool:
        raise _spec_error(
            ("invalid_significant", sig), f"child {c.id!r}: significant must be a bool"
        )
    if sig and c.restart == "permanent":
        raise _spec_error(
            ("bad_combination", [("restart", "permanent"), ("significant", True)]),
            f"child {c.id!r}: a permanent child cannot be significant",
        )
    if sig and auto_shutdown == "never":
        raise _spec_error(
            ("bad_combination", [("auto_shutdown", "never"), ("significant", True)]),
            f"child {c.id!r}: significant needs auto_shutdown 'any_significant' or "
            "'all_significant'",
        )
    c.significant = sig
    opts = {k: spec[k] for k in _PLACEMENT_KEYS if spec.get(k) is not None}
    _check_placement(opts, c)
    if opts and _accepts(c.fn, opts):
        c.kwargs = {**c.kwargs, **opts}
    return c


def _check_placement(opts: dict[str, Any], c: _Child) -> None:
    """The spawn options of a spec have the types `pyotp.spawn` takes (checked here, so a bad
    spec is refused with its reason instead of every start failing with "badarg")."""
    for key, value, ok, want in (
        ("scheduler", opts.get("scheduler"),
         lambda v: type(v) is int and v >= 0, "an int index >= 0"),
        ("node", opts.get("node"), lambda v: type(v) is str and v, "a node name str"),
        ("near", opts.get("near"), lambda v: type(v) is Pid, "a pyotp.Pid"),
        ("placement", opts.get("placement"),
         lambda v: v == "auto" or type(v) is placement.Spec, "'auto' or a placement.Spec"),
    ):
        if value is not None and not ok(value):
            raise _spec_error(
                (f"invalid_{key}", value), f"child {c.id!r}: {key} must be {want}, got {value!r}"
            )


def _parse_modules(mods: Any, c: _Child) -> Any:
    """A spec's modules: "dynamic" or a list of str (default: the start function's module).

    Raises:
        OtpError: ("invalid_modules", mods) when not a list; ("invalid_module", m) for the
            first element of the list that is not a str.
    """
    if mods is None:
        return _default_modules(c.fn, c.args)
    if mods == "dynamic":
        return mods
    if type(mods) is not list:
        raise _spec_error(
            ("invalid_modules", mods),
            f"child {c.id!r}: modules must be a list of str or 'dynamic', got {mods!r}",
        )
    for m in mods:
        if type(m) is not str:
            raise _spec_error(
                ("invalid_module", m), f"child {c.id!r}: a module name is a str, got {m!r}"
            )
    return mods


def _parse_specs(specs: list, auto_shutdown: str | None) -> list[_Child]:
    children: list[_Child] = []
    seen: list[Any] = []
    for spec in specs:
        c = _parse_spec(spec, auto_shutdown)
        if c.id in seen:
            raise _spec_error(("duplicate_child_name", c.id), f"two children have id {c.id!r}")
        seen.append(c.id)
        children.append(c)
    return children


def _default_modules(fn: Any, args: tuple) -> list[str]:
    # OTP's default is the module of the start MFA; here the callback class when the start
    # function is a behaviour's start_link(Class, ...), else the function's module.
    if args and isinstance(args[0], type):
        return [f"{args[0].__module__}.{args[0].__qualname__}"]
    return [getattr(fn, "__module__", None) or "undefined"]


def _accepts(fn: Any, opts: dict[str, Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    names = {p.name for p in params}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return True
    return all(k in names for k in opts)


def _parse_flags(flags: Any) -> tuple[str, int, float, str]:
    if type(flags) is tuple and len(flags) == 3:
        flags = {"strategy": flags[0], "intensity": flags[1], "period": flags[2]}
    if type(flags) is not dict:
        raise _flags_error(("invalid_type", flags), "flags must be a dict or a 3-tuple")
    strategy = flags.get("strategy", "one_for_one")
    if strategy not in _STRATEGIES:
        raise _flags_error(("invalid_strategy", strategy), f"strategy must be one of {_STRATEGIES}")
    intensity = flags.get("intensity", 1)
    if type(intensity) is not int or intensity < 0:
        raise _flags_error(("invalid_intensity", intensity), "intensity must be an int >= 0")
    period = flags.get("period", 5)
    if type(period) not in (int, float) or period <= 0:
        raise _flags_error(("invalid_period", period), "period must be seconds > 0")
    auto = flags.get("auto_shutdown", "never")
    if auto not in _AUTO_SHUTDOWN:
        raise _flags_error(
            ("invalid_auto_shutdown", auto), f"auto_shutdown: one of {_AUTO_SHUTDOWN}"
        )
    return strategy, intensity, float(period), auto


def _flags_error(reason: Any, message: str) -> OtpError:
    return OtpError(("supervisor_data", reason), f"bad supervisor flags: {message}")


# ===================================================================== starting and stopping


async def _start(c: _Child, extra: tuple = ()) -> tuple[str, Any]:
    """Run a child's start function: ("ok", pid) | ("ignore", None) | ("error", reason)."""
    me = current_process()
    try:
        r = c.fn(*c.args, *extra, **c.kwargs)
        if inspect.isawaitable(r):
            r = await r
    except Exit as e:
        if me.reason is not None:
            raise
        return ("error", e.reason)
    except (StartError, OtpError) as e:
        return ("error", e.reason)
    except Exception as e:
        return ("error", Crash.from_exception(e))
    if type(r) is tuple and r and r[0] == "ok" and len(r) in (2, 3):
        r = r[1]
    elif type(r) is tuple and len(r) == 2 and r[0] == "error":
        return ("error", r[1])
    if type(r) is Pid:
        _api.link(r)  # a start function must link; make sure a dead or unlinked child is seen
        return ("ok", r)
    if r is None or r == "ignore":
        return ("ignore", None)
    return ("error", ("bad_return_value", r))


def _is_down(mref: Any) -> Any:
    return lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref


def _take_exit(me: Any, pid: Pid) -> Any:
    """Remove a queued ("EXIT", pid, reason) from the mailbox; return the reason or None."""
    if me.mbox:
        for i, m in enumerate(me.mbox):
            if type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == pid:
                me.remove_at(i)
                return m[2]
    return None


async def _stop_children(pids_shutdowns: list[tuple[Pid, Any, _Child]], sup_name: Any) -> None:
    """Stop children at once (unlink, monitor, exit signal), then wait for each DOWN.

    Each child gets its own deadline; one that outlives it is killed.
    """
    me = current_process()
    sched = get()
    loop = me.task.get_loop()
    waiting = []
    for pid, shutdown, c in pids_shutdowns:
        mref = sched.monitor(me, pid)
        _api.unlink(pid)
        early = _take_exit(me, pid)
        if early is not None:
            # It died on its own before we asked: report an unexpected reason.
            sched.demonitor(me, mref, True)
            if early != "normal" and not _is_shutdown_reason(early):
                _report("shutdown_error", early, c, pid, sup_name)
            continue
        if shutdown == "brutal_kill":
            _api.exit(pid, "kill")
            deadline = None
        else:
            _api.exit(pid, "shutdown")
            deadline = None if shutdown == "infinity" else loop.time() + shutdown
        waiting.append((pid, mref, shutdown, deadline, c))
    for pid, mref, shutdown, deadline, c in waiting:
        pred = _is_down(mref)
        try:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            msg = await receive_matching(me, pred, left, (mref,))
        except Timeout:
            _api.exit(pid, "kill")
            msg = await receive_matching(me, pred, None, (mref,))
        reason = msg[4]
        expected = "killed" if shutdown == "brutal_kill" else "shutdown"
        if reason in (expected, "noproc") or (reason == "normal" and c.restart != "permanent"):
            continue
        _report("shutdown_error", reason, c, pid, sup_name)


def _is_shutdown_reason(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (
        type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown"
    )


def _report(context: str, reason: Any, c: _Child | None, pid: Any, sup_name: Any) -> None:
    tail = f"\n{str(reason).rstrip()}" if type(reason) is Crash else ""
    _log.error(
        "supervisor report: supervisor %s, context %s, reason %r, offender id=%r pid=%r "
        "start=%s restart=%s shutdown=%r type=%s%s",
        sup_name,
        context,
        reason,
        None if c is None else c.id,
        pid,
        None if c is None else getattr(c.fn, "__qualname__", c.fn),
        None if c is None else c.restart,
        None if c is None else c.shutdown,
        None if c is None else c.type,
        tail,
    )


# ===================================================================== the supervisor process


class _State:
    """Internal: a supervisor's state (held by the gen_server loop)."""

    __slots__ = (
        "auto_shutdown",
        "children",
        "dyn",
        "intensity",
        "mod",
        "name",
        "period",
        "restarts",
        "strategy",
        "template",
    )

    def __init__(self) -> None:
        self.children: list[_Child] = []  # static children, in start order
        self.dyn: dict[Any, _Child] = {}  # simple_one_for_one: pid (or a ref while restarting)
        self.restarts: deque[float] = deque()
        self.template: _Child | None = None

    def find(self, child_id: Any) -> _Child | None:
        for c in self.children:
            if c.id == child_id:
                return c
        return None

    def by_pid(self, pid: Pid) -> _Child | None:
        for c in self.children:
            if c.pid == pid:
                return c
        return None


class _SupServer(gen_server.GenServer):
    """Internal: the gen_server callbacks that run a supervisor."""

    # ------------------------------------------------------------------ init

    async def init(self, sup_and_arg: Any) -> Any:
        # The user's Supervisor (a class travels by its qualified name, so a supervisor can
        # start on another scheduler or node) and its init argument.
        self.sup, arg = sup_and_arg
        _api.process_flag("trap_exit", True)
        me = current_process()
        mod = self.sup() if isinstance(self.sup, type) else self.sup
        # Code upgrade targets the user's module, not this one.
        me.info = {"behaviour": "supervisor", "module": type(mod).__module__, "callback": self}
        self.arg = arg
        r = mod.init(arg)
        if inspect.isawaitable(r):
            r = await r
        if r == "ignore":
            return "ignore"
        if not (type(r) is tuple and len(r) == 2 and r[0] == "ok" and _is_pair(r[1])):
            return ("stop", ("bad_return", (_qualname(mod), "init", r)))
        flags, specs = r[1]
        s = _State()
        s.mod = mod
        s.name = me.name or repr(me.pid)
        try:
            s.strategy, s.intensity, s.period, s.auto_shutdown = _parse_flags(flags)
        except OtpError as e:
            return ("stop", e.reason)
        if type(specs) is not list:
            return ("stop", ("start_spec", ("invalid_child_specs", specs)))
        try:
            children = _parse_specs(specs, s.auto_shutdown)
        except OtpError as e:
            return ("stop", ("start_spec", e.reason))
        if s.strategy == "simple_one_for_one":
            if len(children) != 1:
                return ("stop", ("bad_start_spec", specs))
            s.template = children[0]
            return ("ok", s)
        for c in children:
            kind, v = await _start(c)
            if kind == "error":
                _report("start_error", v, c, None, s.name)
                await self._terminate_all(s)
                return ("stop", ("shutdown", ("failed_to_start_child", c.id, v)))
            if v is None and c.restart == "temporary":
                continue  # an ignored temporary child leaves no spec (as OTP)
            c.pid = v
            s.children.append(c)
            if v is not None:
                _progress(s, c)
        return ("ok", s)

    # ------------------------------------------------------------------ calls

    async def handle_call(self, req: Any, from_: Any, s: _State) -> Any:
        try:
            value = await self._call(req, s)
        except OtpError as e:
            return ("reply", ("error", e.reason, str(e)), s)
        return ("reply", ("ok", value), s)

    async def _call(self, req: Any, s: _State) -> Any:
        if req == "which_children":
            return self._which(s)
        if req == "count_children":
            return self._count(s)
        if type(req) is not tuple or len(req) != 2:
            raise OtpError(("unexpected_call", req), f"supervisor: unexpected call {req!r}")
        op, arg = req
        simple = s.strategy == "simple_one_for_one"
        if op == "start_child":
            return await (self._start_dyn(arg, s) if simple else self._start_static(arg, s))
        if op == "terminate_child":
            if simple:
                return await self._terminate_dynamic(arg, s)
            c = self._find(s, arg)
            if type(c.pid) is Pid:
                await _stop_children([(c.pid, c.shutdown, c)], s.name)
            c.pid = None
            if c.restart == "temporary":
                s.children.remove(c)
            return None
        if simple and op in ("restart_child", "delete_child"):
            raise OtpError("simple_one_for_one", f"{op} is not available for simple_one_for_one")
        if op == "restart_child":
            c = self._find(s, arg)
            if type(c.pid) is Pid:
                raise OtpError("running", f"child {arg!r} is running")
            if c.pid == "restarting":
                raise OtpError("restarting", f"child {arg!r} is restarting")
            kind, v = await _start(c)
            if kind == "error":
                raise OtpError(v, f"child {arg!r} failed to start: {v!r}")
            c.pid = v
            return v
        if op == "delete_child":
            c = self._find(s, arg)
            if type(c.pid) is Pid:
                raise OtpError("running", f"child {arg!r} is running")
            if c.pid == "restarting":
                raise OtpError("restarting", f"child {arg!r} is restarting")
            s.children.remove(c)
            return None
        raise OtpError(("unexpected_call", req), f"supervisor: unexpected call {req!r}")

    @staticmethod
    async def _terminate_dynamic(pid: Any, s: _State) -> None:
        """Stop a simple_one_for_one child by its pid; one waiting to restart is dropped.

        A dead pid that is no (longer a) child is fine, as in OTP.

        Raises:
            OtpError: "simple_one_for_one" when `pid` is not a pid; "not_found" when it is
                alive but not a child of this supervisor.
        """
        if type(pid) is not Pid:
            raise OtpError("simple_one_for_one", "terminate_child needs the child's pid")
        c = s.dyn.pop(pid, None) or s.dyn.pop(("restarting", pid), None)
        if c is None and _alive(pid):
            raise OtpError("not_found", f"{pid!r} is not a child of this supervisor")
        if c is not None and type(c.pid) is Pid:
            await _stop_children([(pid, c.shutdown, c)], s.name)

    @staticmethod
    def _find(s: _State, child_id: Any) -> _Child:
        c = s.find(child_id)
        if c is None:
            raise OtpError("not_found", f"no child with id {child_id!r}")
        return c

    async def _start_static(self, spec: Any, s: _State) -> Any:
        c = _parse_spec(spec, s.auto_shutdown)
        old = s.find(c.id)
        if old is not None:
            if type(old.pid) is Pid:
                raise OtpError(("already_started", old.pid), f"child {c.id!r} already started")
            raise OtpError("already_present", f"a child spec with id {c.id!r} is present")
        kind, v = await _start(c)
        if kind == "error":
            _report("start_error", v, c, None, s.name)
            raise OtpError(v, f"child {c.id!r} failed to start: {v!r}")
        if v is None and c.restart == "temporary":
            return None  # an ignored temporary child leaves no spec (as OTP)
        c.pid = v
        s.children.append(c)
        if v is not None:
            _progress(s, c)
        return v

    async def _start_dyn(self, extra: Any, s: _State) -> Any:
        if type(extra) not in (list, tuple):
            raise BadArg(
                "start_child on a simple_one_for_one supervisor expects a list of extra "
                f"args, got {extra!r}"
            )
        c = s.template.started_with(tuple(extra))
        kind, v = await _start(c)
        if kind == "error":
            _report("start_error", v, c, None, s.name)
            raise OtpError(v, f"child failed to start: {v!r}")
        if v is not None:
            c.pid = v
            s.dyn[v] = c
            _progress(s, c)
        return v

    @staticmethod
    def _which(s: _State) -> list[tuple]:
        if s.strategy == "simple_one_for_one":
            t = s.template
            return [(None, c.pid, t.type, t.modules) for c in reversed(s.dyn.values())]
        return [(c.id, c.pid, c.type, c.modules) for c in reversed(s.children)]

    @staticmethod
    def _count(s: _State) -> dict[str, int]:
        if s.strategy == "simple_one_for_one":
            n = len(s.dyn)
            active = sum(1 for c in s.dyn.values() if _alive(c.pid))
            sup = s.template.type == "supervisor"
            return {
                "specs": 1,
                "active": active,
                "supervisors": n if sup else 0,
                "workers": 0 if sup else n,
            }
        sups = sum(1 for c in s.children if c.type == "supervisor")
        return {
            "specs": len(s.children),
            "active": sum(1 for c in s.children if _alive(c.pid)),
            "supervisors": sups,
            "workers": len(s.children) - sups,
        }

    # ------------------------------------------------------------------ exits and restarts

    def handle_cast(self, msg: Any, s: _State) -> Any:
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$try_again":
            return self._try_again(msg[1], s)
        _log.error("supervisor %s: unexpected cast %r", s.name, msg)
        return ("noreply", s)

    async def _try_again(self, key: Any, s: _State) -> Any:
        """Retry a child whose restart failed, after letting other processes run: a start
        function that fails at once would otherwise keep the scheduler until intensity is
        exceeded, and no request (e.g. terminate_child) could get in between retries."""
        await asyncio.sleep(0)
        if s.strategy == "simple_one_for_one":
            c = s.dyn.get(key)
        else:
            c = next((x for x in s.children if x is key or x.id == key), None)
        if c is None or c.pid != "restarting":
            return ("noreply", s)
        return await self._restart(c, s, key)

    async def handle_info(self, msg: Any, s: _State) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT":
            return await self._child_exited(msg[1], msg[2], s)
        _log.error("supervisor %s: unexpected message %r", s.name, msg)
        return ("noreply", s)

    async def _child_exited(self, pid: Any, reason: Any, s: _State) -> Any:
        if s.strategy == "simple_one_for_one":
            c = s.dyn.pop(pid, None)
        else:
            c = s.by_pid(pid) if type(pid) is Pid else None
        if c is None:
            return ("noreply", s)  # an EXIT from a process that is not (any more) a child
        normal = _is_shutdown_reason(reason)
        if _node_stopping():
            # The node is going down and stops children newest first, maybe before this
            # supervisor hears from its parent: restarting them now would only be undone.
            if s.strategy != "simple_one_for_one":
                c.pid = None
            return ("noreply", s)
        if c.restart == "permanent" or not normal:
            _report("child_terminated", reason, c, pid, s.name)
        if c.restart == "temporary" or (c.restart == "transient" and normal):
            if s.strategy != "simple_one_for_one":
                c.pid = None
                if c.restart == "temporary":
                    s.children.remove(c)
            if c.significant and self._auto_shutdown(s):
                return ("stop", "shutdown", s)
            return ("noreply", s)
        if s.strategy != "simple_one_for_one":
            c.pid = None
        return await self._restart(c, s, pid)

    def _auto_shutdown(self, s: _State) -> bool:
        if s.auto_shutdown == "any_significant":
            return True
        if s.auto_shutdown == "all_significant":
            pool = s.dyn.values() if s.strategy == "simple_one_for_one" else s.children
            return not any(c.significant and c.pid is not None for c in pool)
        return False

    def _add_restart(self, s: _State) -> bool:
        now = current_process().task.get_loop().time()
        r = s.restarts
        r.append(now)
        while r and r[0] < now - s.period:
            r.popleft()
        return len(r) <= s.intensity

    async def _restart(self, c: _Child, s: _State, dyn_key: Any = None) -> Any:
        """Restart `c` (and its siblings per the strategy); stop when intensity is exceeded.

        `dyn_key` is a simple_one_for_one child's key: its old pid, or ("restarting", pid).
        """
        if not self._add_restart(s):
            _report("reached_max_restart_intensity", "shutdown", c, c.pid, s.name)
            return ("stop", "shutdown", s)
        if s.strategy == "simple_one_for_one":
            await self._restart_dynamic(c, s, dyn_key)
            return ("noreply", s)
        if s.strategy == "one_for_one":
            group = [c]
        elif s.strategy == "one_for_all":
            group = list(s.children)
        else:  # rest_for_one
            group = s.children[s.children.index(c) :]
        # Stop the siblings newest first, each waited for before the next (as OTP's
        # terminate_children: a child may rely on those started before it while it stops),
        # drop temporaries, then start the group in order.
        for x in reversed(group):
            if x is not c and type(x.pid) is Pid:
                await _stop_children([(x.pid, x.shutdown, x)], s.name)
        for x in group:
            if x is not c:
                x.pid = None
                if x.restart == "temporary":
                    s.children.remove(x)
        for x in group:
            if x.restart == "temporary" and x is not c:
                continue
            kind, v = await _start(x)
            if kind == "error":
                _report("start_error", v, x, None, s.name)
                x.pid = "restarting"
                gen_server.cast(current_process().pid, ("$try_again", x.id))
                break
            x.pid = v
            if v is not None:
                _progress(s, x)
        return ("noreply", s)

    async def _restart_dynamic(self, c: _Child, s: _State, dyn_key: Any) -> None:
        """Start a simple_one_for_one child again, in place of its entry at `dyn_key`.

        A failed start leaves it listed once, as ("restarting", old_pid), and retries
        through a cast to itself (as OTP); "ignore" drops it.
        """
        s.dyn.pop(dyn_key, None)
        kind, v = await _start(c)
        if kind == "ok":
            c.pid = v
            s.dyn[v] = c
        elif kind == "error":
            _report("start_error", v, c, None, s.name)
            key = dyn_key if type(dyn_key) is tuple else ("restarting", dyn_key)
            c.pid = "restarting"
            s.dyn[key] = c
            gen_server.cast(current_process().pid, ("$try_again", key))

    # ------------------------------------------------------------------ termination

    async def terminate(self, reason: Any, s: Any) -> None:
        if isinstance(s, _State):
            await self._terminate_all(s)

    async def _terminate_all(self, s: _State) -> None:
        if s.strategy == "simple_one_for_one":
            # Dynamic children stop together, as in OTP.
            items = [(pid, c.shutdown, c) for pid, c in s.dyn.items() if type(pid) is Pid]
            s.dyn.clear()
            await _stop_children(items, s.name)
            return
        for c in reversed(s.children):
            if type(c.pid) is Pid:
                await _stop_children([(c.pid, c.shutdown, c)], s.name)
            c.pid = None
        s.children = [c for c in s.children if c.restart != "temporary"]

    async def code_change(self, old_vsn: Any, s: Any, extra: Any) -> Any:
        """After an upgrade, run the (reloaded) user `init` again and take its new flags and
        the new specs of children that already exist (as OTP does); running children stay.

        Raises (so the upgrade of this process fails and it keeps its old state): a bad
        return, bad flags or bad specs.
        """
        mod = _reloaded(s.mod)
        r = mod.init(self.arg)
        if inspect.isawaitable(r):
            r = await r
        if r == "ignore":
            return ("ok", s)
        if not (type(r) is tuple and len(r) == 2 and r[0] == "ok" and _is_pair(r[1])):
            raise OtpError(("bad_return", (_qualname(mod), "init", r)), "code_change: bad init")
        strategy, intensity, period, auto = _parse_flags(r[1][0])
        if (strategy == "simple_one_for_one") != (s.strategy == "simple_one_for_one"):
            raise OtpError("changing_to_or_from_simple_one_for_one", "code_change: strategy")
        new = _parse_specs(list(r[1][1]), auto)
        if strategy == "simple_one_for_one":
            if len(new) != 1:
                raise OtpError(("bad_start_spec", r[1][1]), "code_change: one spec expected")
            s.template = new[0]
        else:
            for c in new:
                old = s.find(c.id)
                if old is not None:
                    c.pid = old.pid
                    s.children[s.children.index(old)] = c
        s.mod, s.strategy, s.intensity, s.period, s.auto_shutdown = (
            mod,
            strategy,
            intensity,
            period,
            auto,
        )
        return ("ok", s)


def _reloaded(mod: Any) -> Any:
    """Return an instance of the current version of `mod`'s class (after a module reload)."""
    cls = type(mod)
    obj: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, Supervisor) and obj is not cls:
        try:
            mod.__class__ = obj
        except TypeError:
            return obj()
    return mod


def _node_stopping() -> bool:
    node = _config.current()
    return node is not None and node.main is not None and node.main._proc is None


def _alive(pid: Any) -> bool:
    if type(pid) is not Pid:
        return False
    if pid._proc is not None:
        return True
    sched = get()
    if sched.is_local(pid):
        return sched.lookup(pid) is not None
    # A child elsewhere is running until its EXIT arrives, as OTP counts it.
    return sched.router is not None and sched.router.alive(pid)


def _is_pair(x: Any) -> bool:
    return type(x) is tuple and len(x) == 2


def _qualname(mod: Any) -> str:
    cls = type(mod)
    return f"{cls.__module__}.{cls.__qualname__}"


def _progress(s: _State, c: _Child) -> None:
    _log.info("supervisor %s started child id=%r pid=%r", s.name, c.id, c.pid)
