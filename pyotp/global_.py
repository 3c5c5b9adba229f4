"""Cluster-wide process names (Erlang's `global`).

Where it sits: user code → **pyotp.global_** → a name server per node (a gen_server
registered locally as "$global_name_server", started on first use and on every node it
meets) → its peers on the other connected nodes (`gen_server.call/cast` to
`("$global_name_server", node)`).

Behind the scenes:
1. Every name server keeps a full replica of the table; `whereis_name` reads the one of this
   OS process without messaging anybody.
2. `register_name` locks the name and the pid on every connected node's server, in
   node-name order (a total order, so two concurrent registrations never deadlock: the
   second waits on the first node's lock), checks that nobody holds the name and that the
   pid holds no name, commits it everywhere, and releases the locks. Only one of two
   concurrent registrations of a name (or of a pid) can succeed.
3. Each server monitors every registered pid: a name goes when its process exits, or when
   its node is lost (the monitor fires "noconnection").
4. Each server polls its connected nodes; on a new connection it makes sure a server runs
   there and the two exchange tables. A name registered on both sides while they were apart
   is a clash: as Erlang's default `global:random_exit_name`, one pid is kept (the smaller
   pid, i.e. the one on the node with the lower name) and the other is killed, with a log
   line.

The server runs on scheduler 0; every other scheduler of the node has a replica process
that the server keeps up to date in order, so `whereis_name` answers from any scheduler. A
server answers a commit, an unregister or a sync once its replicas have the change, so when
`register_name`/`unregister_name` return, every scheduler of every node sees it (a name
that goes with its process leaves the replicas a moment later).
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

from schedulers import current_process, get, self_pid
from schedulers import receive as receive_any
from transport import BadArg, CallExit, CallTimeout, Pid, StartError

from . import _api, _gen, gen_server
from ._replicas import Replicas

__all__ = ["register_name", "send", "sync", "unregister_name", "whereis_name"]

_log = logging.getLogger("pyotp.global")

SERVER = "$global_name_server"
_TICK = 0.2  # seconds between looks for newly connected nodes
_CALL_TIMEOUT = 10.0
_PID_LOCK = "$pid"  # lock key (_PID_LOCK, pid): a tuple, so never a name (names are str)

# The replica of this OS process, per running node (a test process boots many nodes one
# after the other): name -> pid. Written only by the name server.
_replicas: weakref.WeakKeyDictionary[Any, dict[str, Pid]] = weakref.WeakKeyDictionary()


def _table() -> dict[str, Pid]:
    sched = get()
    if sched is None:
        return {}
    table = _replicas.get(sched)
    if table is None:
        table = _replicas[sched] = {}
    return table


# ===================================================================== client API


def _check_name(name: Any, what: str) -> None:
    if type(name) is not str or not name:
        raise BadArg(f"global_.{what} expects a non-empty name str, got {name!r}")


def whereis_name(name: str) -> Pid | None:
    """Return the pid registered cluster-wide as `name`, or None (reads the local replica).

    Raises:
        BadArg: `name` is not a str.
        NotInProcess: called from plain code.
    """
    current_process("pyotp.global_.whereis_name()")
    if type(name) is not str:
        raise BadArg(f"global_.whereis_name expects a name str, got {name!r}")
    return _table().get(name)


def send(name: str, msg: Any) -> Pid:
    """Send `msg` to the process registered cluster-wide as `name`; return its pid.

    Raises:
        BadArg: nobody holds `name` (Erlang's `global:send` exits with badarg).
        NotInProcess: called from plain code.
    """
    current_process("pyotp.global_.send()")
    _check_name(name, "send")
    pid = _table().get(name)
    if pid is None:
        raise BadArg(f"global_.send: no process is registered globally as {name!r}", "badarg")
    _api.send(pid, msg)
    return pid


async def register_name(name: str, pid: Pid) -> bool:
    """Register `name` for `pid` on every connected node; True on success.

    As Erlang's `global`, a name names one pid and a pid holds one name: False when some
    node already has `name` (even for this very pid), when `pid` already holds another
    global name, or when another registration of it won the race.

    Raises:
        BadArg: `name` is not a non-empty str, or `pid` is not a Pid.
        NotInProcess: called from plain code.
    """
    _check_name(name, "register_name")
    if type(pid) is not Pid:
        raise BadArg(f"global_.register_name expects a pyotp.Pid, got {pid!r}")
    me = current_process("pyotp.global_.register_name()")
    await _ensure_started()
    targets = await _servers()
    holder = (me.pid, _api.make_ref())
    # Two locks per node: the name, and the pid (so two registrations of one pid under
    # different names cannot both win). Taken node by node in node-name order, the name's
    # before the pid's: one total order for every registrant, so none deadlocks.
    keys = (name, (_PID_LOCK, pid))
    locked: list[tuple[str, Any]] = []
    ok = True
    try:
        for n in targets:
            for key in keys:
                try:
                    current = await gen_server.call((SERVER, n), ("lock", key, holder),
                                                    _CALL_TIMEOUT)
                except (CallExit, CallTimeout):
                    if n == _api.node():
                        raise
                    break  # that node went away: it syncs again when it comes back
                locked.append((n, key))
                if current is not None:  # the name is taken, or the pid has a name
                    ok = False
                    break
            if not ok:
                break
        if ok:
            for n in dict.fromkeys(n for n, _ in locked):
                await _quiet_call(n, ("commit", name, pid, holder))  # releases both locks
            locked = []
    finally:
        for n, key in locked:
            await _quiet_call(n, ("unlock", key, holder))
    return ok


async def unregister_name(name: str) -> None:
    """Remove the cluster-wide `name` on every connected node (no-op if unknown).

    Raises:
        BadArg: `name` is not a non-empty str.
    """
    _check_name(name, "unregister_name")
    current_process("pyotp.global_.unregister_name()")
    await _ensure_started()
    for n in await _servers():
        await _quiet_call(n, ("unregister", name))


async def sync() -> None:
    """Exchange tables with the name server of every connected node and wait for it.

    After it returns, this node's replica and the connected nodes' agree (name clashes
    resolved), and exits of registered processes this node has heard of are applied, as
    with Erlang's `global:sync()`.
    """
    current_process("pyotp.global_.sync()")
    await _ensure_started()
    here = _api.node()
    for n in await _servers():
        if n == here:
            continue
        try:
            table = await gen_server.call((SERVER, n), ("sync", here, dict(_table())),
                                          _CALL_TIMEOUT)
        except (CallExit, CallTimeout):
            continue
        await gen_server.call(SERVER, ("merge", table), _CALL_TIMEOUT)
    # A round trip to our server: exits and nodedowns it was told of are applied by now.
    await gen_server.call(SERVER, "ping", _CALL_TIMEOUT)


# ===================================================================== helpers


async def _quiet_call(node: str, request: Any) -> Any:
    try:
        return await gen_server.call((SERVER, node), request, _CALL_TIMEOUT)
    except (CallExit, CallTimeout):
        return None


async def _ensure_started() -> Pid:
    """Return this node's name server, starting it (on scheduler 0) when absent."""
    pid = _api.whereis(SERVER)
    if pid is not None:
        return pid
    try:
        started = await gen_server.start(_Server, None, name=SERVER, scheduler=0)
    except StartError as e:
        if type(e.reason) is tuple and e.reason and e.reason[0] == "already_started":
            return e.reason[1]
        raise
    assert started is not None
    return started


async def _servers() -> list[str]:
    """Return this node and every connected node, each with a running name server."""
    here = _api.node()
    result = [here]
    for n in _api.nodes():
        try:
            await gen_server.call((SERVER, n), "ping", _CALL_TIMEOUT)
        except CallExit as e:
            if e.reason != "noproc":
                continue
            try:
                from . import rpc  # noqa: PLC0415 - rpc imports net; keep import order simple

                await rpc.call(n, _ensure_started, timeout=_CALL_TIMEOUT)
            except Exception:  # the node went away meanwhile: leave it out
                continue
        except CallTimeout:
            continue
        result.append(n)
    return sorted(result)


async def _hello(origin: str) -> None:
    """Run on a newly met node: make sure its server runs and syncs with `origin`."""
    await _ensure_started()
    gen_server.cast(SERVER, ("sync_with", origin))


# ===================================================================== the name server


class _Server(gen_server.GenServer):
    """The per-node name server.

    Client call → callback it triggers:
        `register_name` → handle_call ("lock", key, holder) for key name and ("$pid", pid),
                          ("commit", name, pid, holder), ("unlock", key, holder) on every
                          node's server
        `unregister_name` → handle_call ("unregister", name)
        `sync` → handle_call ("sync", node, table) there, ("merge", table) here
        a new connection → handle_info "$tick" → handle_cast ("sync_req" / "sync_ack")
        a registered pid or a lock holder exits → handle_info DOWN
    """

    def init(self, _arg: Any) -> Any:
        _table().clear()
        self.mons: dict[Any, tuple[str, Pid]] = {}  # monitor ref -> (name, pid)
        self.ref_of: dict[str, Any] = {}  # name -> monitor ref of its pid
        self.locks: dict[str, tuple] = {}  # name -> holder (pid, ref)
        self.waiting: dict[str, list] = {}  # name -> [(from_, holder)]
        self.holder_mons: dict[Any, Any] = {}  # holder pid -> monitor ref
        self.known: set[str] = set()
        self.pending: dict[Any, list] = {}  # tag -> [from_, reply, replicas yet to ack]
        # One replica process on every other scheduler of this node, so whereis_name (a
        # plain read) answers from any scheduler; updates follow each change in order.
        me = self_pid()
        self.replicas = Replicas(
            lambda k: _api.spawn(_replica, me, scheduler=k),
            self._replica_lost,
            lambda pid: _api.send(pid, ("load", dict(_table()))),
        )
        self._tick()
        return ("ok", None)

    def _push(self, msg: Any) -> None:
        for replica in self.replicas:
            _api.send(replica, msg)

    def _reply_replicated(self, from_: Any, reply: Any, state: Any) -> Any:
        """Reply `reply` to `from_` once every replica has applied the changes so far."""
        if not self.replicas:
            return ("reply", reply, state)
        tag = _api.make_ref()
        self.pending[tag] = [from_, reply, set(self.replicas)]
        self._push(("ack", self_pid(), tag))
        return ("noreply", state)

    def _replicated(self, tag: Any, replica: Pid) -> None:
        entry = self.pending.get(tag)
        if entry is None:
            return
        entry[2].discard(replica)
        if not entry[2]:
            del self.pending[tag]
            gen_server.reply(entry[0], entry[1])

    def _replica_lost(self, replica: Pid) -> None:
        """A replica went with its scheduler: no change waits for it any longer."""
        for tag in list(self.pending):
            self._replicated(tag, replica)

    # ---------------------------------------------------------------- table

    def _add(self, name: str, pid: Pid) -> None:
        old = self.ref_of.pop(name, None)
        if old is not None:
            self.mons.pop(old, None)
            _api.demonitor(old, flush=True)
        _table()[name] = pid
        self._push(("set", name, pid))
        ref = _api.monitor(pid)
        self.mons[ref] = (name, pid)
        self.ref_of[name] = ref

    def _remove(self, name: str) -> None:
        _table().pop(name, None)
        self._push(("del", name))
        ref = self.ref_of.pop(name, None)
        if ref is not None:
            self.mons.pop(ref, None)
            _api.demonitor(ref, flush=True)

    def _merge(self, table: dict) -> None:
        for name, pid in table.items():
            cur = _table().get(name)
            if cur is None:
                self._add(name, pid)
            elif cur != pid:
                keep, lose = (cur, pid) if cur < pid else (pid, cur)
                _log.warning(
                    "global: name conflict for %r between %r and %r: keeping %r, "
                    "killing %r", name, cur, pid, keep, lose,
                )
                if keep != cur:
                    self._add(name, keep)
                try:
                    _api.exit(lose, "kill")
                except BadArg:
                    pass

    # ---------------------------------------------------------------- locks

    def _holding(self, key: Any) -> Any:
        """What a lock on `key` protects: the pid of a name, or a name a pid holds."""
        if type(key) is str:
            return _table().get(key)
        pid = key[1]
        return next((n for n, p in _table().items() if p == pid), None)

    def _grant(self, name: str, holder: tuple) -> None:
        self.locks[name] = holder
        hpid = holder[0]
        if hpid not in self.holder_mons:
            self.holder_mons[hpid] = _api.monitor(hpid)

    def _release(self, name: str, holder: tuple) -> None:
        if self.locks.get(name) != holder:
            return
        del self.locks[name]
        queue = self.waiting.get(name)
        while queue:
            from_, nxt = queue.pop(0)
            if not queue:
                del self.waiting[name]
            self._grant(name, nxt)
            gen_server.reply(from_, self._holding(name))
            return

    def _holder_gone(self, hpid: Pid) -> None:
        self.holder_mons.pop(hpid, None)
        for name, q in list(self.waiting.items()):
            q[:] = [(f, h) for f, h in q if h[0] != hpid]
            if not q:
                del self.waiting[name]
        for name, holder in list(self.locks.items()):
            if holder[0] == hpid:
                self._release(name, holder)

    # ---------------------------------------------------------------- callbacks

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        kind = req[0] if type(req) is tuple else req
        if kind == "lock":
            _, name, holder = req
            cur = self.locks.get(name)
            if cur is None or cur == holder:
                self._grant(name, holder)
                return ("reply", self._holding(name), state)
            self.waiting.setdefault(name, []).append((from_, holder))
            if holder[0] not in self.holder_mons:
                self.holder_mons[holder[0]] = _api.monitor(holder[0])
            return ("noreply", state)
        if kind == "commit":
            _, name, pid, holder = req
            self._add(name, pid)
            self._release(name, holder)
            self._release((_PID_LOCK, pid), holder)
            return self._reply_replicated(from_, "ok", state)
        if kind == "unlock":
            self._release(req[1], req[2])
            return ("reply", "ok", state)
        if kind == "unregister":
            self._remove(req[1])
            return self._reply_replicated(from_, "ok", state)
        if kind == "sync":
            mine = dict(_table())
            self._merge(req[2])
            return self._reply_replicated(from_, mine, state)
        if kind == "merge":
            self._merge(req[1])
            return self._reply_replicated(from_, "ok", state)
        if kind == "ping":
            return ("reply", "pong", state)
        return ("reply", ("error", ("unknown_request", req)), state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        kind = msg[0]
        if kind == "sync_with":
            gen_server.cast((SERVER, msg[1]), ("sync_req", _api.node(), dict(_table())))
        elif kind == "sync_req":
            gen_server.cast((SERVER, msg[1]), ("sync_ack", _api.node(), dict(_table())))
            self._merge(msg[2])
        elif kind == "sync_ack":
            self._merge(msg[2])
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "$tick":
            self._poll()
            self._tick()
        elif self.replicas.handle_info(msg):
            pass
        elif type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            ref, pid = msg[1], msg[3]
            entry = self.mons.pop(ref, None)
            if entry is not None:
                name = entry[0]
                if self.ref_of.get(name) == ref:
                    del self.ref_of[name]
                    _table().pop(name, None)
                    self._push(("del", name))
            elif self.holder_mons.get(pid) == ref:
                self._holder_gone(pid)
        elif type(msg) is tuple and len(msg) == 3 and msg[0] == "$replicated":
            self._replicated(msg[1], msg[2])
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == "nodedown":
            self.known.discard(msg[1])
        return ("noreply", state)

    def terminate(self, reason: Any, state: Any) -> None:
        _table().clear()

    # ---------------------------------------------------------------- discovery

    def _tick(self) -> None:
        _api.send_after(_TICK, self_pid(), "$tick")

    def _poll(self) -> None:
        here = _api.node()
        for n in _api.nodes():
            if n in self.known:
                continue
            self.known.add(n)
            _api.monitor_node(n, True)
            try:
                _api.spawn(_hello, here, node=n)
            except BadArg:
                self.known.discard(n)


async def _replica(server: Pid) -> None:
    """Keep this scheduler's copy of the name table (see `_Server.init`)."""
    ref = _api.monitor(server)
    table = _table()
    while True:
        msg = await receive_any()
        if msg[0] == "set":
            table[msg[1]] = msg[2]
        elif msg[0] == "del":
            table.pop(msg[1], None)
        elif msg[0] == "ack":  # the server waits for it before it answers a change
            _api.send(msg[1], ("$replicated", msg[2], self_pid()))
        elif msg[0] == "load":  # a replica started on a scheduler that replaced a lost one
            table.clear()
            table.update(msg[1])
        elif msg[0] == "DOWN" and msg[1] == ref:
            table.clear()
            return


_gen.global_names = sys.modules[__name__]  # ("global", name) in behaviour starts and calls
