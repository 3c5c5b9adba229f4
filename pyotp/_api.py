"""Process primitives: spawn, send, link, monitor, exit, registry, refs, timers, introspection.

Where it sits: user code → **pyotp._api** (argument checks, then the scheduler) →
`schedulers` (pid table, mailboxes, signals) → `transport` when a pid lives elsewhere.
This module is the one seam between the public API and the scheduler of this OS process.
"""

from __future__ import annotations

from typing import Any, Callable

from schedulers import _router as _router_mod
from schedulers import _scheduler as _sched_mod
from schedulers import current_process, deliver, get, receive_matching
from schedulers._info import info_of
from schedulers._load import SchedulerStatistics, choose_scheduler
from schedulers._process import _counts as _parked
from schedulers._process import _current
from transport import BadArg, CallTimeout, Exit, NotInProcess, Pid, Ref, Timeout
from transport._codec import to_wire

__all__ = [
    "cancel_timer",
    "demonitor",
    "exit",
    "link",
    "make_ref",
    "monitor",
    "monitor_node",
    "node",
    "nodes",
    "process_flag",
    "process_info",
    "processes",
    "register",
    "registered",
    "scheduler_statistics",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "unlink",
    "unregister",
    "whereis",
]


def _scheduler(what: str) -> Any:
    sched = get()
    if sched is None:
        raise NotInProcess(what)
    return sched


def _check_pid(pid: Any, what: str) -> None:
    if type(pid) is not Pid:
        raise BadArg(f"{what} expects a pyotp.Pid, got {type(pid).__name__}: {pid!r}")


def _raise_if_dead(proc: Any) -> None:
    # A signal handled inside this call ended the calling process: stop it now.
    if proc.reason is not None:
        raise Exit(proc.reason)


# --------------------------------------------------------------------- spawn


def spawn(
    fn: Callable[..., Any],
    *args: Any,
    link: bool = False,
    monitor: bool = False,
    scheduler: int | None = None,
    node: str | None = None,
    placement: Any = None,
    near: Pid | None = None,
    trap_exit: bool = False,
) -> Any:
    """Start a green process running `fn(*args)` (`async def` or plain).

    Args:
        link: link the new process to the caller.
        monitor: monitor it; the call then returns `(pid, ref)`.
        scheduler: the scheduler index to run on (default: this one).
        node: the node to run on (default: this one).
        placement: `"auto"` to pick the least-loaded scheduler (this one for a function or
            arguments that cannot cross to another).
        near: a pid whose scheduler the new process should share.
        trap_exit: start with `trap_exit` set.

    Returns:
        The new pid, or `(pid, ref)` with `monitor=True`.

    Raises:
        BadArg: `fn` is not callable, a flag is not a bool, or a placement option names no
            scheduler or node.
        NotInProcess: `link`/`monitor` requested from outside a process, or no runtime.
    """
    if not callable(fn):
        raise BadArg(f"spawn expects a callable, got {type(fn).__name__}: {fn!r}")
    if (
        not (link is False or link is True)
        or not (monitor is False or monitor is True)
        or not (trap_exit is False or trap_exit is True)
    ):
        raise BadArg(
            f"spawn link=, monitor= and trap_exit= expect a bool, got link={link!r}, "
            f"monitor={monitor!r}, trap_exit={trap_exit!r}"
        )
    sched = get()
    if sched is None:
        raise NotInProcess("pyotp.spawn()")
    parent = current_process("pyotp.spawn()") if (link or monitor) else _caller()
    if placement is not None and placement != "auto" and placement_resolver is not None:
        node = placement_resolver(placement)  # a placement.Spec: the node it picks
        placement = "auto" if node == sched.node else None
    if node is not None and node != sched.node:
        if type(node) is not str or sched.router is None or sched.router.ports is None:
            raise BadArg(f"spawn node={node!r}: this node is not distributed (use run(name=))")
        if scheduler is not None and (type(scheduler) is not int or scheduler < 0):
            raise BadArg(f"spawn scheduler= expects an int index >= 0, got {scheduler!r}")
        return sched.router.spawn(
            scheduler or 0, fn, args, parent, link, monitor, trap_exit, node=node
        )
    if scheduler is not None or node is not None or placement is not None or near is not None:
        target = _place(sched, scheduler, node, placement, near)
        if target != sched.index:
            try:
                return sched.router.spawn(target, fn, args, parent, link, monitor, trap_exit)
            except BadArg:
                if placement != "auto" or scheduler is not None or near is not None:
                    raise
                # Implicit placement: what cannot cross (a lambda, a closure, arguments
                # that are no terms) runs here, whichever scheduler the load favoured.
                sched.router.pending_spawns[target] -= 1
    return sched.spawn(fn, args, parent, link, monitor, trap_exit)


# Set by pyotp.placement: resolves a placement.Spec to a node name for spawn.
placement_resolver: Callable[[Any], str] | None = None


def _caller() -> Any:
    return _current.get(None)


def _place(sched: Any, scheduler: Any, node: Any, placement: Any, near: Any) -> int:
    """Return the scheduler index a spawn goes to (explicit, near a pid, or least loaded)."""
    router = sched.router
    if node is not None and type(node) is not str:
        raise BadArg(f"spawn node= expects a node name str, got {node!r}")
    if placement is not None and placement != "auto":
        raise BadArg(f"spawn placement= expects 'auto', got {placement!r}")
    if near is not None:
        _check_pid(near, "spawn near=")
    if scheduler is not None:
        if type(scheduler) is not int or scheduler < 0:
            raise BadArg(f"spawn scheduler= expects an int index >= 0, got {scheduler!r}")
        if scheduler != sched.index and (router is None or scheduler not in router.creations):
            count = _scheduler_count(sched)
            if scheduler >= count:
                raise BadArg(
                    f"spawn scheduler={scheduler}: this node has schedulers 0..{count - 1}"
                )
        return scheduler
    if near is not None and near.node == sched.node and near.scheduler < _scheduler_count(sched):
        return near.scheduler
    if placement == "auto" and router is not None:
        target = choose_scheduler(sched)
        router.pending_spawns[target] = router.pending_spawns.get(target, 0) + 1
        return target
    return sched.index


def _scheduler_count(sched: Any) -> int:
    router = sched.router
    return 1 if router is None else max(router.creations.keys() | {sched.index}) + 1


def spawn_link(fn: Callable[..., Any], *args: Any, **opts: Any) -> Pid:
    """Spawn `fn(*args)` linked to the caller (see `spawn`)."""
    if opts:
        return spawn(fn, *args, link=True, **opts)
    sched = get()
    if sched is None or not callable(fn):
        return spawn(fn, *args, link=True)  # the checks and their errors live there
    return sched.spawn(fn, args, current_process("pyotp.spawn_link()"), True, False, False)


def spawn_monitor(fn: Callable[..., Any], *args: Any, **opts: Any) -> tuple[Pid, Ref]:
    """Spawn `fn(*args)` monitored by the caller; return `(pid, ref)` (see `spawn`)."""
    if opts:
        return spawn(fn, *args, monitor=True, **opts)
    sched = get()
    if sched is None or not callable(fn):
        return spawn(fn, *args, monitor=True)
    return sched.spawn(fn, args, current_process("pyotp.spawn_monitor()"), False, True, False)


# --------------------------------------------------------------------- send


def send(dest: Pid | str | tuple[str, str], msg: Any) -> Any:
    """Send `msg` to `dest` (a pid, a registered name, or `(name, node)`); return `msg`.

    Sending to a dead pid, or to `(name, node)` that nobody holds (this node included),
    drops the message silently, as in Erlang.

    Raises:
        BadArg: `dest` is a bare name nobody has registered, or not a pid/name/(name, node).
        NotSerializable: `msg` is not a term and would cross a scheduler or node.
    """
    if type(dest) is Pid:
        proc = dest._proc
        if proc is not None:
            w = proc.waiter
            if w is not None and proc.matcher is None and not w.done():
                proc.waiter = None
                _parked[0] -= 1
                w.set_result(msg)
            else:
                deliver(proc, msg)
            return msg
        tail = _router_mod.stream_tail
        if dest is tail.pid and tail.append(msg):
            return msg
        return _send_elsewhere(dest, msg)
    return _send_named(dest, msg)


def _send_elsewhere(pid: Pid, msg: Any) -> Any:
    sched = _sched_mod._sched
    if sched is None:
        raise NotInProcess("pyotp.send()")
    if pid.scheduler != sched.index or pid.node != sched.node:
        router = sched.router  # another scheduler or node
        if router is not None:
            router.send(pid, msg)
        return msg
    proc = sched.lookup(pid)  # a pid rebuilt from its fields still reaches a live process
    if proc is not None:
        deliver(proc, msg)
    return msg


def _send_named(dest: Any, msg: Any) -> Any:
    sched = get()
    if sched is None:
        raise NotInProcess("pyotp.send()")
    if type(dest) is str:
        pid = sched.names.get(dest)
        if pid is None:
            raise BadArg(f"send: no process is registered as {dest!r}", "badarg")
        return send(pid, msg)
    if type(dest) is tuple and len(dest) == 2 and type(dest[0]) is str and type(dest[1]) is str:
        name, node_name = dest
        if node_name == sched.node:
            pid = sched.names.get(name)
            if pid is None:
                to_wire(msg)  # still refuse a non-term, as for any (name, node)
                return msg  # Erlang: {Name, node()} ! Msg to nobody is dropped, no badarg
            return send(pid, msg)
        if sched.router is not None:
            sched.router.send_named(node_name, name, msg)
        return msg  # to an unknown name there, or an unreachable node: dropped, as in Erlang
    raise BadArg(
        f"send expects a Pid, a registered name str or a (name, node) tuple, got {dest!r}"
    )


# --------------------------------------------------------------------- links, monitors, exits


def link(pid: Pid) -> None:
    """Link the caller and `pid` both ways; a dead `pid` sends the caller "noproc".

    Raises:
        BadArg: `pid` is not a Pid.
        Exit: with "noproc", when `pid` is dead and the caller does not trap exits.
    """
    proc = current_process("pyotp.link()")
    _check_pid(pid, "link")
    get().link(proc, pid)


def unlink(pid: Pid) -> None:
    """Remove the link between the caller and `pid`, if any."""
    proc = current_process("pyotp.unlink()")
    _check_pid(pid, "unlink")
    get().unlink(proc, pid)


def monitor(target: Pid | str | tuple[str, str]) -> Ref:
    """Monitor a pid or a registered name; return the monitor's ref.

    When the target exits the caller gets `("DOWN", ref, "process", pid_or_(name, node),
    reason)`; a dead target or unknown name gives an immediate DOWN with "noproc".

    Raises:
        BadArg: `target` is not a Pid, a name, or `(name, node)`.
    """
    proc = current_process("pyotp.monitor()")
    if not (
        type(target) is Pid
        or type(target) is str
        or (type(target) is tuple and len(target) == 2 and all(type(x) is str for x in target))
    ):
        raise BadArg(f"monitor expects a Pid, a name or (name, node), got {target!r}")
    return get().monitor(proc, target)


def demonitor(ref: Ref, flush: bool = False) -> bool:
    """Remove the monitor `ref`; with `flush=True` also drop its DOWN message if queued."""
    proc = current_process("pyotp.demonitor()")
    if type(ref) is not Ref:
        raise BadArg(f"demonitor expects a monitor Ref, got {ref!r}")
    if type(flush) is not bool:
        raise BadArg(f"demonitor flush= expects a bool, got {flush!r}")
    return get().demonitor(proc, ref, flush)


def exit(pid: Pid, reason: Any) -> None:  # noqa: A001 - Erlang's name, used as pyotp.exit
    """Send an exit signal with `reason` to `pid` (Erlang's `exit/2`).

    "kill" cannot be trapped (the target dies with "killed"); "normal" does nothing to a
    target that does not trap exits, unless the target is the caller.

    Raises:
        BadArg: `pid` is not a Pid.
    """
    proc = current_process("pyotp.exit()")
    _check_pid(pid, "exit")
    get().exit_signal(proc.pid, pid, reason)
    _raise_if_dead(proc)


def process_flag(flag: str, value: Any) -> Any:
    """Set a process flag of the caller and return its old value (only "trap_exit").

    Raises:
        BadArg: an unknown flag or a non-bool value.
    """
    proc = current_process("pyotp.process_flag()")
    if flag != "trap_exit":
        raise BadArg(f"process_flag: unknown flag {flag!r}; supported: 'trap_exit'")
    if type(value) is not bool:
        raise BadArg(f"process_flag('trap_exit', value) expects a bool, got {value!r}")
    old = proc.trap_exit
    proc.trap_exit = value
    return old


# --------------------------------------------------------------------- registry


def _check_name(name: Any, what: str) -> None:
    if type(name) is not str or not name:
        raise BadArg(f"{what} expects a non-empty name str, got {name!r}")
    if name == "undefined":
        raise BadArg(f"{what}: the name 'undefined' is reserved")


_WAIT = 10.0  # default seconds the node-wide calls below wait on another scheduler


def check_timeout(timeout: Any, what: str) -> None:
    """Raise BadArg unless `timeout` is None or a number of seconds >= 0."""
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        raise BadArg(f"{what}: timeout must be None or seconds >= 0, got {timeout!r}")


def _answer(result: Any, what: str, timeout: float | None) -> Any:
    """The value of a `_scheduler_call` result; CallTimeout when none came in time."""
    if result == ("error", "timeout"):
        raise CallTimeout("timeout", f"{what}: no answer from the scheduler in {timeout} s")
    return result


async def register(name: str, pid: Pid, timeout: float | None = _WAIT) -> bool:
    """Register `name` for `pid`, node-wide: once this returns, every scheduler sees it.

    Returns True (Erlang's `true`).

    Raises:
        BadArg: the name is taken, `pid` is dead, or `pid` already has a name.
        CallTimeout: the registrar (scheduler 0) did not answer within `timeout` seconds.
    """
    proc = current_process("pyotp.register()")
    _check_name(name, "register")
    _check_pid(pid, "register")
    check_timeout(timeout, "register")
    sched = get()
    if sched.router is None:
        sched.register(name, pid)
        return True
    result = _answer(await _scheduler_call(proc, 0, "register", (name, pid), timeout),
                     "register", timeout)
    if result[0] != "ok":
        raise BadArg(f"register: {result[1]}", "badarg")
    return True


async def unregister(name: str, timeout: float | None = _WAIT) -> None:
    """Remove the registered `name`, node-wide.

    Raises:
        BadArg: nobody holds `name`.
        CallTimeout: the registrar (scheduler 0) did not answer within `timeout` seconds.
    """
    proc = current_process("pyotp.unregister()")
    _check_name(name, "unregister")
    check_timeout(timeout, "unregister")
    sched = get()
    if sched.router is None:
        sched.unregister(name)
        return
    result = _answer(await _scheduler_call(proc, 0, "unregister", name, timeout),
                     "unregister", timeout)
    if result[0] != "ok":
        raise BadArg(f"unregister: {result[1]}", "badarg")


async def _scheduler_call(
    proc: Any, peer: int, op: str, args: Any, timeout: float | None = _WAIT,
    node: str | None = None,
) -> Any:
    """Ask scheduler `peer` (of `node`) to run `op`; return ("ok", x) / ("error", why), or
    ("error", "timeout") when no answer came within `timeout` seconds (None: no limit)."""
    sched = get()
    tag = sched.make_ref()
    proc.marker_ref = tag
    proc.marker_pos = len(proc.mbox) if proc.mbox else 0
    sched.router.call(peer, op, args, proc.pid, tag, node=node)

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and len(m) == 2 and m[0] == tag

    try:
        msg = await receive_matching(proc, is_answer, timeout, (tag,))
    except Timeout:
        return ("error", "timeout")
    return msg[1]


def whereis(name: str) -> Pid | None:
    """Return the pid registered as `name`, or None."""
    sched = _scheduler("pyotp.whereis()")
    if type(name) is not str:
        raise BadArg(f"whereis expects a name str, got {name!r}")
    return sched.names.get(name)


def registered() -> list[str]:
    """Return every registered name of the node."""
    return list(_scheduler("pyotp.registered()").names)


# --------------------------------------------------------------------- refs, timers


def make_ref() -> Ref:
    """Return a reference unique across the cluster.

    It also marks the caller's mailbox, so a `receive` for a message holding this ref skips
    every message that was queued before it was made.
    """
    proc = _caller()
    sched = _scheduler("pyotp.make_ref()")
    ref = sched.make_ref()
    if proc is not None:
        proc.marker_ref = ref
        proc.marker_pos = len(proc.mbox) if proc.mbox else 0
    return ref


def send_after(seconds: float, dest: Pid | str | tuple[str, str], msg: Any) -> Ref:
    """Send `msg` to `dest` after `seconds`; return a timer ref for `cancel_timer`.

    Raises:
        BadArg: `seconds` is not a number >= 0, or `dest` not a pid, name or (name, node).
        NotSerializable: `msg` is not a term and `dest` is on another scheduler or node.
    """
    sched = _scheduler("pyotp.send_after()")
    if type(seconds) not in (int, float) or not seconds >= 0:  # NaN too
        raise BadArg(f"send_after expects seconds >= 0, got {seconds!r}")
    if not (
        type(dest) is Pid
        or type(dest) is str
        or (type(dest) is tuple and len(dest) == 2 and all(type(x) is str for x in dest))
    ):
        raise BadArg(
            f"send_after expects a Pid, a registered name str or a (name, node) tuple as "
            f"destination, got {dest!r}"
        )
    # A message that will cross a scheduler or node must be a term: refused now, as `send`
    # would, not dropped when the timer fires.
    target = sched.names.get(dest) if type(dest) is str else dest
    if type(target) is Pid:
        if target.scheduler != sched.index or target.node != sched.node:
            to_wire(msg)
    elif type(target) is tuple and target[1] != sched.node:
        to_wire(msg)
    return sched.send_after(seconds, dest, msg, send)


def cancel_timer(tref: Ref) -> float | None:
    """Cancel a `send_after` timer; return the seconds that were left, or None if it fired.

    Works from any process of the node. A timer lives on the scheduler that made it; from
    another scheduler the cancel is sent there and the time left is read from the deadline
    the ref carries, so a timer that comes due while the cancel is in flight may still fire
    (as with Erlang's asynchronous cancel). A ref that is not a live timer gives None.
    """
    sched = _scheduler("pyotp.cancel_timer()")
    if type(tref) is not Ref:
        raise BadArg(f"cancel_timer expects a timer Ref, got {tref!r}")
    return sched.cancel_timer(tref)


# --------------------------------------------------------------------- introspection


async def processes(timeout: float | None = _WAIT) -> list[Pid]:
    """Return the pids of every live process of the node (all its schedulers).

    Raises:
        CallTimeout: a scheduler did not answer within `timeout` seconds (all in all).
    """
    proc = current_process("pyotp.processes()")
    check_timeout(timeout, "processes")
    sched = get()
    pids = [p.pid for p in sched.procs.values()]
    if sched.router is not None:
        deadline = None if timeout is None else sched.loop.time() + timeout
        for peer in sorted(sched.router.creations):
            if peer != sched.index:
                left = None if deadline is None else max(0.0, deadline - sched.loop.time())
                result = _answer(await _scheduler_call(proc, peer, "processes", None, left),
                                 "processes", timeout)
                if result[0] == "ok":
                    pids.extend(result[1])
    return pids


async def process_info(pid: Pid, timeout: float | None = _WAIT) -> dict[str, Any] | None:
    """Return a dict describing `pid`, or None when it is dead.

    Keys: status, message_queue_len, links, monitors, registered_name, trap_exit, scheduler,
    node, current_function, reductions, memory (an estimate in bytes).

    Raises:
        CallTimeout: the scheduler (or node) of `pid` did not answer within `timeout` s.
    """
    me = current_process("pyotp.process_info()")
    _check_pid(pid, "process_info")
    check_timeout(timeout, "process_info")
    sched = get()
    proc = sched.resolve(pid)
    if proc is not None:
        return info_of(proc, me, sched.name_monitors)
    if sched.router is not None and not sched.is_local(pid):
        if not sched.router.alive(pid):
            return None
        result = _answer(
            await _scheduler_call(me, pid.scheduler, "process_info", pid, timeout, pid.node),
            "process_info", timeout,
        )
        return result[1] if result[0] == "ok" else None
    return None


def scheduler_statistics() -> list[SchedulerStatistics]:
    """Return the load figures of every scheduler of the node, by index.

    Each entry has index, creation, os_pid, processes, run_queue (processes not parked in
    receive), long_steps (steps over the long-step threshold so far), cpu (percent of one
    core) and lag (seconds the loop runs behind). Peers' figures are at most ~0.25 s old.
    """
    sched = _scheduler("pyotp.scheduler_statistics()")
    own = sched.load.statistics() if sched.load is not None else None
    stats = [own] if own is not None else []
    if sched.router is not None:
        for index, load in sorted(sched.router.loads.items()):
            if index != sched.index and index in sched.router.creations:
                stats.append(
                    SchedulerStatistics(
                        load.index, load.creation, 0, load.procs, load.runq,
                        load.long_steps, load.cpu, load.lag,
                    )
                )
    return sorted(stats, key=lambda s: s.index)


def node() -> str:
    """Return this node's name ("nonode@nohost" when not distributed).

    Raises:
        NotInProcess: called from plain code, outside `pyotp.run`.
    """
    return _scheduler("pyotp.node()").node


def nodes() -> list[str]:
    """Return the names of the connected nodes (not this one)."""
    sched = _scheduler("pyotp.nodes()")
    if sched.router is None:
        return []
    return sorted(sched.router.remote_nodes)


def monitor_node(node_name: str, flag: bool) -> bool:
    """Watch `node_name`: the caller gets `("nodedown", node_name)` when it is lost.

    Like Erlang, this tries to connect when the node is not connected yet; if that fails
    (or the node is not distributed) the nodedown comes at once. `flag=False` removes one
    watch of the caller's.

    Raises:
        BadArg: not a node name str and a bool.
    """
    proc = current_process("pyotp.monitor_node()")
    if type(node_name) is not str or type(flag) is not bool:
        raise BadArg(f"monitor_node expects (node str, bool), got ({node_name!r}, {flag!r})")
    sched = get()
    router = sched.router
    if node_name == sched.node:
        return True
    if router is None or router.ports is None:
        if flag:
            deliver(proc, ("nodedown", node_name))
        return True
    watchers = router.node_watchers.setdefault(node_name, [])
    if not flag:
        if proc.pid in watchers:
            watchers.remove(proc.pid)
        return True
    watchers.append(proc.pid)
    if node_name not in router.remote_nodes:
        router.request_connect(node_name)
    return True
