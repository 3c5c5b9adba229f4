"""Shared behaviour plumbing (Erlang's `gen` + `proc_lib`): start with an init ack, call with
a monitor, reply, stop, and system messages.

Where it sits: `gen_server`/`gen_statem`/`gen_event`/`supervisor` → **_gen** → process
primitives (`pyotp._api`) → scheduler.

Wire shapes (private; every behaviour loop understands them):
    ("$gen_call", from_, request)      a call; `from_` = (caller pid, tag ref)
    ("$gen_cast", msg)                 a cast
    ("$system", from_, request)        sys_/stop: ("terminate", reason), "get_state",
                                       ("replace_state", fn), "suspend", "resume",
                                       "get_status", ("code_change", module, old_vsn, extra)
    (tag, reply)                       a reply to a call

A call monitors the server and uses the monitor ref as its tag. A reply is delivered only
while the caller still holds that monitor (Erlang's alias): once a call timed out and
demonitored, a late reply is dropped, so it never lands in the caller's mailbox.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from schedulers import current_process, deliver, get, receive_matching, self_pid
from schedulers._process import _counts as _parked
from schedulers._process import _current
from transport import (
    BadArg,
    CallExit,
    CallTimeout,
    NotInProcess,
    NotSerializable,
    Pid,
    Ref,
    StartError,
    Timeout,
)

from . import _api
from ._api import check_timeout

_current_get = _current.get

__all__ = [
    "Starter",
    "call",
    "cast_to",
    "check_timeout",
    "reply",
    "send_request",
    "start",
    "stop",
    "system_call",
    "system_reply",
]


# pyotp.global_ (which builds on gen_server, which builds on this module) sets itself here.
global_names: Any = None


def _check_name(name: Any, what: str) -> None:
    if name is None:
        return
    if type(name) is str and name:
        return
    if (
        type(name) is tuple and len(name) == 2 and name[0] in ("local", "global")
        and type(name[1]) is str and name[1]
    ):
        return
    raise BadArg(f"{what}: name must be a str (or ('local'|'global', str)), got {name!r}")


class Starter:
    """Internal: the new process's side of a synchronous start (proc_lib's init_ack).

    The body calls exactly one of `ok()`, `ignore()` or `fail(reason)`.
    """

    __slots__ = ("parent", "tag", "acked")

    def __init__(self, parent: Pid, tag: Any) -> None:
        self.parent = parent
        self.tag = tag
        self.acked = False

    def _ack(self, result: Any) -> None:
        if not self.acked:
            self.acked = True
            _api.send(self.parent, ("$ack", self.tag, result))

    def ok(self) -> None:
        """Tell the starter that init succeeded."""
        self._ack(("ok", self_pid()))

    def ignore(self) -> None:
        """Tell the starter that init returned "ignore" (the process then exits normally)."""
        _api.unlink(self.parent)
        self._ack(("ignore",))

    def fail(self, reason: Any) -> None:
        """Tell the starter that init failed with `reason` (the process then exits)."""
        # Unlink first: a failed start raises StartError in the caller, it does not kill it.
        _api.unlink(self.parent)
        self._ack(("error", reason))


async def _start_body(
    body: Callable[..., Awaitable[Any]], parent: Pid, tag: Any, name: Any, args: tuple,
    link: bool = True,
) -> Any:
    # Built here, not passed in: the starter's fields are terms, so a start can cross
    # schedulers and nodes.
    starter = Starter(parent, tag)
    if not link:
        # OTP: a process started without a link is its own parent, so an EXIT from the
        # starter is an ordinary message (handle_info), not a parent exit.
        current_process("start").parent = None
    if type(name) is tuple and name[0] == "global":
        if not await global_names.register_name(name[1], self_pid()):
            starter.fail(("already_started", global_names.whereis_name(name[1])))
            return None
    elif name is not None:
        local = name if type(name) is str else name[1]
        try:
            await _api.register(local, self_pid())
        except BadArg:
            starter.fail(("already_started", _api.whereis(local)))
            return None
    return await body(starter, *args)


async def start(
    body: Callable[..., Awaitable[Any]],
    args: tuple,
    *,
    link: bool,
    name: Any = None,
    timeout: float | None = None,
    spawn_opts: dict[str, Any] | None = None,
    what: str = "start",
) -> Pid | None:
    """Spawn `body(starter, *args)` and wait for its init ack.

    Behind the scenes:
    1. The caller monitors (and with `link`, links) the new process.
    2. The new process registers `name` (if any) before anything else, then runs `body`.
    3. `body` acks ok / ignore / error; a death before the ack is an error with its reason.

    Returns:
        The pid, or None when init returned "ignore".

    Raises:
        StartError: init failed (its reason), the name was taken (("already_started", pid)),
            or no ack came within `timeout` ("timeout"; the new process is killed).
    """
    check_timeout(timeout, what)
    _check_name(name, what)
    me = current_process(f"{what}()")
    tag = _api.make_ref()
    pid, mref = _api.spawn(
        _start_body, body, me.pid, tag, name, args, link, link=link, monitor=True,
        **(spawn_opts or {}),
    )

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 3 and m[0] == "$ack" and m[1] == tag)
            or (len(m) == 5 and m[0] == "DOWN" and m[1] == mref)
        )

    try:
        msg = await receive_matching(me, is_answer, timeout, (tag,))
    except Timeout:
        _api.unlink(pid)
        _api.exit(pid, "kill")
        _api.demonitor(mref, flush=True)
        raise StartError("timeout", f"{what}: init did not finish in {timeout} s") from None
    if msg[0] == "DOWN":
        reason = msg[4]
        _flush_exit(me, pid)
        raise StartError(reason, f"{what}: the process died in init with reason {reason!r}")
    _api.demonitor(mref, flush=True)
    result = msg[2]
    if result[0] == "ok":
        return pid
    if result[0] == "ignore":
        _flush_exit(me, pid)
        return None
    reason = result[1]
    _flush_exit(me, pid)
    raise StartError(reason, f"{what}: init failed with reason {reason!r}")


def _flush_exit(me: Any, pid: Pid) -> None:
    # A start_link caller that traps exits must not find an EXIT of a child that never
    # started (it was unlinked before failing, but may have died of a signal first).
    if me.mbox:
        for i, m in enumerate(me.mbox):
            if type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == pid:
                me.remove_at(i)
                break


def cast_to(dest: Any, msg: Any) -> None:
    """Send `msg` to the behaviour at `dest` (pid, name, (name, node), ("local"|"global",
    name)); a cast to nobody is dropped, as in OTP."""
    try:
        pid = _resolve(dest) if type(dest) is tuple else dest
        if pid is not None:
            _api.send(pid, msg)
    except NotSerializable:
        raise  # the message itself is bad: that is the caller's error, whoever `dest` is
    except BadArg:
        pass


def _resolve(dest: Any) -> Pid | tuple[str, str] | None:
    if type(dest) is Pid:
        return dest
    if type(dest) is str:
        return _api.whereis(dest)
    if type(dest) is tuple and len(dest) == 2:
        if dest[0] == "local" and type(dest[1]) is str:
            return _api.whereis(dest[1])
        if dest[0] == "global" and type(dest[1]) is str:
            return global_names.whereis_name(dest[1])
        if type(dest[0]) is str and type(dest[1]) is str and dest[1] == _api.node():
            return _api.whereis(dest[0])
        if type(dest[0]) is str and type(dest[1]) is str:
            return dest  # a name on another node: that node resolves it
    raise BadArg(f"expected a Pid, a registered name or (name, node) as destination, got {dest!r}")


async def call(dest: Any, request: Any, timeout: float | None = 5.0, what: str = "call") -> Any:
    """Send `request` to the behaviour at `dest` and wait for its reply.

    Raises:
        CallTimeout: no reply within `timeout` seconds (a late reply is dropped).
        CallExit: the server is dead or unregistered ("noproc"), dies during the call (its
            exit reason), or its node is down ("noconnection"); "calling_self" for a call to
            the caller itself.
    """
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        check_timeout(timeout, what)
    me = _current_get(None)
    if me is None:
        raise NotInProcess(f"{what}()")
    pid = dest if type(dest) is Pid else _resolve(dest)
    if pid is None:
        raise CallExit("noproc", f"{what} to {dest!r}: no such process (noproc)")
    sched = get()
    # Receive marker: the reply holds mref, so nothing queued before the monitor can match.
    # Take the position first: monitoring a dead pid queues its DOWN at once.
    mbox = me.mbox
    pos = len(mbox) if mbox else 0
    server = pid._proc if type(pid) is Pid else None  # (name, node): resolved there
    if server is not None:
        # Hot path, a live process of this scheduler: the monitor and the send inlined
        # (what sched.monitor and _api.send do for a local pid).
        if server is me:
            raise CallExit("calling_self", f"{what}: a process cannot call itself")
        n = sched.next_ref
        sched.next_ref = n + 1
        mref = Ref(sched.node, sched.index, sched.creation, n)
        if me.monitors is None:
            me.monitors = {mref: pid}
        else:
            me.monitors[mref] = pid
        if server.watchers is None:
            server.watchers = {mref: (me.pid, pid)}
        else:
            server.watchers[mref] = (me.pid, pid)
        me.marker_ref = mref
        me.marker_pos = pos
        msg = ("$gen_call", (me.pid, mref), request)
        w = server.waiter
        if w is not None and server.matcher is None and not w.done():
            server.waiter = None
            _parked[0] -= 1
            w.set_result(msg)
        else:
            deliver(server, msg)
    else:
        if pid == me.pid:
            raise CallExit("calling_self", f"{what}: a process cannot call itself")
        router = sched.router
        if router is not None and type(pid) is Pid and not sched.is_local(pid):
            # Another scheduler or node: monitor and request in one frame, sent now; then
            # poll a moment for the reply.
            mref = router.gen_call(me, pid, request)
            me.marker_ref = mref
            me.marker_pos = pos
            if timeout != 0:
                router.await_reply(me)
        else:
            mref = sched.monitor(me, pid)
            me.marker_ref = mref
            me.marker_pos = pos
            _api.send(pid, ("$gen_call", (me.pid, mref), request))
            if router is not None and timeout != 0 and type(pid) is not Pid:
                router.await_reply(me)  # (name, node): send now, poll a moment

    def is_answer(m: Any) -> bool:
        if type(m) is not tuple:
            return False
        n = len(m)
        if n == 2:
            tag = m[0]
            return tag is mref or tag == mref  # a local reply carries the very ref
        return n == 5 and m[0] == "DOWN" and m[1] == mref

    try:
        msg = await receive_matching(me, is_answer, timeout, (mref,))
    except Timeout:
        sched.demonitor(me, mref, True)
        raise CallTimeout("timeout", f"{what} to {dest!r} timed out after {timeout} s") from None
    if len(msg) == 2:
        # The reply: drop the monitor. Inlined for a live local server (whose monitor is
        # still held, so no DOWN of it can be queued); anything else takes the full path.
        mons = me.monitors
        target = mons.pop(mref, None) if mons else None
        t = target._proc if target is not None else None
        if t is not None:
            if t.watchers:
                t.watchers.pop(mref, None)
        else:
            if target is not None:
                mons[mref] = target
            sched.demonitor(me, mref, True)
        return msg[1]
    reason = msg[4]
    raise CallExit(reason, f"{what} to {dest!r} failed: the server exited with {reason!r}")


def send_request(dest: Any, request: Any) -> Any:
    """Internal: fire a call without waiting; return `(pid, mref)` or None for noproc."""
    me = current_process("send_request()")
    pid = _resolve(dest)
    if pid is None:
        return None
    mref = get().monitor(me, pid)
    _api.send(pid, ("$gen_call", (me.pid, mref), request))
    return pid, mref


def reply(from_: tuple[Pid, Any], value: Any) -> None:
    """Reply `value` to the caller identified by `from_` (as passed to handle_call).

    The reply is dropped when the caller has given up on the call (timed out).
    """
    if type(from_) is not tuple or len(from_) != 2 or type(from_[0]) is not Pid:
        raise BadArg(f"reply expects the from_ tuple given to the callback, got {from_!r}")
    pid, tag = from_
    proc = pid._proc
    if proc is not None:
        if proc.monitors and tag in proc.monitors:
            deliver(proc, (tag, value))
        return
    sched = get()
    local = sched.lookup(pid) if sched is not None else None
    if local is not None:  # a pid rebuilt from its fields (e.g. decoded from a frame)
        if local.monitors and tag in local.monitors:
            deliver(local, (tag, value))
    elif sched is not None and sched.router is not None and not sched.is_local(pid):
        sched.router.reply(pid, tag, value)  # another scheduler or node checks the alias


async def system_call(
    dest: Any, request: Any, timeout: float | None = 5.0, what: str = "sys"
) -> Any:
    """Send the system request `("$system", from_, request)` and wait for its reply.

    The request shapes are listed in the module docstring; `pyotp.sys_` and `pyotp.code` use
    this. A process that is not a behaviour never answers, so such a call times out.

    Raises:
        CallTimeout: no reply within `timeout` seconds (a late reply is dropped).
        CallExit: as for `call` ("noproc" for a dead process or an unregistered name).
    """
    check_timeout(timeout, what)
    me = current_process(f"{what}()")
    pid = _resolve(dest)
    if pid is None:
        raise CallExit("noproc", f"{what} {dest!r}: no such process (noproc)")
    if pid == me.pid:
        raise CallExit("calling_self", f"{what}: a process cannot call itself")
    sched = get()
    mref = sched.monitor(me, pid)
    _api.send(pid, ("$system", (me.pid, mref), request))

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and m[0] == mref)
            or (len(m) == 5 and m[0] == "DOWN" and m[1] == mref)
        )

    try:
        msg = await receive_matching(me, is_answer, timeout, (mref,))
    except Timeout:
        sched.demonitor(me, mref, True)
        raise CallTimeout("timeout", f"{what} {dest!r} timed out after {timeout} s") from None
    if len(msg) == 2:
        sched.demonitor(me, mref, True)
        value = msg[1]
        if type(value) is tuple and len(value) == 2 and value[0] == _SYS_ERROR:
            reason, text = value[1]
            raise BadArg(f"{what} {dest!r}: its answer cannot reach this process: {text}",
                         reason)
        return value
    reason = msg[4]
    raise CallExit(reason, f"{what} {dest!r} failed: the process exited with {reason!r}")


_SYS_ERROR = "$sys_error"


def system_reply(from_: tuple[Pid, Any], value: Any) -> None:
    """Reply to a system message (same alias rule as `reply`).

    A value that cannot reach the caller (no term, or over max_message_size, for a caller on
    another scheduler or node) is answered with an error the caller raises: a debugging
    call must never crash the process it looks at.
    """
    try:
        reply(from_, value)
    except BadArg as exc:  # NotSerializable too
        reply(from_, (_SYS_ERROR, (getattr(exc, "reason", "badarg"), str(exc))))


async def stop(dest: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stop the behaviour at `dest` with `reason`, waiting until it has terminated.

    Raises:
        CallExit: "noproc" when there is no such process; the exit reason when it ended
            with another reason than the one asked for; "calling_self" when `dest` is the
            caller (it could never see itself stop).
        CallTimeout: it did not stop within `timeout` seconds.
    """
    check_timeout(timeout, "stop")
    me = current_process("stop()")
    pid = _resolve(dest)
    if pid is None:
        raise CallExit("noproc", f"stop {dest!r}: no such process (noproc)")
    if pid == me.pid:
        raise CallExit("calling_self", "stop: a process cannot stop itself this way "
                       "(return a stop tuple or raise pyotp.Exit)")
    sched = get()
    mref = sched.monitor(me, pid)
    _api.send(pid, ("$system", (me.pid, mref), ("terminate", reason)))

    def is_down(m: Any) -> bool:
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == mref

    try:
        msg = await receive_matching(me, is_down, timeout, (mref,))
    except Timeout:
        sched.demonitor(me, mref, True)
        raise CallTimeout("timeout", f"stop {dest!r} timed out after {timeout} s") from None
    got = msg[4]
    if got == "noproc":
        raise CallExit("noproc", f"stop {dest!r}: no such process (noproc)")
    if got != reason:
        raise CallExit(got, f"stop {dest!r}: it exited with {got!r}")

