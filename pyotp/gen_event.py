"""gen_event: an event manager process with any number of handlers added and removed at run time.

Where it sits: user code → **gen_event** (client API + the manager loop) → `pyotp._gen`
(start with init ack, call with monitor, stop) → process primitives → scheduler.

One manager process holds a list of installed handlers, newest first (Erlang's order; it is
also the order `which_handlers` returns and the order handlers see each event). A handler is a
`Handler` subclass, instantiated once per installation, identified by its class or by a
`(class, id)` tuple when several copies of one class are installed. Every callback runs inside
the manager process, so handlers never race each other.

Fault isolation (the point of gen_event): a handler whose callback raises or returns a value
of the wrong shape is removed (its `terminate` gets `("error", ("EXIT", crash))` or
`("error", value)`), the failure is logged on logger `pyotp.gen_event`, and the manager and
every other handler carry on.

Supervised handlers (`add_sup_handler`): the manager links to the caller (the owner). When the
owner exits, its handlers are removed with `terminate(("stop", reason), state)`; when such a
handler is removed for any other reason the owner gets `("gen_event_EXIT", name, reason)` with
reason `"normal"` (deleted or removed itself), `"shutdown"` (manager stopping),
`("swapped", new_name, owner_pid)`, or the error term.

Wire shapes (private): `("$gen_notify", event)` for `notify`; calls through `_gen.call` with
requests `("sync_notify", e)`, `("call", h, q)`, `("add_handler", h, a)`,
`("add_sup_handler", h, a)`, `("delete_handler", h, a)`, `("swap_handler", h1, a1, h2, a2)`,
`("swap_sup_handler", h1, a1, h2, a2)`, `"which_handlers"`; replies are `("ok", value)` or
`("error", reason)` so a handler's own reply is never mistaken for a manager error. Any other
message goes to every handler's `handle_info`.

Deviation from Erlang, on purpose: a manager started with `start` (not linked) also
terminates on `("EXIT", spawner, "shutdown")`, because that is how node shutdown asks a
trapping process to stop; any other EXIT (another reason, or another sender) is handled as
in Erlang: the sender's supervised handlers go, then every handler's `handle_info` sees it.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any

from schedulers import current_process, get, receive_matching
from transport import BadArg, Crash, Exit, NotInProcess, NotSerializable, OtpError, Pid

from . import _api, _debug, _gen

__all__ = [
    "Handler",
    "add_handler",
    "add_sup_handler",
    "call",
    "delete_handler",
    "notify",
    "start",
    "start_link",
    "stop",
    "swap_handler",
    "swap_sup_handler",
    "sync_notify",
    "which_handlers",
]

log = logging.getLogger("pyotp.gen_event")


class Handler:
    """Base class of event handlers; the manager calls these methods inside its process.

    Client call → callback it triggers:

    - `add_handler`, `add_sup_handler` → `init(args)`
    - `notify`, `sync_notify` → `handle_event(event, state)` on every handler
    - `call(mgr, H, request)` → `H.handle_call(request, state)`
    - any other message to the manager → `handle_info(info, state)` on every handler
    - `delete_handler(mgr, H, args)` → `H.terminate(args, state)`
    - `swap_handler` → `Old.terminate(args1, state)`, then `New.init((args2, result))`
    - `stop` → `terminate("stop", state)` on every handler
    - `pyotp.code.upgrade` → `code_change(old_vsn, state, extra)`

    Return shapes:

    - `init` → `("ok", state)`, `("ok", state, "hibernate")` or `("error", reason)`.
    - `handle_event` / `handle_info` → `("ok", state)`, `("ok", state, "hibernate")`,
      `("swap_handler", args1, state, Handler2, args2)` or `"remove_handler"`.
    - `handle_call` → `("ok", reply, state)`, `("ok", reply, state, "hibernate")`,
      `("swap_handler", reply, args1, state, Handler2, args2)` or `("remove_handler", reply)`.
    - `terminate(arg, state)` → anything: the result of `delete_handler`, or the value passed
      to the new handler's `init` on a swap. `arg` is the delete/swap args, `"stop"`,
      `("stop", owner_exit_reason)`, `"remove_handler"`, `("error", ("EXIT", crash))` or
      `("error", bad_value)`.
    - `code_change` → `("ok", state)`.

    Callbacks may be `def` or `async def`. The manager makes one instance per installation;
    the state is passed and returned explicitly, as in Erlang.
    """

    def init(self, args: Any) -> Any:
        """Default: `("ok", args)` — the args become the state."""
        return ("ok", args)

    def handle_event(self, event: Any, state: Any) -> Any:
        """Default: ignore the event."""
        return ("ok", state)

    def handle_call(self, request: Any, state: Any) -> Any:
        """Default: not implemented (a call to this handler removes it, like Erlang's undef)."""
        raise NotImplementedError(f"{type(self).__qualname__}.handle_call is not implemented")

    def handle_info(self, info: Any, state: Any) -> Any:
        """Default: log the unexpected message at warning level and drop it."""
        log.warning(
            "gen_event handler %s got an unexpected message: %r", _cls_name(type(self)), info
        )
        return ("ok", state)

    def terminate(self, arg: Any, state: Any) -> Any:
        """Default: return "ok"."""
        return "ok"

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Default: keep the state."""
        return ("ok", state)


# =====================================================================================
# API
# =====================================================================================


async def start_link(name: str | None = None, *, timeout: float | None = None) -> Pid:
    """Start an event manager linked to the caller.

    Args:
        name: register the manager under this name (a str, or `("local", str)`).
        timeout: seconds to wait for it to start (None = forever).

    Returns:
        The manager's pid.

    Raises:
        StartError: `("already_started", pid)` when the name is taken.
        BadArg: a malformed name or timeout.
    """
    return await _gen.start(
        _manager, (True,), link=True, name=name, timeout=timeout, what="gen_event.start_link"
    )


async def start(name: str | None = None, *, timeout: float | None = None) -> Pid:
    """Start an event manager not linked to the caller (see `start_link`)."""
    return await _gen.start(
        _manager, (False,), link=False, name=name, timeout=timeout, what="gen_event.start"
    )


async def add_handler(mgr: Any, handler: Any, args: Any, *, timeout: float | None = None) -> None:
    """Install `handler` (a class or `(class, id)`) in `mgr`; it starts with `init(args)`.

    Raises:
        OtpError: init failed; `.reason` is R for `("error", R)`, `("EXIT", crash)` when it
            raised, or whatever other value it returned.
        BadArg: `handler` is not a class or `(class, id)`.
        CallExit: the manager is dead or unknown ("noproc"), or died meanwhile.
    """
    _check_handler(handler, "gen_event.add_handler")
    _unwrap(await _gen.call(mgr, ("add_handler", handler, args), timeout, "gen_event.add_handler"))


async def add_sup_handler(
    mgr: Any, handler: Any, args: Any, *, timeout: float | None = None
) -> None:
    """Install `handler` as `add_handler` does, supervised by the caller.

    The manager links to the caller. When the caller exits, the handler is removed with
    `terminate(("stop", reason), state)`. When the handler is removed for another reason the
    caller gets `("gen_event_EXIT", handler, reason)`, reason being "normal", "shutdown",
    `("swapped", new_handler, pid)` or the error term.

    Raises:
        OtpError, BadArg, CallExit: as `add_handler`.
    """
    _check_handler(handler, "gen_event.add_sup_handler")
    _unwrap(
        await _gen.call(
            mgr, ("add_sup_handler", handler, args), timeout, "gen_event.add_sup_handler"
        )
    )


async def delete_handler(mgr: Any, handler: Any, args: Any, *, timeout: float | None = None) -> Any:
    """Remove `handler` from `mgr`, calling its `terminate(args, state)`.

    Returns:
        What `terminate` returned (`("EXIT", crash)` if it raised, as in Erlang).

    Raises:
        OtpError: "module_not_found" when no such handler is installed.
        BadArg, CallExit: as `add_handler`.
    """
    _check_handler(handler, "gen_event.delete_handler")
    return _unwrap(
        await _gen.call(mgr, ("delete_handler", handler, args), timeout, "gen_event.delete_handler")
    )


async def swap_handler(
    mgr: Any, old: tuple[Any, Any], new: tuple[Any, Any], *, timeout: float | None = None
) -> None:
    """Replace handler `old = (H1, args1)` by `new = (H2, args2)` in one step.

    Behind the scenes:
    1. `H1.terminate(args1, state)` runs and its result `T` is kept (`"error"` when H1 is not
       installed, `("EXIT", crash)` when terminate raised).
    2. `H2.init((args2, T))` runs; H2 is installed even when H1 was not.
    3. A supervised H1 passes its owner on to H2; H1's owner gets
       `("gen_event_EXIT", H1, ("swapped", H2, owner))`.

    Raises:
        OtpError: H2's init failed (reason as in `add_handler`); H1 is gone anyway.
        BadArg: `old`/`new` are not `(handler, args)` pairs.
        CallExit: as `add_handler`.
    """
    h1, a1, h2, a2 = _check_swap(old, new, "gen_event.swap_handler")
    _unwrap(
        await _gen.call(mgr, ("swap_handler", h1, a1, h2, a2), timeout, "gen_event.swap_handler")
    )


async def swap_sup_handler(
    mgr: Any, old: tuple[Any, Any], new: tuple[Any, Any], *, timeout: float | None = None
) -> None:
    """Swap as `swap_handler` does, making the caller the supervisor of the new handler."""
    h1, a1, h2, a2 = _check_swap(old, new, "gen_event.swap_sup_handler")
    _unwrap(
        await _gen.call(
            mgr, ("swap_sup_handler", h1, a1, h2, a2), timeout, "gen_event.swap_sup_handler"
        )
    )


def notify(mgr: Any, event: Any) -> None:
    """Send `event` to every handler of `mgr` and return at once.

    A plain send, as in OTP: to a dead manager or to `(name, node)` that nobody holds the
    event is dropped; to a bare name nobody holds it raises, like `pyotp.send`.

    Raises:
        BadArg: `mgr` is not a pid, a name, or `(name, node)`; or a name nobody holds.
        NotInProcess: called outside a running node.
    """
    if get() is None:
        raise NotInProcess("gen_event.notify()")
    if type(mgr) is tuple and len(mgr) == 2 and mgr[0] == "global":
        _gen.cast_to(mgr, ("$gen_notify", event))  # global:send's notify: never raises
        return
    dest = _dest(mgr, "gen_event.notify")
    try:
        _api.send(dest, ("$gen_notify", event))
    except NotSerializable:
        raise
    except BadArg:
        if type(dest) is str:
            raise BadArg(f"gen_event.notify: no manager is registered as {dest!r}") from None
        # (name, node) that nobody holds: dropped, as Erlang's send to {Name, Node} is


async def sync_notify(mgr: Any, event: Any, *, timeout: float | None = None) -> None:
    """Send `event` to every handler of `mgr`; return once all of them have handled it.

    Raises:
        CallExit: the manager is dead or unknown ("noproc"), or died meanwhile.
        CallTimeout: not done within `timeout` seconds (None = forever).
    """
    await _gen.call(mgr, ("sync_notify", event), timeout, "gen_event.sync_notify")


async def call(mgr: Any, handler: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """Ask one handler: runs `handler.handle_call(request, state)` and returns its reply.

    Raises:
        OtpError: "bad_module" when no such handler is installed; `("EXIT", crash)` when
            handle_call raised, or the bad value it returned (the handler is then removed).
        CallExit: the manager is dead or unknown ("noproc"), or died meanwhile.
        CallTimeout: no reply within `timeout` seconds.
        BadArg: `handler` is not a class or `(class, id)`.
    """
    _check_handler(handler, "gen_event.call")
    return _unwrap(await _gen.call(mgr, ("call", handler, request), timeout, "gen_event.call"))


async def which_handlers(mgr: Any, *, timeout: float | None = None) -> list[Any]:
    """Return the installed handlers, newest first: the class, or `(class, id)`.

    Raises:
        CallExit: the manager is dead or unknown ("noproc").
    """
    return await _gen.call(mgr, "which_handlers", timeout, "gen_event.which_handlers")


async def stop(mgr: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop `mgr`: every handler's `terminate("stop", state)` runs, then it exits with `reason`.

    Raises:
        CallExit: "noproc" for a dead or unknown manager.
        CallTimeout: it did not stop within `timeout` seconds.
    """
    await _gen.stop(mgr, reason, timeout)


# --------------------------------------------------------------------- argument checks


def _is_handler_spec(h: Any) -> bool:
    return isinstance(h, type) or (type(h) is tuple and len(h) == 2 and isinstance(h[0], type))


def _check_handler(h: Any, what: str) -> None:
    if not _is_handler_spec(h):
        raise BadArg(f"{what}: a handler is a Handler class or a (class, id) tuple, got {h!r}")


def _check_swap(old: Any, new: Any, what: str) -> tuple[Any, Any, Any, Any]:
    for pair in (old, new):
        if type(pair) is not tuple or len(pair) != 2:
            raise BadArg(f"{what}: expected (handler, args) pairs, got {pair!r}")
        _check_handler(pair[0], what)
    return old[0], old[1], new[0], new[1]


def _dest(mgr: Any, what: str) -> Any:
    if type(mgr) in (Pid, str):
        return mgr
    if type(mgr) is tuple and len(mgr) == 2 and type(mgr[0]) is str and type(mgr[1]) is str:
        return mgr[1] if mgr[0] in ("local", "global") else mgr
    raise BadArg(f"{what}: expected a manager Pid, a registered name or (name, node), got {mgr!r}")


def _unwrap(reply: Any) -> Any:
    if reply[0] == "ok":
        return reply[1]
    reason = reply[1]
    raise OtpError(reason, _error_text(reason))


def _error_text(reason: Any) -> str:
    if reason == "module_not_found":
        return "gen_event: no such handler is installed (module_not_found)"
    if reason == "bad_module":
        return "gen_event.call: no such handler is installed (bad_module)"
    if type(reason) is tuple and len(reason) == 2 and reason[0] == "EXIT":
        return f"gen_event: the handler raised: {reason[1]!r}"
    return f"gen_event: the handler failed with {reason!r}"


def _cls_name(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


# =====================================================================================
# The manager process
# =====================================================================================

_NO_ID = object()  # the id of a handler installed by class alone (Erlang's id = false)


class _Installed:
    """Internal: one installed handler (Erlang's #handler record)."""

    __slots__ = ("cls", "id", "inst", "state", "supervised")

    def __init__(self, cls: type, hid: Any, inst: Any, supervised: Pid | None) -> None:
        self.cls = cls
        self.id = hid
        self.inst = inst
        self.state: Any = None
        self.supervised = supervised

    def name(self) -> Any:
        return self.cls if self.id is _NO_ID else (self.cls, self.id)

    def matches(self, spec: Any) -> bool:
        if type(spec) is tuple:
            return self.id is not _NO_ID and _same_class(self.cls, spec[0]) and self.id == spec[1]
        return self.id is _NO_ID and _same_class(self.cls, spec)


def _same_class(cls: Any, spec: Any) -> bool:
    """`spec` names the handler class `cls`: it is `cls`, or the class of the same module and
    qualified name reloaded since (code.upgrade), as Erlang names a handler by its module. A
    class made in a function (`<locals>`) is only itself."""
    if cls is spec:
        return True
    return (
        isinstance(spec, type)
        and spec.__qualname__ == cls.__qualname__
        and spec.__module__ == cls.__module__
        and "<locals>" not in cls.__qualname__
    )


def _split_spec(spec: Any) -> tuple[Any, Any]:
    if type(spec) is tuple:
        return spec[0], spec[1]
    return spec, _NO_ID


def _is_ok_state(r: Any) -> bool:
    return (
        type(r) is tuple
        and r
        and r[0] == "ok"
        and (len(r) == 2 or (len(r) == 3 and r[2] == "hibernate"))
    )


def _is_system(m: Any) -> bool:
    return type(m) is tuple and len(m) == 3 and m[0] == "$system"


async def _manager(starter: _gen.Starter, linked: bool) -> None:
    me = current_process("gen_event manager")
    me.trap_exit = True
    mgr = _Manager(me, me.parent if linked else None)
    me.info = {"behaviour": "gen_event", "modules": mgr.modules}
    starter.ok()
    await mgr.loop()


class _Manager:
    """Internal: the manager's state and loop (Erlang's gen_event server side)."""

    def __init__(self, proc: Any, parent: Pid | None) -> None:
        self.proc = proc
        self.parent = parent  # set only when started linked: its EXIT stops the manager
        self.handlers: list[_Installed] = []
        self.suspended = False
        self.dbg: Any = None  # sys_ statistics/trace; None costs one test per message

    def modules(self) -> list[str]:
        """The module names of the installed handlers (for code upgrade)."""
        return sorted({h.cls.__module__ for h in self.handlers})

    # ------------------------------------------------------------------ loop

    async def loop(self) -> None:
        me = self.proc
        while True:
            if self.suspended:
                msg = await receive_matching(me, _is_system, None)
            else:
                msg = await receive_matching(me, None, None)
            dbg = self.dbg
            if dbg is not None:
                dbg.msg_in(msg)
            await self.dispatch(msg)
            if dbg is not None and self.dbg is not None:
                dbg.new_state(self.get_state())

    async def dispatch(self, msg: Any) -> None:
        if type(msg) is tuple and msg:
            tag = msg[0]
            n = len(msg)
            if tag == "$gen_notify" and n == 2:
                await self.notify(msg[1], "handle_event")
                return
            if tag == "$gen_call" and n == 3 and type(msg[1]) is tuple and len(msg[1]) == 2:
                if await self.handle_call(msg[1], msg[2]):
                    return
            elif tag == "$system" and n == 3:
                await self.system(msg[1], msg[2])
                return
            elif tag == "EXIT" and n == 3 and type(msg[1]) is Pid:
                await self.handle_exit(msg[1], msg[2])
                return
        await self.notify(msg, "handle_info")

    async def handle_call(self, from_: Any, req: Any) -> bool:
        """Serve one client request; False when `req` is not ours (it becomes an info)."""
        if req == "which_handlers":
            _gen.reply(from_, [h.name() for h in self.handlers])
            return True
        if type(req) is not tuple or not req:
            return False
        kind = req[0]
        n = len(req)
        if kind == "sync_notify" and n == 2:
            await self.notify(req[1], "handle_event")
            _gen.reply(from_, "ok")
        elif kind == "call" and n == 3 and _is_handler_spec(req[1]):
            _gen.reply(from_, await self.call_handler(req[1], req[2]))
        elif kind == "add_handler" and n == 3 and _is_handler_spec(req[1]):
            _gen.reply(from_, await self.add(req[1], req[2], None))
        elif kind == "add_sup_handler" and n == 3 and _is_handler_spec(req[1]):
            _gen.reply(from_, await self.add(req[1], req[2], self.link_owner(from_[0])))
        elif kind == "delete_handler" and n == 3 and _is_handler_spec(req[1]):
            _gen.reply(from_, await self.delete(req[1], req[2]))
        elif kind == "swap_handler" and n == 5:
            _gen.reply(from_, await self.swap(req[1], req[2], req[3], req[4], None))
        elif kind == "swap_sup_handler" and n == 5:
            owner = self.link_owner(from_[0])
            _gen.reply(from_, await self.swap(req[1], req[2], req[3], req[4], owner))
        else:
            return False
        return True

    def link_owner(self, pid: Pid) -> Pid:
        # Erlang keeps this link after the handler is gone (another handler may share the
        # owner); a dead owner arrives as ("EXIT", pid, "noproc") since we trap exits.
        _api.link(pid)
        return pid

    # ------------------------------------------------------------------ callbacks

    async def invoke(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        """Run a callback; return (True, result) or (False, exit reason) when it raised."""
        try:
            r = fn(*args)
            if inspect.isawaitable(r):
                r = await r
            return True, r
        except Exit as e:
            if self.proc.reason is not None:
                raise  # the manager itself is being killed, not the handler failing
            return False, e.reason
        except Exception as e:  # any handler failure only removes the handler
            return False, Crash.from_exception(e)

    async def install(
        self, spec: Any, args: Any, supervised: Pid | None
    ) -> tuple[_Installed | None, Any, Any]:
        """Make and init a handler; return (installed, None, None) or (None, raw, reason).

        `raw` is what init gave (Erlang's term for reports), `reason` the error for callers.
        """
        if not _is_handler_spec(spec):
            bad = ("EXIT", Crash("BadArg", f"not a handler class or (class, id): {spec!r}"))
            return None, bad, bad
        cls, hid = _split_spec(spec)
        try:
            inst = cls()
            init = inst.init
        except Exception as e:  # a class that cannot be made fails its init
            bad = ("EXIT", Crash.from_exception(e))
            return None, bad, bad
        ok, r = await self.invoke(init, args)
        if not ok:
            return None, ("EXIT", r), ("EXIT", r)
        if _is_ok_state(r):
            h = _Installed(cls, hid, inst, supervised)
            h.state = r[1]
            return h, None, None
        if type(r) is tuple and len(r) == 2 and r[0] == "error":
            return None, r, r[1]
        return None, r, r

    async def terminate_handler(
        self, h: _Installed, arg: Any, state: Any, last_in: Any, how: Any
    ) -> Any:
        """Run `terminate(arg, state)`, report the removal; return terminate's result."""
        fn = getattr(h.inst, "terminate", None)
        if fn is None:
            res: Any = "ok"
        else:
            ok, res = await self.invoke(fn, arg, state)
            if not ok:
                log.error(
                    "gen_event handler %s: terminate(%r) raised:\n%s", _cls_name(h.cls), arg, res
                )
                res = ("EXIT", res)
        if how == "crash" and type(arg) is tuple and len(arg) == 2 and arg[0] == "error":
            self.report(h, arg[1], state, last_in)
        else:
            self.report(h, how, state, last_in)
        return res

    def report(self, h: _Installed, reason: Any, state: Any, last_in: Any) -> None:
        """Log an abnormal removal and tell the owner of a supervised handler."""
        if not (
            reason in ("normal", "shutdown")
            or (type(reason) is tuple and len(reason) == 3 and reason[0] == "swapped")
        ):
            shown = (
                reason[1]
                if type(reason) is tuple and len(reason) == 2 and reason[0] == "EXIT"
                else reason
            )
            log.error(
                "gen_event handler %r crashed in manager %r (name %r)\n"
                "last message: %r\nstate: %r\nreason: %s",
                h.name(),
                self.proc.pid,
                self.proc.name,
                last_in,
                state,
                shown,
            )
        if h.supervised is not None:
            _api.send(h.supervised, ("gen_event_EXIT", h.name(), reason))

    async def update(self, h: _Installed, func: str, event: Any) -> _Installed | None:
        """Run `handle_event`/`handle_info` of one handler; None when it is removed."""
        fn = getattr(h.inst, func, None)
        if fn is None and func == "handle_info":
            # handle_info is optional in Erlang: a missing one only warns.
            log.warning(
                "gen_event handler %s has no handle_info; dropped %r", _cls_name(h.cls), event
            )
            return h
        if fn is None:
            ok, r = False, Crash("AttributeError", f"{_cls_name(h.cls)} has no {func}")
        else:
            ok, r = await self.invoke(fn, event, h.state)
        if not ok:
            await self.terminate_handler(h, ("error", ("EXIT", r)), h.state, event, "crash")
            return None
        if _is_ok_state(r):
            h.state = r[1]
            return h
        if type(r) is tuple and len(r) == 5 and r[0] == "swap_handler":
            _, args1, state1, spec2, args2 = r
            return await self.do_swap(h, args1, state1, spec2, args2)
        if r == "remove_handler":
            await self.terminate_handler(h, "remove_handler", h.state, event, "normal")
            return None
        await self.terminate_handler(h, ("error", r), h.state, event, "crash")
        return None

    async def do_swap(
        self, h1: _Installed, args1: Any, state1: Any, spec2: Any, args2: Any
    ) -> _Installed | None:
        """Swap requested by a callback's return: the new handler takes h1's place."""
        how = ("swapped", spec2, h1.supervised)
        state2 = await self.terminate_handler(h1, args1, state1, "swapped", how)
        h2, raw, _ = await self.install(spec2, (args2, state2), h1.supervised)
        if h2 is None:
            self.report_failed(spec2, h1.supervised, raw)
            return None
        return h2

    def report_failed(self, spec: Any, supervised: Pid | None, raw: Any) -> None:
        """A swapped-in handler whose init failed: log it and tell the owner."""
        cls, hid = _split_spec(spec) if _is_handler_spec(spec) else (spec, _NO_ID)
        ghost = _Installed(cls, hid, None, supervised)  # a stand-in for naming and the owner
        self.report(ghost, raw, None, "init")

    # ------------------------------------------------------------------ requests

    async def notify(self, event: Any, func: str) -> None:
        kept = []
        for h in self.handlers:
            h2 = await self.update(h, func, event)
            if h2 is not None:
                kept.append(h2)
        self.handlers = kept

    def find(self, spec: Any) -> int:
        for i, h in enumerate(self.handlers):
            if h.matches(spec):
                return i
        return -1

    async def add(self, spec: Any, args: Any, supervised: Pid | None) -> tuple[str, Any]:
        h, _, reason = await self.install(spec, args, supervised)
        if h is None:
            return ("error", reason)
        self.handlers.insert(0, h)
        return ("ok", None)

    async def delete(self, spec: Any, args: Any) -> tuple[str, Any]:
        i = self.find(spec)
        if i < 0:
            return ("error", "module_not_found")
        h = self.handlers.pop(i)
        res = await self.terminate_handler(h, args, h.state, "delete", "normal")
        return ("ok", res)

    async def swap(
        self, spec1: Any, args1: Any, spec2: Any, args2: Any, sup: Pid | None
    ) -> tuple[str, Any]:
        i = self.find(spec1)
        old_sup = None
        if i < 0:
            state2: Any = "error"
        else:
            h1 = self.handlers.pop(i)
            old_sup = h1.supervised
            new_sup = sup if sup is not None else old_sup
            state2 = await self.terminate_handler(
                h1, args1, h1.state, "swapped", ("swapped", spec2, new_sup)
            )
        owner = sup if sup is not None else old_sup
        if owner is not None and sup is None:
            _api.link(owner)  # the new handler is supervised by the old one's owner
        h2, _, reason = await self.install(spec2, (args2, state2), owner)
        if h2 is None:
            return ("error", reason)
        self.handlers.insert(0, h2)
        return ("ok", None)

    async def call_handler(self, spec: Any, query: Any) -> tuple[str, Any]:
        i = self.find(spec)
        if i < 0:
            return ("error", "bad_module")
        h = self.handlers[i]
        fn = getattr(h.inst, "handle_call", None)
        if fn is None:
            ok, r = False, Crash("AttributeError", f"{_cls_name(h.cls)} has no handle_call")
        else:
            ok, r = await self.invoke(fn, query, h.state)
        if not ok:
            err = ("EXIT", r)
            del self.handlers[i]
            await self.terminate_handler(h, ("error", err), h.state, query, "crash")
            return ("error", err)
        if (
            type(r) is tuple
            and r
            and r[0] == "ok"
            and (len(r) == 3 or (len(r) == 4 and r[3] == "hibernate"))
        ):
            h.state = r[2]
            return ("ok", r[1])
        if type(r) is tuple and len(r) == 6 and r[0] == "swap_handler":
            _, reply, args1, state1, spec2, args2 = r
            h2 = await self.do_swap(h, args1, state1, spec2, args2)
            if h2 is None:
                del self.handlers[i]
            else:
                self.handlers[i] = h2
            return ("ok", reply)
        if type(r) is tuple and len(r) == 2 and r[0] == "remove_handler":
            del self.handlers[i]
            await self.terminate_handler(h, "remove_handler", h.state, query, "normal")
            return ("ok", r[1])
        del self.handlers[i]
        await self.terminate_handler(h, ("error", r), h.state, query, "crash")
        return ("error", r)

    # ------------------------------------------------------------------ exits

    async def handle_exit(self, pid: Pid, reason: Any) -> None:
        if self.parent is not None and pid == self.parent:
            await self.terminate_server(reason)
        if (
            self.parent is None
            and reason == "shutdown"
            and pid in (self.proc.parent, self.proc.pid)
        ):
            await self.terminate_server(reason)  # node shutdown (see the module docstring)
        # Supervised handlers of the dead owner go first; then every handler hears of it.
        kept = []
        for h in self.handlers:
            if h.supervised == pid:
                await self.terminate_handler(
                    h, ("stop", reason), h.state, ("parent_terminated", (pid, reason)), "shutdown"
                )
            else:
                kept.append(h)
        self.handlers = kept
        await self.notify(("EXIT", pid, reason), "handle_info")

    async def terminate_server(self, reason: Any) -> None:
        """Terminate every handler with "stop", then exit with `reason` (never returns)."""
        handlers, self.handlers = self.handlers, []
        for h in handlers:
            await self.terminate_handler(h, "stop", h.state, ("stop", reason), "shutdown")
        # Unlink the owners so our exit does not take them down; never the parent.
        for h in handlers:
            if h.supervised is not None and h.supervised != self.parent:
                _api.unlink(h.supervised)
        raise Exit(reason)

    # ------------------------------------------------------------------ system messages

    async def system(self, from_: Any, req: Any) -> None:
        if type(req) is tuple and len(req) == 2 and req[0] == "terminate":
            await self.terminate_server(req[1])
        if req == "get_state":
            _gen.system_reply(from_, self.get_state())
        elif type(req) is tuple and len(req) == 2 and req[0] == "replace_state":
            _gen.system_reply(from_, self.replace_state(req[1]))
        elif req == "suspend":
            self.suspended = self.proc.suspended = True  # process_info: "suspended"
            _gen.system_reply(from_, "ok")
        elif req == "resume":
            self.suspended = self.proc.suspended = False
            _gen.system_reply(from_, "ok")
        elif req == "get_status":
            _gen.system_reply(from_, self.get_status())
        elif type(req) is tuple and len(req) == 4 and req[0] == "code_change":
            _gen.system_reply(from_, await self.code_change(req[1], req[2], req[3]))
        elif type(req) is tuple and len(req) == 2 and req[0] == "debug":
            self.dbg, answer = _debug.request(self.proc, self.dbg, req[1], self.get_state())
            _gen.system_reply(from_, answer)
        else:
            _gen.system_reply(from_, ("error", ("unknown_system_msg", req)))

    def get_state(self) -> list[tuple[Any, Any, Any]]:
        return [(h.cls, None if h.id is _NO_ID else h.id, h.state) for h in self.handlers]

    def replace_state(self, fn: Any) -> list[tuple[Any, Any, Any]]:
        # As in Erlang: a handler whose state function fails or changes its identity keeps
        # its state; the others get theirs replaced.
        for h in self.handlers:
            cur = (h.cls, None if h.id is _NO_ID else h.id, h.state)
            try:
                new = fn(cur)
            except Exception:  # per-handler failure keeps the old state
                continue
            if type(new) is tuple and len(new) == 3 and new[0] is cur[0] and new[1] == cur[1]:
                h.state = new[2]
        return self.get_state()

    def get_status(self) -> tuple[Any, ...]:
        """OTP's sys:get_status shape, as gen_server's; unlinked, the manager is its own
        parent. The handlers read as in `get_state`."""
        me = self.proc
        sys_state = "suspended" if self.suspended else "running"
        parent = self.parent or me.pid
        misc = [
            ("header", f"Status for event handler {me.name or me.pid}"),
            ("data", [("Status", sys_state), ("Logged Events", []), ("Parent", parent)]),
            ("items", ("Installed handlers", self.get_state())),
        ]
        return ("status", me.pid, ("module", "gen_event"), [{}, sys_state, parent, [], misc])

    async def code_change(self, module: Any, old_vsn: Any, extra: Any) -> Any:
        """Run `code_change` in every handler whose class lives in `module`.

        All or nothing: when any handler's code_change fails, no handler changes.
        """
        mod = sys.modules.get(module) if type(module) is str else None
        planned = []
        for h in self.handlers:
            if h.cls.__module__ != module:
                continue
            cls = _reloaded(mod, h.cls)
            try:
                inst = cls() if cls is not h.cls else h.inst
            except Exception as e:  # reported as the change's failure
                return ("error", ("EXIT", Crash.from_exception(e)))
            fn = getattr(inst, "code_change", None)
            if fn is None:
                planned.append((h, cls, inst, h.state))
                continue
            ok, r = await self.invoke(fn, old_vsn, h.state, extra)
            if not ok:
                return ("error", ("EXIT", r))
            if not (type(r) is tuple and len(r) == 2 and r[0] == "ok"):
                return ("error", ("bad_return_value", r))
            planned.append((h, cls, inst, r[1]))
        for h, cls, inst, state in planned:
            h.cls, h.inst, h.state = cls, inst, state
        return "ok"


def _reloaded(mod: Any, cls: type) -> type:
    """The class of the same qualified name in the (re)loaded module, else `cls` itself."""
    obj: Any = mod
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return cls
    return obj if isinstance(obj, type) else cls
