"""gen_server: the generic server behaviour (Erlang's `gen_server`).

Where it sits: user callbacks (a `GenServer` subclass) → **gen_server** (the loop) →
`pyotp._gen` (start with init ack, call, reply, stop) → process primitives → scheduler.

The behaviour owns the receive loop; the user writes callbacks that take the state and return
the next one (OTP's generic/specific split). Messages the loop understands (see `_gen`):
`("$gen_call", from_, request)`, `("$gen_cast", msg)`, `("$system", from_, request)`,
`("EXIT", parent, reason)` when trapping exits; anything else goes to `handle_info`.

System requests (for `sys_` and `code`), answered with `_gen.reply(from_, value)`:
    "get_state"                          -> the state
    ("replace_state", fn)                -> the new state fn(state); if fn raises, the state is
                                            kept and the reply is
                                            ("error", ("callback_failed", crash))
    "suspend" / "resume"                 -> "ok"; while suspended only system requests are handled
    "get_status"                         -> ("status", pid, ("module", "gen_server"),
                                             [{}, "running" | "suspended", parent, [], misc])
    ("code_change", module, old_vsn, extra) -> "ok", or ("error", reason) and the old
                                            code and state are kept
    ("terminate", reason)                -> (no reply) terminate(reason, state), exit reason
    ("debug", ("statistics" | "trace", flag)) -> see `pyotp._debug` (sys_.statistics/trace)

The parent of a server is the process that started it with `start_link`; one started with
`start` is its own parent, as in OTP, so an EXIT from its starter goes to `handle_info`. Node
shutdown sends each process its "shutdown" EXIT from its parent (itself when unlinked), so a
server that traps exits runs `terminate` either way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from schedulers import current_process, deliver, get, receive_matching
from transport import BadArg, Crash, Exit, Pid, Timeout

from . import _api, _debug, _gen, net

__all__ = [
    "GenServer",
    "abcast",
    "call",
    "cast",
    "multi_call",
    "reply",
    "start",
    "start_link",
    "stop",
]

_log = logging.getLogger("pyotp.gen_server")
_crash_log = logging.getLogger("pyotp.crash")

_SPAWN_OPTS = frozenset(("scheduler", "node", "placement", "near"))


# ===================================================================== the callback base class


class GenServer:
    """Base class of a generic server; subclass it and override the callbacks.

    Client call → callback it triggers in the server process:
        `start` / `start_link`      → `init(arg)`
        `call(dest, request)`       → `handle_call(request, from_, state)`
        `cast(dest, msg)`           → `handle_cast(msg, state)`
        any other message, a timeout ("timeout"), an EXIT from a non-parent
                                    → `handle_info(msg, state)`
        a `("continue", c)` return  → `handle_continue(c, state)`
        `stop`, a stop return, a crash, an EXIT from the parent (trapping exits)
                                    → `terminate(reason, state)`
        `code.upgrade`              → `code_change(old_vsn, state, extra)`

    Callbacks may be `def` or `async def`. Return shapes:
        init: ("ok", s) | ("ok", s, extra) | ("stop", reason) | "ignore"
        handle_call: ("reply", r, s[, extra]) | ("noreply", s[, extra])
                     | ("stop", reason, r, s) | ("stop", reason, s)
        handle_cast / handle_info / handle_continue:
                     ("noreply", s[, extra]) | ("stop", reason, s)
        code_change: ("ok", s)
    where extra is a timeout in seconds (handle_info("timeout") when no message came in
    time), "hibernate", "infinity", or ("continue", c). Anything else is a crash with reason
    ("bad_return_value", value).

    The framework makes the instance with `cls()`; pass an instance to `start` instead when
    `__init__` needs arguments.
    """

    def init(self, arg: Any) -> Any:
        """Return ("ok", state); the default uses `arg` as the state."""
        return ("ok", arg)

    def handle_call(self, request: Any, from_: tuple[Pid, Any], state: Any) -> Any:
        """Answer a call; the default crashes the server, as an undefined callback in OTP."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement handle_call (request {request!r})"
        )

    def handle_cast(self, msg: Any, state: Any) -> Any:
        """Handle a cast; the default crashes the server, as an undefined callback in OTP."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement handle_cast (message {msg!r})"
        )

    def handle_info(self, msg: Any, state: Any) -> Any:
        """Handle any other message; the default logs it and keeps the state."""
        _log.warning(
            "%s: undefined handle_info for an unexpected message %r",
            type(self).__qualname__,
            msg,
        )
        return ("noreply", state)

    def handle_continue(self, cont: Any, state: Any) -> Any:
        """Continue after a ("continue", c) return; the default crashes, as in OTP."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement handle_continue ({cont!r})"
        )

    def terminate(self, reason: Any, state: Any) -> Any:
        """Clean up before the server exits with `reason`; the default does nothing."""
        return None

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Convert the state on a code upgrade; the default keeps it: ("ok", state)."""
        return ("ok", state)


# ===================================================================== client API


def _server_of(mod: Any, what: str) -> Any:
    if isinstance(mod, type):
        if not issubclass(mod, GenServer):
            raise BadArg(f"{what} expects a GenServer subclass or instance, got {mod!r}")
        return mod
    if isinstance(mod, GenServer):
        return mod
    raise BadArg(f"{what} expects a GenServer subclass or instance, got {mod!r}")


def _spawn_opts(opts: dict[str, Any], what: str) -> dict[str, Any] | None:
    if not opts:
        return None
    unknown = set(opts) - _SPAWN_OPTS
    if unknown:
        raise BadArg(
            f"{what}: unknown option(s) {sorted(unknown)}; allowed: name, timeout, "
            f"{', '.join(sorted(_SPAWN_OPTS))}"
        )
    return {k: v for k, v in opts.items() if v is not None}


async def start(
    mod: type[GenServer] | GenServer,
    arg: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    **spawn_opts: Any,
) -> Pid | None:
    """Start a server (not linked to the caller) and wait for its `init`.

    Args:
        mod: the GenServer subclass (instantiated with `cls()`) or an instance.
        arg: passed to `init(arg)`.
        name: register the server under this name before `init` runs.
        timeout: seconds to wait for `init` (None = forever); on expiry the server is killed.
        **spawn_opts: `scheduler`, `node`, `placement`, `near` as in `pyotp.spawn`.

    Returns:
        The server's pid, or None when `init` returned "ignore".

    Raises:
        StartError: `init` returned ("stop", reason) or crashed (reason), the name is taken
            (("already_started", pid)), or `timeout` passed ("timeout").
        BadArg: a wrong argument.
    """
    m = _server_of(mod, "gen_server.start")
    opts = _spawn_opts(spawn_opts, "gen_server.start")
    return await _gen.start(
        _serve,
        (m, arg),
        link=False,
        name=name,
        timeout=timeout,
        spawn_opts=opts,
        what="gen_server.start",
    )


async def start_link(
    mod: type[GenServer] | GenServer,
    arg: Any = None,
    *,
    name: str | None = None,
    timeout: float | None = None,
    **spawn_opts: Any,
) -> Pid | None:
    """Start a server linked to the caller and wait for its `init` (see `start`).

    Returns:
        The server's pid, or None when `init` returned "ignore".

    Raises:
        StartError: as for `start`.
        BadArg: a wrong argument.
    """
    m = _server_of(mod, "gen_server.start_link")
    opts = _spawn_opts(spawn_opts, "gen_server.start_link")
    return await _gen.start(
        _serve,
        (m, arg),
        link=True,
        name=name,
        timeout=timeout,
        spawn_opts=opts,
        what="gen_server.start_link",
    )


async def call(dest: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """Send `request` to the server at `dest` (pid, name or (name, node)); return its reply.

    Raises:
        CallTimeout: no reply within `timeout` seconds (a late reply is dropped).
        CallExit: the server is dead or the name unregistered ("noproc"), it died during
            the call (its exit reason), or its node is down ("noconnection").
    """
    return await _gen.call(dest, request, timeout, "gen_server.call")


def cast(dest: Any, msg: Any) -> None:
    """Send `msg` to the server's `handle_cast` without waiting; never raises for `dest`
    (a pid, a name, (name, node) or ("local"|"global", name); a cast to nobody is dropped)."""
    _gen.cast_to(dest, ("$gen_cast", msg))


def reply(from_: tuple[Pid, Any], value: Any) -> None:
    """Reply `value` to a caller (the `from_` given to `handle_call`).

    Raises:
        BadArg: `from_` is not the tuple given to `handle_call`.
    """
    _gen.reply(from_, value)


async def stop(dest: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the server at `dest`: it runs `terminate(reason, state)` and exits with `reason`.

    Raises:
        CallExit: "noproc" when there is no such server; its exit reason when it ended
            with another reason (e.g. `terminate` crashed); "calling_self" when `dest` is
            the caller.
        CallTimeout: it did not stop within `timeout` seconds.
    """
    await _gen.stop(dest, reason, timeout)


def _check_nodes(nodes: Any, what: str) -> list[str]:
    if nodes is None:
        return [_api.node(), *_api.nodes()]
    if type(nodes) not in (list, tuple) or not all(type(n) is str for n in nodes):
        raise BadArg(f"{what} expects nodes as a list of node name str (or None), got {nodes!r}")
    return list(nodes)


async def multi_call(
    nodes: list[str] | None, name: str, request: Any, timeout: float | None = None
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Call the server registered as `name` on each node in `nodes` (None: this node and
    every connected one), all at once.

    Returns:
        `(replies, bad_nodes)`: `replies` a list of `(node, reply)`; `bad_nodes` the nodes
        where no server answered (the node cannot be reached, none is registered there, it
        died, the node went down, or `timeout` passed).

    Raises:
        BadArg: `nodes` is not a list of str, `name` not a str, or a bad `timeout`.
    """
    node_list = _check_nodes(nodes, "gen_server.multi_call")
    if type(name) is not str:
        raise BadArg(f"gen_server.multi_call expects a registered name str, got {name!r}")
    _gen.check_timeout(timeout, "gen_server.multi_call")
    me = current_process("gen_server.multi_call()")
    pending: dict[Any, str] = {}
    bad: list[str] = []
    here = _api.node()
    connected = set(_api.nodes())
    loop = me.task.get_loop()
    deadline = None if timeout is None else loop.time() + timeout
    # As Erlang's: a node not connected yet is connected to first (all at once, within the
    # call's timeout); one that cannot be reached is a bad node.
    unconnected = [n for n in node_list if n != here and n not in connected]
    if unconnected:
        outcome = await net._connect_within(unconnected, timeout)
        connected.update(n for n, ok in outcome.items() if ok)
    for n in node_list:
        if n != here and n not in connected:
            bad.append(n)
            continue
        sent = _gen.send_request((name, n), request)
        if sent is None:
            bad.append(n)
        else:
            pending[sent[1]] = n
    replies: list[tuple[str, Any]] = []

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and m[0] in pending)
            or (len(m) == 5 and m[0] == "DOWN" and m[1] in pending)
        )

    sched = get()
    while pending:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            msg = await receive_matching(me, is_answer, left)
        except Timeout:
            break
        if len(msg) == 2:
            n = pending.pop(msg[0])
            sched.demonitor(me, msg[0], True)
            replies.append((n, msg[1]))
        else:
            bad.append(pending.pop(msg[1]))
    for mref, n in pending.items():
        sched.demonitor(me, mref, True)
        bad.append(n)
    return replies, bad


def abcast(nodes: list[str] | None, name: str, msg: Any) -> None:
    """Cast `msg` to the server registered as `name` on each node (None: all known nodes).

    Returns None at once. A node not connected yet is connected to in the background (the
    cast is held until then, as any send to `(name, node)`); nodes without such a server,
    and nodes that cannot be reached, are skipped silently.
    """
    current_process("gen_server.abcast()")
    node_list = _check_nodes(nodes, "gen_server.abcast")
    if type(name) is not str:
        raise BadArg(f"gen_server.abcast expects a registered name str, got {name!r}")
    for n in node_list:
        cast((name, n), msg)


# ===================================================================== the server process


def _is_system(m: Any) -> bool:
    return type(m) is tuple and len(m) == 3 and m[0] == "$system"


def _is_awaitable(r: Any) -> bool:
    return type(r) is not tuple and hasattr(r, "__await__")


async def _serve(starter: _gen.Starter, mod: Any, arg: Any) -> None:
    """The server process: run `init`, ack the starter, then loop."""
    proc = current_process()
    if isinstance(mod, type):
        try:
            mod = mod()
        except Exception as e:
            reason = Crash.from_exception(e)
            _report_init_crash(proc, mod, reason)
            starter.fail(reason)
            raise Exit(reason) from None
    proc.info = {"behaviour": "gen_server", "module": type(mod).__module__, "callback": mod}
    try:
        r = mod.init(arg)
        if _is_awaitable(r):
            r = await r
    except Exit as e:
        starter.fail(e.reason)
        raise
    except Exception as e:
        reason = Crash.from_exception(e)
        _report_init_crash(proc, mod, reason)
        starter.fail(reason)
        raise Exit(reason) from None
    if type(r) is tuple and r and r[0] == "ok" and len(r) in (2, 3):
        extra = r[2] if len(r) == 3 else None
        if extra is not None and not _valid_extra(extra):
            reason = ("bad_return_value", r)
            starter.fail(reason)
            raise Exit(reason)
        starter.ok()
        await _loop(proc, mod, r[1], proc.parent or proc.pid, extra)
        return
    if type(r) is tuple and len(r) == 2 and r[0] == "stop":
        starter.fail(r[1])
        raise Exit(r[1])
    if r == "ignore":
        starter.ignore()
        return
    reason = ("bad_return_value", r)
    starter.fail(reason)
    raise Exit(reason)


def _report_init_crash(proc: Any, mod: Any, reason: Crash) -> None:
    _crash_log.error(
        "crash report: generic server %r (%s) crashed in init:\n%s",
        proc.pid,
        _modname(mod),
        str(reason).rstrip(),
    )


def _modname(mod: Any) -> str:
    cls = mod if isinstance(mod, type) else type(mod)
    return f"{cls.__module__}.{cls.__qualname__}"


def _valid_extra(extra: Any) -> bool:
    te = type(extra)
    if te is int or te is float:
        return extra >= 0
    if te is str:
        return extra in ("hibernate", "infinity")
    return te is tuple and len(extra) == 2 and extra[0] == "continue"


class _Stop(Exception):
    """Internal: leave the loop to terminate with `reason` (and maybe reply afterwards)."""

    def __init__(self, reason: Any, state: Any, from_: Any = None, reply: Any = None) -> None:
        self.reason = reason
        self.state = state
        self.from_ = from_
        self.reply = reply


async def _loop(proc: Any, mod: Any, state: Any, parent: Pid, extra: Any) -> None:
    """The server loop: this loop *is* the gen_server. Hot path: keep it allocation-light.

    `extra` is what the last callback returned after the state (None, seconds, "hibernate",
    "infinity" or ("continue", c)); it decides how the next message is waited for.
    """
    last: Any = None
    dbg: Any = None  # sys_ statistics/trace; while None it costs one test per message
    try:
        while True:
            if dbg is not None:
                dbg.new_state(state)
            # 1. How to wait: a pending ("continue", c) runs before any message.
            timeout = None
            if extra is not None:
                te = type(extra)
                if te is tuple:
                    last = extra
                    r = mod.handle_continue(extra[1], state)
                    if _is_awaitable(r):
                        r = await r
                    state, extra = _noreply(r, state)
                    continue
                if te is not str:
                    timeout = extra
                elif extra == "hibernate" and not proc.mbox:
                    proc.mbox = None  # nothing queued: drop the deque while idle
            # 2. Next message; a timeout is delivered as the message "timeout".
            try:
                msg = await receive_matching(proc, None, timeout)
            except Timeout:
                msg = "timeout"
                last = msg
                r = mod.handle_info(msg, state)
                if _is_awaitable(r):
                    r = await r
                state, extra = _noreply(r, state)
                continue
            last = msg
            if dbg is not None:
                dbg.msg_in(msg)
            # 3. Dispatch on the message shape.
            if type(msg) is tuple and msg:
                tag = msg[0]
                if tag == "$gen_call" and len(msg) == 3:
                    from_ = msg[1]
                    r = mod.handle_call(msg[2], from_, state)
                    if _is_awaitable(r):
                        r = await r
                    if type(r) is tuple:
                        n = len(r)
                        if r[0] == "reply" and n in (3, 4):
                            extra = r[3] if n == 4 else None
                            if extra is not None and not _valid_extra(extra):
                                raise _BadReturn(r)  # as OTP: no reply, the caller exits
                            _fast_reply(from_, r[1])
                            if dbg is not None:
                                dbg.msg_out(r[1], from_)
                            state = r[2]
                            continue
                        if r[0] == "stop" and n == 4:
                            raise _Stop(r[1], r[3], from_, r[2])
                    state, extra = _noreply(r, state)
                    continue
                if tag == "$gen_cast" and len(msg) == 2:
                    r = mod.handle_cast(msg[1], state)
                    if _is_awaitable(r):
                        r = await r
                    state, extra = _noreply(r, state)
                    continue
                if tag == "$system" and len(msg) == 3:
                    mod, state, extra = await _system(proc, mod, state, parent, msg, extra)
                    dbg = proc.info.get("debug") if proc.info else None
                    continue
                if tag == "EXIT" and len(msg) == 3 and msg[1] == parent:
                    raise _Stop(msg[2], state)
            r = mod.handle_info(msg, state)
            if _is_awaitable(r):
                r = await r
            state, extra = _noreply(r, state)
    except _Stop as s:
        await _terminate(proc, mod, s.reason, s.state, last, s.from_, s.reply)
    except _BadReturn as b:
        await _terminate(proc, mod, ("bad_return_value", b.value), state, last, crash=True)
    except Exit as e:
        if proc.reason is not None:
            raise  # already dead (killed or exited by a signal): nothing more to run
        await _terminate(proc, mod, e.reason, state, last)
    except Exception as e:
        await _terminate(proc, mod, Crash.from_exception(e), state, last, crash=True)


class _BadReturn(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _noreply(r: Any, state: Any) -> tuple[Any, Any]:
    """Decode a noreply/stop return of any callback into (state, extra)."""
    if type(r) is tuple:
        n = len(r)
        k = r[0] if n else None
        if k == "noreply":
            if n == 2:
                return r[1], None
            if n == 3 and _valid_extra(r[2]):
                return r[1], r[2]
        elif k == "stop" and n == 3:
            raise _Stop(r[1], r[2])
    raise _BadReturn(r)


def _fast_reply(from_: Any, value: Any) -> None:
    # _gen.reply without its argument checks: from_ came from our own "$gen_call" message.
    try:
        pid, tag = from_
    except (TypeError, ValueError):
        return
    if type(pid) is not Pid:
        return
    p = pid._proc
    if p is not None:
        mons = p.monitors
        if mons and tag in mons:
            deliver(p, (tag, value))
        return
    sched = get()
    router = sched.router
    if router is not None and (pid.scheduler != sched.index or pid.node != sched.node):
        router.reply(pid, tag, value)  # another scheduler or node checks the alias
        return
    _gen.reply(from_, value)


async def _terminate(
    proc: Any,
    mod: Any,
    reason: Any,
    state: Any,
    last: Any,
    from_: Any = None,
    reply_value: Any = None,
    crash: bool = False,
) -> None:
    """Run `terminate(reason, state)`, log an abnormal end, exit with the final reason."""
    try:
        r = mod.terminate(reason, state)
        if _is_awaitable(r):
            await r
    except Exit as e:
        if proc.reason is not None:
            raise
        reason = e.reason
    except Exception as e:
        reason = Crash.from_exception(e)
        crash = True
    finally:
        if from_ is not None:
            _fast_reply(from_, reply_value)  # the reply of ("stop", reason, r, s) goes out last
    if crash or not _is_normal(reason):
        _crash_log.error(
            "crash report: generic server %s (%s) terminating\n"
            "** last message in: %r\n** state: %r\n** reason: %s",
            proc.name or repr(proc.pid),
            _modname(mod),
            last,
            state,
            str(reason).rstrip() if type(reason) is Crash else repr(reason),
        )
    raise Exit(reason)


def _is_normal(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (
        type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown"
    )


# ===================================================================== system messages


async def _system(
    proc: Any, mod: Any, state: Any, parent: Pid, msg: tuple, extra: Any
) -> tuple[Any, Any, Any]:
    """Answer one system request; return (mod, state, extra). May raise _Stop."""
    from_, req = msg[1], msg[2]
    if type(req) is tuple and req:
        kind = req[0]
        if kind == "terminate" and len(req) == 2:
            raise _Stop(req[1], state)
        if kind == "replace_state" and len(req) == 2:
            try:
                new = req[1](state)
                if _is_awaitable(new):
                    new = await new
            except Exception as e:
                _gen.system_reply(from_, ("error", ("callback_failed", Crash.from_exception(e))))
                return mod, state, extra
            _gen.system_reply(from_, new)
            return mod, new, extra
        if kind == "code_change" and len(req) == 4:
            mod, state = await _code_change(mod, state, req[2], req[3], from_)
            return mod, state, extra
        if kind == "debug" and len(req) == 2:
            info = proc.info if proc.info is not None else {}
            info["debug"], answer = _debug.request(proc, info.get("debug"), req[1], state)
            proc.info = info
            _gen.system_reply(from_, answer)
            return mod, state, extra
    elif req == "get_state":
        _gen.system_reply(from_, state)
        return mod, state, extra
    elif req == "get_status":
        _gen.system_reply(from_, _status(proc, mod, state, parent, "running"))
        return mod, state, extra
    elif req == "resume":
        _gen.system_reply(from_, "ok")
        return mod, state, extra
    elif req == "suspend":
        _gen.system_reply(from_, "ok")
        return await _suspended(proc, mod, state, parent, extra)
    _gen.system_reply(from_, ("error", ("unknown_system_msg", req)))
    return mod, state, extra


async def _suspended(
    proc: Any, mod: Any, state: Any, parent: Pid, extra: Any
) -> tuple[Any, Any, Any]:
    """Handle only system requests until "resume"; other messages wait in the mailbox.

    Returns (mod, state, extra) with `extra` as it was: a timeout runs again after resume,
    as OTP's loop continues with the same timeout after system messages.

    An EXIT from the parent still ends the server (as OTP's suspend loop does), so a node
    shutdown does not wait on a suspended server.
    """

    def wanted(m: Any) -> bool:
        return _is_system(m) or (
            type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == parent
        )

    proc.suspended = True  # process_info reports "suspended" (schedulers/_info.py)
    try:
        while True:
            msg = await receive_matching(proc, wanted, None)
            if msg[0] == "EXIT":
                raise _Stop(msg[2], state)
            from_, req = msg[1], msg[2]
            if req == "resume":
                _gen.system_reply(from_, "ok")
                return mod, state, extra
            if req == "suspend":
                _gen.system_reply(from_, "ok")
            elif req == "get_status":
                _gen.system_reply(from_, _status(proc, mod, state, parent, "suspended"))
            else:
                mod, state, extra = await _system(proc, mod, state, parent, msg, extra)
    finally:
        proc.suspended = False


def _status(proc: Any, mod: Any, state: Any, parent: Pid, sys_state: str) -> tuple:
    name = proc.name or proc.pid
    misc = [
        ("header", f"Status for generic server {name}"),
        ("data", [("Status", sys_state), ("Parent", parent), ("Logged events", [])]),
        ("data", [("State", state)]),
    ]
    return ("status", proc.pid, ("module", "gen_server"), [{}, sys_state, parent, [], misc])


async def _code_change(
    mod: Any, state: Any, old_vsn: Any, extra: Any, from_: Any
) -> tuple[Any, Any]:
    """Run `code_change` of the (reloaded) class; swap code and state only if it succeeds."""
    cls = type(mod)
    new_cls = cls
    module = sys.modules.get(cls.__module__)
    if module is not None:
        obj: Any = module
        for part in cls.__qualname__.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, GenServer):
            new_cls = obj
    try:
        r = new_cls.code_change(mod, old_vsn, state, extra)
        if _is_awaitable(r):
            r = await r
        if not (type(r) is tuple and len(r) == 2 and r[0] == "ok"):
            raise ValueError(f"code_change must return ('ok', state), got {r!r}")
        if new_cls is not cls:
            try:
                mod.__class__ = new_cls
            except TypeError:
                mod = new_cls()  # incompatible layout: a fresh instance of the new class
    except Exception as e:
        _gen.reply(from_, ("error", Crash.from_exception(e)))
        return mod, state
    _gen.reply(from_, "ok")
    return mod, r[1]
