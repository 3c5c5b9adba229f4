"""Process groups (Erlang's `pg`, OTP 23+): named groups of pids, per scope, cluster-wide.

Where it sits: user code → **pyotp.pg** → the scope server of this node (a gen_server
registered locally as "$pg:" + scope, started on first use and on every node it meets) →
the servers of the same scope on the other connected nodes.

Behind the scenes:
1. A scope server owns the memberships of the pids of its own node and monitors them: a
   member that exits leaves every group it was in.
2. It keeps a view of every peer server's memberships; peers tell it about each join and
   leave, in order (one sender, one receiver). A lost peer (its node is down) takes its
   members with it.
3. Discovery: each server polls the connected nodes; on a new one it makes sure the scope
   runs there, then the two exchange "discover" and send each other their local
   memberships ("sync").
4. `join`/`leave` return once every peer server known at that moment, and every replica
   (below) of both nodes, has applied the change (each acknowledges to the caller), so
   `get_members` anywhere on this node or another then sees it. Before
   a join, a connected node whose server ours has not met yet gets the scope started and
   introduced (`_meet_connected`), so the first join after a connection reaches it too.
5. `get_members`, `get_local_members`, `which_groups`, `monitor` read and write the scope's
   table in this OS process directly, without messages (as Erlang's pg reads its ets table).

A pid may join a group several times; it must then leave as many times (as in pg).
The scope servers run on scheduler 0; every other scheduler of the node has a replica
process the server keeps up to date, so the plain reads answer from any scheduler (a
membership that changes on its own, e.g. a member exiting, reaches them a moment later).
"""

from __future__ import annotations

import weakref
from typing import Any

from schedulers import current_process, get, self_pid
from schedulers import receive as receive_any
from transport import BadArg, CallExit, CallTimeout, OtpError, Pid, Ref, StartError, Timeout
from transport._codec import to_wire

from . import _api, gen_server
from ._replicas import Replicas

__all__ = [
    "DEFAULT_SCOPE",
    "demonitor",
    "get_local_members",
    "get_members",
    "join",
    "leave",
    "monitor",
    "monitor_scope",
    "start",
    "start_link",
    "which_groups",
]

DEFAULT_SCOPE = "pg"
_TICK = 0.2  # seconds between looks for newly connected nodes
_ACK_TIMEOUT = 5.0
_HELLO_TIMEOUT = 2.0


class _Scope:
    """Internal: one scope's table in this OS process (owned by its server)."""

    def __init__(self) -> None:
        self.local: dict[Any, list[Pid]] = {}  # group -> local members (with repeats)
        self.remote: dict[Pid, dict[Any, list[Pid]]] = {}  # peer server -> its groups
        self.watches: dict[Ref, tuple[Pid, Any]] = {}  # monitor ref -> (watcher, group)
        self.by_group: dict[Any, set[Ref]] = {}  # group (or the scope key) -> refs
        self.server: Pid | None = None

    def members(self, group: Any) -> list[Pid]:
        out = list(self.local.get(group, ()))
        for groups in self.remote.values():
            out.extend(groups.get(group, ()))
        return out

    def groups(self) -> list[Any]:
        seen = {g for g, m in self.local.items() if m}
        for groups in self.remote.values():
            seen.update(g for g, m in groups.items() if m)
        return list(seen)

    def notify(self, kind: str, group: Any, pids: list[Pid]) -> None:
        if not pids:
            return
        for key in (group, _SCOPE_WATCH):
            for ref in self.by_group.get(key, ()):
                watcher = self.watches[ref][0]
                _api.send(watcher, (ref, kind, group, list(pids)))


_SCOPE_WATCH = ("$pg", "scope")  # the by_group key of monitor_scope watches

_tables: weakref.WeakKeyDictionary[Any, dict[str, _Scope]] = weakref.WeakKeyDictionary()


def _scopes() -> dict[str, _Scope]:
    sched = get()
    if sched is None:
        return {}
    table = _tables.get(sched)
    if table is None:
        table = _tables[sched] = {}
    return table


def _server_name(scope: str) -> str:
    return "$pg:" + scope


def _check_scope(scope: Any, what: str) -> None:
    if type(scope) is not str or not scope:
        raise BadArg(f"pg.{what} expects a scope name str, got {scope!r}")


def _scope_state(scope: str, what: str) -> _Scope:
    """Return the scope's table here; start its server in the background when absent."""
    current_process(f"pyotp.pg.{what}()")
    _check_scope(scope, what)
    scopes = _scopes()
    st = scopes.get(scope)
    if st is None:
        st = scopes[scope] = _Scope()
    if st.server is None and _api.whereis(_server_name(scope)) is None:
        _api.spawn(_ensure_started, scope)
    return st


def _check_group(group: Any, what: str, term: bool = False) -> None:
    """A group is a hashable term (it keys the tables and travels to the other nodes)."""
    try:
        hash(group)
    except TypeError:
        raise BadArg(f"pg.{what}: a group must be hashable, got {group!r}") from None
    if term:
        to_wire(group)  # NotSerializable (a BadArg) naming the type, before any server sees it


def _pid_list(pids: Any, what: str) -> list[Pid]:
    if type(pids) is Pid:
        return [pids]
    if type(pids) in (list, tuple) and all(type(p) is Pid for p in pids):
        return list(pids)
    raise BadArg(f"pg.{what} expects a pid or a list of pids, got {pids!r}")


# ===================================================================== client API


async def start(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start the server of `scope` on this node (not linked); return its pid.

    Raises:
        StartError: ("already_started", pid) when it runs already.
    """
    _check_scope(scope, "start")
    current_process("pyotp.pg.start()")
    pid = await gen_server.start(_Server, scope, name=_server_name(scope), scheduler=0)
    assert pid is not None
    return pid


async def start_link(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start the server of `scope` on this node, linked to the caller; return its pid.

    Raises:
        StartError: ("already_started", pid) when it runs already.
    """
    _check_scope(scope, "start_link")
    current_process("pyotp.pg.start_link()")
    pid = await gen_server.start_link(_Server, scope, name=_server_name(scope), scheduler=0)
    assert pid is not None
    return pid


async def join(group: Any, pid_or_pids: Pid | list[Pid], scope: str = DEFAULT_SCOPE) -> str:
    """Make the pid(s) join `group` (again, if already members); return "ok".

    Pids of another node join through that node's scope server. Returns once every
    connected node's scope server has applied the join.

    Raises:
        BadArg: not a pid or list of pids, a bad scope name, or a group that is not a
            hashable term.
    """
    pids = _pid_list(pid_or_pids, "join")
    _check_scope(scope, "join")
    _check_group(group, "join", term=True)
    current_process("pyotp.pg.join()")
    for n, some in _by_node(pids).items():
        await _update(scope, n, ("join", group, some))
    return "ok"


async def leave(group: Any, pid_or_pids: Pid | list[Pid], scope: str = DEFAULT_SCOPE) -> str:
    """Make the pid(s) leave `group` once each; return "ok", or "not_joined" when none was in.

    Raises:
        BadArg: not a pid or list of pids, a bad scope name, or a group that is not a
            hashable term.
    """
    pids = _pid_list(pid_or_pids, "leave")
    _check_scope(scope, "leave")
    _check_group(group, "leave", term=True)
    current_process("pyotp.pg.leave()")
    result = "not_joined"
    for n, some in _by_node(pids).items():
        if await _update(scope, n, ("leave", group, some)) == "ok":
            result = "ok"
    return result


def get_members(group: Any, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """Return every member of `group` in the cluster (a pid once per join).

    Raises:
        NotInProcess: called from plain code.
    """
    _check_group(group, "get_members")
    return _scope_state(scope, "get_members").members(group)


def get_local_members(group: Any, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """Return the members of `group` that run on this node (a pid once per join).

    Raises:
        NotInProcess: called from plain code.
    """
    _check_group(group, "get_local_members")
    return list(_scope_state(scope, "get_local_members").local.get(group, ()))


def which_groups(scope: str = DEFAULT_SCOPE) -> list[Any]:
    """Return the groups with at least one member anywhere in the cluster."""
    return _scope_state(scope, "which_groups").groups()


def monitor(group: Any, scope: str = DEFAULT_SCOPE) -> tuple[Ref, list[Pid]]:
    """Watch `group`; return `(ref, current_members)`.

    Then every change comes to the caller as `(ref, "join", group, pids)` or
    `(ref, "leave", group, pids)`, until `demonitor(ref)` or the caller exits.

    Raises:
        NotInProcess: called from plain code.
    """
    proc = current_process("pyotp.pg.monitor()")
    _check_group(group, "monitor")
    st = _scope_state(scope, "monitor")
    ref = _watch(st, scope, proc.pid, group)
    return ref, st.members(group)


def monitor_scope(scope: str = DEFAULT_SCOPE) -> tuple[Ref, dict[Any, list[Pid]]]:
    """Watch every group of `scope`; return `(ref, {group: members})` (see `monitor`)."""
    proc = current_process("pyotp.pg.monitor_scope()")
    st = _scope_state(scope, "monitor_scope")
    ref = _watch(st, scope, proc.pid, _SCOPE_WATCH)
    return ref, {g: st.members(g) for g in st.groups()}


def demonitor(ref: Ref, scope: str | None = None) -> bool:
    """Stop the watch `ref` (from `monitor`); True if it existed. Drops no queued message."""
    if type(ref) is not Ref:
        raise BadArg(f"pg.demonitor expects the Ref from pg.monitor, got {ref!r}")
    for st in _scopes().values() if scope is None else [_scope_state(scope, "demonitor")]:
        entry = st.watches.pop(ref, None)
        if entry is not None:
            refs = st.by_group.get(entry[1])
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del st.by_group[entry[1]]
            return True
    return False


# ===================================================================== helpers


def _watch(st: _Scope, scope: str, watcher: Pid, key: Any) -> Ref:
    ref = _api.make_ref()
    st.watches[ref] = (watcher, key)
    st.by_group.setdefault(key, set()).add(ref)
    # The server cleans the watch up when the watcher exits.
    server = st.server or _api.whereis(_server_name(scope))
    if server is not None:
        gen_server.cast(server, ("watch", watcher))
    return ref


def _by_node(pids: list[Pid]) -> dict[str, list[Pid]]:
    out: dict[str, list[Pid]] = {}
    for p in pids:
        out.setdefault(p.node, []).append(p)
    return out


async def _update(scope: str, node: str, req: tuple) -> Any:
    """Run a join/leave on `node`'s scope server and wait for its peers' acknowledgements."""
    name = _server_name(scope)
    origin = await _ensure_started(scope)  # our node takes part in the scope in any case
    if node == _api.node():
        if req[0] == "join":
            await _meet_connected(scope, origin)
        origin = None
    else:
        from . import rpc  # noqa: PLC0415 - only for pids of other nodes

        try:
            await rpc.call(node, _ensure_started, scope, timeout=_ACK_TIMEOUT)
        except Exception:
            return "not_joined"  # that node is unreachable: like a dead pid, nothing to do
    tag = _api.make_ref()
    try:
        result, waiting = await gen_server.call((name, node), (*req, (self_pid(), tag), origin),
                                                _ACK_TIMEOUT)
    except (CallExit, CallTimeout):
        return "not_joined"
    while waiting:  # the peers and replicas that apply the change; a peer names its own
        pid = waiting.pop()
        mref = _api.monitor(pid)
        try:
            waiting.extend(await _receive_ack(tag, pid, mref))
        finally:
            _api.demonitor(mref, flush=True)
    return result


async def _meet_connected(scope: str, server: Pid) -> None:
    """Make every connected node's server of `scope` a peer of `server` (ours) first.

    Discovery alone finds a node's server only on a later tick (and a server elsewhere
    starts only when discovery or a first use asks for it), so a join would not reach a node
    whose server our server has not met yet. Behind the scenes, for each such node at once:
    a helper process starts the scope there (`rpc`) and introduces it to our server ("hello":
    our server takes it as a peer and sends it "discover"). The join is broadcast after
    that "discover", from the same sender, so the peer has met us before it applies and
    acknowledges the join. Nodes that do not answer within the ack timeout are left to
    discovery (or to their nodedown).
    """
    from schedulers import receive_matching  # noqa: PLC0415 - hot import kept local

    st = _scopes().get(scope)
    met = {p.node for p in st.remote} if st is not None else set()
    missing = [n for n in _api.nodes() if n not in met]
    if not missing:
        return
    me = current_process()
    helpers = {}
    for n in missing:
        pid, ref = _api.spawn(_introduce, scope, server, n, monitor=True)
        helpers[ref] = pid

    def is_down(m: Any) -> bool:
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] in helpers

    loop = get().loop
    deadline = loop.time() + _ACK_TIMEOUT
    while helpers:
        try:
            msg = await receive_matching(me, is_down, max(0.0, deadline - loop.time()))
        except Timeout:
            break
        helpers.pop(msg[1])
    for ref, pid in helpers.items():
        _api.demonitor(ref, flush=True)
        _api.exit(pid, "kill")


async def _introduce(scope: str, server: Pid, node: str) -> None:
    """Helper of `_meet_connected`: start `scope` on `node`, introduce it to `server`."""
    from . import rpc  # noqa: PLC0415 - only for other nodes

    try:
        peer = await rpc.call(node, _ensure_started, scope, timeout=_ACK_TIMEOUT)
        await gen_server.call(server, ("hello", peer), _ACK_TIMEOUT)
    except (OtpError, CallExit, CallTimeout):
        pass  # unreachable or lost meanwhile: discovery or its nodedown settles it


async def _receive_ack(tag: Ref, pid: Pid, mref: Ref) -> list[Pid]:
    """Wait for `pid`'s acknowledgement ("pg_ack") of change `tag`, or its DOWN.

    Returns the replicas whose acknowledgements `pid` (a peer server) announced.
    """
    from schedulers import receive_matching  # noqa: PLC0415 - hot import kept local

    me = current_process()

    def is_ack(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 4 and m[0] == tag and m[1] == "pg_ack" and m[2] == pid)
            or (len(m) == 5 and m[0] == "DOWN" and m[1] == mref)
        )

    try:
        msg = await receive_matching(me, is_ack, _ACK_TIMEOUT)
    except Timeout:
        return []  # a peer that does not answer is being lost; its nodedown cleans up
    return list(msg[3]) if msg[0] == tag else []


async def _ensure_started(scope: str = DEFAULT_SCOPE) -> Pid:
    """Return this node's server of `scope`, starting it (on scheduler 0) when absent."""
    pid = _api.whereis(_server_name(scope))
    if pid is not None:
        return pid
    try:
        started = await gen_server.start(_Server, scope, name=_server_name(scope), scheduler=0)
    except StartError as e:
        if type(e.reason) is tuple and e.reason and e.reason[0] == "already_started":
            return e.reason[1]
        raise
    assert started is not None
    return started


async def _hello(scope: str, origin: Pid) -> None:
    """Run on a newly met node: make sure `scope` runs here and introduce it to `origin`."""
    pid = await _ensure_started(scope)
    _api.send(origin, ("discover", pid))


# ===================================================================== the scope server


class _Server(gen_server.GenServer):
    """A scope server: owns this node's memberships, mirrors its peers'.

    Client call → callback it triggers:
        `join` / `leave` → handle_call ("join" | "leave", group, pids, ack_to, origin), then
                           the peers get ("join" | "leave", server, group, pids, ack_to) in
                           handle_info and acknowledge to the caller
        `monitor` → handle_cast ("watch", pid) (clean-up when the watcher exits)
        a member, peer server or watcher exits → handle_info DOWN
        a new connection → handle_info "$tick" / ("discover", peer) / ("sync", peer, groups)
        a server starting on another node → handle_call ("hello", its_pid)
    """

    async def init(self, scope: str) -> Any:
        self.scope = scope
        scopes = _scopes()
        st = scopes.get(scope)
        if st is None:
            st = scopes[scope] = _Scope()
        st.local.clear()
        st.remote.clear()
        st.server = self_pid()
        self.st = st
        self.member_mons: dict[Pid, Ref] = {}  # local member -> monitor ref
        self.peer_mons: dict[Pid, Ref] = {}  # peer server -> monitor ref
        self.watcher_mons: dict[Pid, Ref] = {}
        self.known: set[str] = set()
        for w in {w for w, _ in st.watches.values()}:  # watches made before we started
            self.watcher_mons[w] = _api.monitor(w)
        # A replica on every other scheduler of this node keeps a copy of the tables, so
        # the plain reads (get_members, ...) answer from any scheduler.
        me = self_pid()
        self.replicas = Replicas(
            lambda k: _api.spawn(_replica, scope, me, scheduler=k),
            lambda pid: None,  # a client waiting for its ack sees its DOWN
            self._push_all,
        )
        self._pushed: Any = None
        self._ack: Any = None  # (client, tag) of the change the next push acknowledges
        await self._meet()
        self._tick()
        return ("ok", None)

    async def _meet(self) -> None:
        """Meet the servers already running on the connected nodes before serving anyone.

        So a join made here right after the start reaches them (and they ack it). Two
        servers starting at once wait on each other until the timeout; the "discover" each
        hello also sends then completes the meeting.
        """
        nodes = _api.nodes()
        if not nodes:
            return
        replies, _ = await gen_server.multi_call(nodes, _server_name(self.scope),
                                                 ("hello", self_pid()), _HELLO_TIMEOUT)
        for _node, (peer, groups) in replies:
            self._add_peer(peer)
            self._sync(peer, groups)

    # ---------------------------------------------------------------- local changes

    def _peers(self) -> list[Pid]:
        return list(self.st.remote)

    def _broadcast(self, msg: tuple) -> None:
        for peer in self.st.remote:
            _api.send(peer, msg)

    def _push(self) -> None:
        """Send the tables to the replicas if they changed (control plane: small tables).

        With a change to acknowledge (`self._ack`), they are sent in any case and each
        replica acknowledges to the client once it has them.
        """
        ack, self._ack = self._ack, None
        if not self.replicas:
            return
        snapshot = (
            {g: list(m) for g, m in self.st.local.items()},
            {p: {g: list(m) for g, m in gs.items()} for p, gs in self.st.remote.items()},
        )
        if snapshot != self._pushed or ack is not None:
            self._pushed = snapshot
            for replica in self.replicas:
                _api.send(replica, ("tables", *snapshot, ack))

    def _push_all(self, _new_replica: Pid) -> None:
        """A replica replaced a lost one: send the tables again (it has none)."""
        self._pushed = None
        self._push()

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        result = self._handle_call(req, from_, state)
        self._push()
        return result

    def handle_cast(self, msg: Any, state: Any) -> Any:
        result = self._handle_cast(msg, state)
        self._push()
        return result

    def handle_info(self, msg: Any, state: Any) -> Any:
        result = self._handle_info(msg, state)
        self._push()
        return result

    def _handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req[0] == "hello":
            peer = req[1]
            if self._add_peer(peer):
                _api.send(peer, ("discover", self_pid()))
            return ("reply", (self_pid(), self._local_snapshot()), state)
        kind, group, pids, ack, origin = req
        st = self.st
        if origin is not None and self._add_peer(origin):
            # A join from another node's client: make sure that node's server knows us
            # (and our members) before it hears of the change and acknowledges it.
            _api.send(origin, ("discover", self_pid()))
            _api.send(origin, ("sync", self_pid(), self._local_snapshot()))
        here = _api.node()
        pids = [p for p in pids if p.node == here]
        if kind == "join":
            for p in pids:
                if p not in self.member_mons:
                    self.member_mons[p] = _api.monitor(p)
            st.local.setdefault(group, []).extend(pids)
            st.notify("join", group, pids)
            self._broadcast(("join", self_pid(), group, pids, ack))
            self._ack = ack
            return ("reply", ("ok", self._peers() + self.replicas.list()), state)
        members = st.local.get(group, [])
        gone = []
        for p in pids:
            if p in members:
                members.remove(p)
                gone.append(p)
        if not members:
            st.local.pop(group, None)
        for p in gone:
            self._maybe_forget(p)
        if not gone:
            return ("reply", ("not_joined", []), state)
        st.notify("leave", group, gone)
        self._broadcast(("leave", self_pid(), group, gone, ack))
        self._ack = ack
        return ("reply", ("ok", self._peers() + self.replicas.list()), state)

    def _maybe_forget(self, pid: Pid) -> None:
        if any(pid in m for m in self.st.local.values()):
            return
        ref = self.member_mons.pop(pid, None)
        if ref is not None:
            _api.demonitor(ref, flush=True)

    def _handle_cast(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and msg[0] == "watch":
            w = msg[1]
            if w not in self.watcher_mons:
                self.watcher_mons[w] = _api.monitor(w)
        return ("noreply", state)

    # ---------------------------------------------------------------- peers and exits

    def _add_peer(self, peer: Pid) -> bool:
        if peer in self.st.remote:
            return False
        self.st.remote[peer] = {}
        self.peer_mons[peer] = _api.monitor(peer)
        self.known.add(peer.node)
        return True

    def _apply_remote(self, peer: Pid, kind: str, group: Any, pids: list[Pid]) -> None:
        groups = self.st.remote[peer]
        if kind == "join":
            groups.setdefault(group, []).extend(pids)
            self.st.notify("join", group, pids)
            return
        members = groups.get(group, [])
        gone = []
        for p in pids:
            if p in members:
                members.remove(p)
                gone.append(p)
        if not members:
            groups.pop(group, None)
        self.st.notify("leave", group, gone)

    def _sync(self, peer: Pid, groups: dict) -> None:
        old = self.st.remote.get(peer, {})
        self.st.remote[peer] = {g: list(m) for g, m in groups.items() if m}
        for g in set(old) | set(groups):
            before, after = list(old.get(g, ())), list(groups.get(g, ()))
            left = list(before)
            added = []
            for p in after:
                if p in left:
                    left.remove(p)
                else:
                    added.append(p)
            self.st.notify("leave", g, left)
            self.st.notify("join", g, added)

    def _local_snapshot(self) -> dict:
        return {g: list(m) for g, m in self.st.local.items() if m}

    def _handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "$tick":
            self._poll()
            self._tick()
            return ("noreply", state)
        if self.replicas.handle_info(msg):
            return ("noreply", state)
        if type(msg) is not tuple or not msg:
            return ("noreply", state)
        kind = msg[0]
        me = self_pid()
        if kind in ("join", "leave") and len(msg) == 5:
            _, peer, group, pids, ack = msg
            if self._add_peer(peer):  # heard of it first through a change: introduce us
                _api.send(peer, ("discover", me))
            self._apply_remote(peer, kind, group, pids)
            if ack is not None:  # our replicas acknowledge too, after the push
                _api.send(ack[0], (ack[1], "pg_ack", me, self.replicas.list()))
                self._ack = ack
        elif kind == "discover" and len(msg) == 2:
            peer = msg[1]
            if self._add_peer(peer):
                _api.send(peer, ("discover", me))
            _api.send(peer, ("sync", me, self._local_snapshot()))
        elif kind == "sync" and len(msg) == 3:
            self._add_peer(msg[1])
            self._sync(msg[1], msg[2])
        elif kind == "DOWN" and len(msg) == 5:
            self._down(msg[1], msg[3])
        elif kind == "nodedown" and len(msg) == 2:
            self.known.discard(msg[1])
        return ("noreply", state)

    def _down(self, ref: Ref, pid: Pid) -> None:
        st = self.st
        if self.member_mons.get(pid) == ref:
            del self.member_mons[pid]
            for group, members in list(st.local.items()):
                gone = [p for p in members if p == pid]
                if gone:
                    members[:] = [p for p in members if p != pid]
                    if not members:
                        del st.local[group]
                    st.notify("leave", group, gone)
                    self._broadcast(("leave", self_pid(), group, gone, None))
        elif self.peer_mons.get(pid) == ref:
            del self.peer_mons[pid]
            groups = st.remote.pop(pid, {})
            for group, members in groups.items():
                st.notify("leave", group, members)
        elif self.watcher_mons.get(pid) == ref:
            del self.watcher_mons[pid]
            for wref, (w, key) in list(st.watches.items()):
                if w == pid:
                    del st.watches[wref]
                    refs = st.by_group.get(key)
                    if refs is not None:
                        refs.discard(wref)
                        if not refs:
                            del st.by_group[key]

    def terminate(self, reason: Any, state: Any) -> None:
        self.st.server = None
        self.st.local.clear()
        self.st.remote.clear()

    # ---------------------------------------------------------------- discovery

    def _tick(self) -> None:
        _api.send_after(_TICK, self_pid(), "$tick")

    def _poll(self) -> None:
        for n in _api.nodes():
            if n in self.known:
                continue
            self.known.add(n)
            _api.monitor_node(n, True)
            try:
                _api.spawn(_hello, self.scope, self_pid(), node=n)
            except BadArg:
                self.known.discard(n)


async def _replica(scope: str, server: Pid) -> None:
    """Keep this scheduler's copy of `scope`'s tables (see `_Server.init`)."""
    ref = _api.monitor(server)
    st = _scopes().setdefault(scope, _Scope())
    st.server = server
    while True:
        msg = await receive_any()
        if msg[0] == "tables":
            st.local, st.remote = msg[1], msg[2]
            if msg[3] is not None:
                _api.send(msg[3][0], (msg[3][1], "pg_ack", self_pid(), []))
        elif msg[0] == "DOWN" and msg[1] == ref:
            st.local, st.remote, st.server = {}, {}, None
            return
