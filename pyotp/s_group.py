"""s_groups (Scalable Distributed Erlang): named groups of nodes that connect only inside.

Where it sits: user code → **pyotp.s_group** → an s_group server on every member node (a
gen_server registered locally as "$s_group", started on first use) → node control, whose
transitive connections are limited to the groups of a node in any s_group.

A free node (in no s_group) connects transitively, as in Erlang. A node in s_groups connects
only to the members of its groups: connections are not transitive across groups. Each group
has its own name space (`register_name(group, name, pid)`), replicated on its members;
a name is dropped when its process exits or its node goes down.

Groups are made at run time (`new_s_group`) or at boot from the kernel config `s_groups`,
as in SD Erlang: `[[name, [node, ...]], ...]`, the same list on every node (`parse_config`).

Shapes follow the RELEASE project's `s_group.erl`: `new_s_group` returns `(name, nodes)`,
`own_s_groups()` a list of `(name, nodes)`, `s_groups()` `(own_names, other_names)` or None on
a free node, `remove_nodes` returns None; errors raise `OtpError` with reasons
"s_group_name_is_in_use", "remote_s_group", "cannot_remove_itself".
"""

from __future__ import annotations

from typing import Any

from schedulers import current_process, get, self_pid
from schedulers import receive as receive_any
from transport import BadArg, OtpError, Pid

from . import _api, gen_server, net, rpc

__all__ = [
    "add_nodes",
    "delete_s_group",
    "new_s_group",
    "own_s_groups",
    "register_name",
    "remove_nodes",
    "s_groups",
    "send",
    "whereis_name",
]

SERVER = "$s_group"
_T = 5.0

# This node's replica, kept by its server (scheduler 0). In the OS process of every other
# scheduler a mirror process keeps a copy for `send` (the one plain call); the async calls
# made there ask the server itself (see _view), so they never read a stale copy.
_groups: dict[str, list[str]] = {}  # own groups -> members
_known: set[str] = set()  # groups of other nodes this node heard of
_names: dict[tuple[str, str], Pid] = {}


class _Server(gen_server.GenServer):
    """Internal: the s_group server of one node."""

    def init(self, _arg: Any) -> Any:
        # The replica lives as long as this server: a node run again in the same OS process
        # (tests) must not start with the last run's groups, whose terminate may not have run.
        _groups.clear()
        _known.clear()
        _names.clear()
        _install_filter()
        sched = get()
        others = sorted(set(sched.router.creations) - {sched.index}) if sched.router else []
        self.mirrors = [_api.spawn(_mirror, self_pid(), scheduler=k) for k in others]
        return ("ok", {})

    def _push(self) -> None:
        """Hand the other schedulers' mirrors the tables after a change."""
        if self.mirrors:
            snapshot = ("tables", dict(_groups), sorted(_known), list(_names.items()))
            for mirror in self.mirrors:
                _api.send(mirror, snapshot)

    def handle_call(self, req: Any, from_: Any, monitors: dict) -> Any:
        if req[0] == "view":  # the tables, for a caller on another scheduler (see _view)
            return ("reply", (dict(_groups), sorted(_known), list(_names.items())), monitors)
        r = self._handle_call(req, monitors)
        self._push()
        return r

    def _handle_call(self, req: Any, monitors: dict) -> Any:
        op = req[0]
        if op == "set_group":  # (op, name, members or None to drop[, names of a joiner])
            name, members = req[1], req[2]
            here = _api.node()
            if members is None or here not in members:
                _groups.pop(name, None)
                if members is None:
                    _known.discard(name)
                else:
                    _known.add(name)  # a group we were removed from is now another's
                for key in [k for k in _names if k[0] == name]:
                    del _names[key]
            else:
                _groups[name] = sorted(members)
                _known.discard(name)
                for node in members:
                    if node != here:
                        _api.monitor_node(node, True)
                if len(req) == 4:  # joining: the group's names so far (add_nodes)
                    _merge_names(name, members, req[3], monitors)
            return ("reply", "ok", monitors)
        if op == "names":  # (op, group): this replica's names of group, as (name, pid)
            return ("reply", [(k[1], p) for k, p in _names.items() if k[0] == req[1]],
                    monitors)
        if op == "known":
            _known.add(req[1])
            return ("reply", "ok", monitors)
        if op == "reserve":  # (op, group, name, pid): True if the name is free here
            _, group, name, pid = req
            # As the RELEASE project's s_group (and Erlang's global): a name names one pid
            # and a pid holds one name in a group, so a name taken even by this very pid,
            # or a pid named already, is refused.
            if (group, name) in _names or any(
                k[0] == group and p == pid for k, p in _names.items()
            ):
                return ("reply", False, monitors)
            _names[(group, name)] = pid
            if pid.node == _api.node() and pid not in monitors.values():
                monitors[_api.monitor(pid)] = pid
            return ("reply", True, monitors)
        if op == "drop":  # (op, group, name, pid)
            _, group, name, pid = req
            if _names.get((group, name)) == pid:
                del _names[(group, name)]
            return ("reply", "ok", monitors)
        return ("reply", ("error", "unknown_request"), monitors)

    def handle_info(self, msg: Any, monitors: dict) -> Any:
        self._info(msg, monitors)
        self._push()
        return ("noreply", monitors)

    def _info(self, msg: Any, monitors: dict) -> None:
        if type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            pid = monitors.pop(msg[1], None)
            for key in [k for k, p in _names.items() if p == pid]:
                del _names[key]
                for node in _groups.get(key[0], ()):
                    if node != _api.node():
                        gen_server.cast((SERVER, node), ("$drop", key[0], key[1], pid))
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == "nodedown":
            for key in [k for k, p in _names.items() if p.node == msg[1]]:
                del _names[key]

    def handle_cast(self, msg: Any, monitors: dict) -> Any:
        if msg[0] == "$drop" and _names.get((msg[1], msg[2])) == msg[3]:
            del _names[(msg[1], msg[2])]
            self._push()
        return ("noreply", monitors)

    def terminate(self, reason: Any, monitors: dict) -> None:
        _groups.clear()
        _known.clear()
        _names.clear()
        _remove_filter()


async def _mirror(server: Pid) -> None:
    """Keep this scheduler's copy of the tables, for `send` (see `_Server.init`)."""
    ref = _api.monitor(server)
    while True:
        msg = await receive_any()
        if msg[0] == "tables":
            _groups.clear()
            _groups.update(msg[1])
            _known.clear()
            _known.update(msg[2])
            _names.clear()
            _names.update((tuple(key), pid) for key, pid in msg[3])
        elif msg[0] == "DOWN" and msg[1] == ref:
            _groups.clear()
            _known.clear()
            _names.clear()
            return


async def _view() -> tuple[dict[str, list[str]], set[str], dict[tuple[str, str], Pid]]:
    """This node's tables, exact: read here on the server's scheduler, else asked of it."""
    server = _api.whereis(SERVER)
    if server is None or server.scheduler == get().index:
        return _groups, _known, _names
    groups, known, names = await gen_server.call(SERVER, ("view",), _T)
    return groups, set(known), {tuple(key): pid for key, pid in names}


def _merge_names(group: str, members: list[str], names: list, monitors: dict) -> None:
    """Take a joining node's copy of `group`'s names; a name it already holds wins.

    Each copied pid on a member node is monitored here: one that died after the copy was
    taken (its node's "$drop" may have come before the copy) is dropped on its DOWN.
    """
    for name, pid in names:
        if (group, name) in _names:
            continue  # registered here meanwhile, by a member that already knew this node
        _names[(group, name)] = pid
        if pid.node in members and pid not in monitors.values():
            monitors[_api.monitor(pid)] = pid


def _install_filter() -> None:
    control = get().router.node_control if get().router is not None else None
    if control is not None:
        control.transitive_filter = _may_connect
        control.introduce_filter = _may_introduce


def _remove_filter() -> None:
    sched = get()
    control = sched.router.node_control if sched is not None and sched.router else None
    if control is not None and control.transitive_filter is _may_connect:
        control.transitive_filter = None
        control.introduce_filter = None


def _may_connect(node: str) -> bool:
    """May a transitive (introduced) connection join this node and `node`?"""
    if not _groups:
        return True  # a free node connects transitively
    return any(node in members for members in _groups.values())


def _may_introduce(peer: str, node: str) -> bool:
    """May this node tell `peer` about `node` (so that `peer` connects to it)?

    A free node introduces everyone it knows (Erlang's full mesh; a grouped node among them
    refuses the dial itself). A node in s_groups introduces only the members of a group it
    shares with `peer`: its connections outside that group are its own, not transitive.
    """
    if not _groups:
        return True
    return any(peer in members and node in members for members in _groups.values())


async def _ensure_started(node: str | None = None) -> None:
    if node is not None and node != _api.node():
        await rpc.call(node, _ensure_started, timeout=_T)
        return
    if _api.whereis(SERVER) is None:
        try:
            await gen_server.start(_Server, None, name=SERVER, scheduler=0)
        except Exception as exc:  # started meanwhile by another caller
            if _api.whereis(SERVER) is None:
                raise OtpError("s_group_server_failed", f"s_group server: {exc}") from None


def parse_config(cfg: dict) -> list[tuple[str, list[str]]]:
    """Return the kernel `s_groups` parameter as [(name, nodes)] (empty when unset).

    Its shape is the RELEASE project's: a list of `[name, nodes]` or `[name, publish_type,
    nodes]` entries (the publish type is read and ignored).

    Raises:
        BadArg: the parameter is malformed (the message names the bad entry).
    """
    raw = cfg.get("kernel", {}).get("s_groups")
    if raw is None:
        return []
    shape = ("kernel s_groups must be a list of [name, nodes] or [name, publish_type, nodes] "
             "entries, nodes being a list of node names")
    if not isinstance(raw, (list, tuple)):
        raise BadArg(f"{shape}; got {raw!r}")
    groups: dict[str, list[str]] = {}
    for entry in raw:
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise BadArg(f"{shape}; got the entry {entry!r}")
        name, nodes = entry[0], entry[-1]
        if type(name) is not str or not name:
            raise BadArg(f"{shape}; the entry {entry!r} has no group name")
        if name in groups:
            raise BadArg(f"kernel s_groups: the group {name!r} is defined twice")
        if not isinstance(nodes, (list, tuple)) or not nodes or not all(
            type(n) is str and n.count("@") == 1 for n in nodes
        ):
            raise BadArg(f"{shape}; the group {name!r} has the nodes {nodes!r}")
        groups[name] = sorted(dict.fromkeys(nodes))
    return list(groups.items())


async def boot(groups: list[tuple[str, list[str]]]) -> None:
    """Take this node's s_groups from the kernel config at boot (see `parse_config`).

    As in SD Erlang, every node reads the same definitions: the groups that list this node
    are its own (connections limited to their members from now on), the others are known
    by name; nothing is dialled.
    """
    await _ensure_started()
    here = _api.node()
    for name, members in groups:
        if here in members:
            await gen_server.call(SERVER, ("set_group", name, members), _T)
        else:
            await gen_server.call(SERVER, ("known", name), _T)


def _check_group(name: Any, what: str) -> None:
    if type(name) is not str or not name:
        raise BadArg(f"{what} expects an s_group name str, got {name!r}")


def _check_nodes(nodes: Any, what: str) -> list[str]:
    if not isinstance(nodes, (list, tuple)) or not all(
        type(n) is str and n.count("@") == 1 for n in nodes
    ):
        raise BadArg(f"{what} expects a list of node names, got {nodes!r}")
    return list(dict.fromkeys(nodes))


async def _distribute(
    name: str, members: list[str] | None, targets: list[str], names: list | None = None
) -> None:
    req = ("set_group", name, members) if names is None else ("set_group", name, members, names)
    for node in targets:
        if node == _api.node():
            await gen_server.call(SERVER, req, _T)
            continue
        if not await net.connect(node):
            raise OtpError(("nodedown", node), f"s_group {name!r}: cannot reach {node!r}")
        await _ensure_started(node)
        await gen_server.call((SERVER, node), req, _T)


def _require_distributed(what: str) -> None:
    sched = get()
    if sched.router is None or sched.router.ports is None:
        raise OtpError("not_distributed", f"{what}: this node is not distributed (run(name=))")


async def new_s_group(name: str, nodes: list[str]) -> tuple[str, list[str]]:
    """Create s_group `name` of `nodes` (this node included); return `(name, nodes)`.

    Raises:
        OtpError: "s_group_name_is_in_use" for a name this node knows; ("nodedown", n)
            when a member cannot be reached.
    """
    current_process("pyotp.s_group.new_s_group()")
    _check_group(name, "new_s_group")
    members = _check_nodes(nodes, "new_s_group")
    _require_distributed("new_s_group")
    await _ensure_started()
    groups, known, _ = await _view()
    if name in groups or name in known:
        raise OtpError("s_group_name_is_in_use", f"s_group name {name!r} is in use")
    here = _api.node()
    if here not in members:
        members.insert(0, here)
    members = sorted(members)
    # Our own replica first: the connections made below must already be group-limited.
    await gen_server.call(SERVER, ("set_group", name, members), _T)
    await _distribute(name, members, [n for n in members if n != here])
    return (name, members)


async def delete_s_group(name: str) -> None:
    """Delete s_group `name` on all its members.

    Raises:
        OtpError: "remote_s_group" when this node is not a member.
    """
    current_process("pyotp.s_group.delete_s_group()")
    _check_group(name, "delete_s_group")
    await _ensure_started()
    members = await _own(name)
    await _distribute(name, None, members)


async def _own(name: str) -> list[str]:
    groups, _, _ = await _view()
    members = groups.get(name)
    if members is None:
        raise OtpError("remote_s_group", f"this node is not in s_group {name!r}")
    return list(members)


async def add_nodes(name: str, nodes: list[str]) -> tuple[str, list[str]]:
    """Add `nodes` to s_group `name`; return `(name, all members)`.

    Behind the scenes:
    1. This node's replica takes the new members first, so the connections made below are
       already allowed by its groups; then every old member's does.
    2. Only then is the group's name table read here and handed to each joining node with
       the membership: a name registered from now on reaches the joiners anyway (every
       member lists them), one registered before is in the copy.

    Raises:
        OtpError: "remote_s_group" when this node is not a member.
    """
    current_process("pyotp.s_group.add_nodes()")
    _check_group(name, "add_nodes")
    new = _check_nodes(nodes, "add_nodes")
    await _ensure_started()
    old = await _own(name)
    here = _api.node()
    members = sorted(set(old) | set(new))
    await _distribute(name, members, [here, *(n for n in old if n != here)])
    joining = [n for n in members if n not in old]
    if joining:
        names = await gen_server.call(SERVER, ("names", name), _T)
        await _distribute(name, members, joining, names)
    return (name, members)


async def remove_nodes(name: str, nodes: list[str]) -> None:
    """Remove `nodes` from s_group `name`.

    Raises:
        OtpError: "remote_s_group" when this node is not a member; "cannot_remove_itself"
            when `nodes` holds this node.
    """
    current_process("pyotp.s_group.remove_nodes()")
    _check_group(name, "remove_nodes")
    gone = _check_nodes(nodes, "remove_nodes")
    await _ensure_started()
    members = await _own(name)
    if _api.node() in gone:
        raise OtpError("cannot_remove_itself", "remove_nodes: a node cannot remove itself")
    left = [n for n in members if n not in gone]
    await _distribute(name, left, members)


async def s_groups() -> tuple[list[str], list[str]] | None:
    """Return `(own group names, other known group names)`, or None on a free node."""
    current_process("pyotp.s_group.s_groups()")
    groups, known, _ = await _view()
    if not groups and not known:
        return None
    return (sorted(groups), sorted(set(known) - set(groups)))


async def own_s_groups() -> list[tuple[str, list[str]]]:
    """Return this node's s_groups as `(name, members)`."""
    current_process("pyotp.s_group.own_s_groups()")
    groups, _, _ = await _view()
    return [(name, list(members)) for name, members in sorted(groups.items())]


async def register_name(group: str, name: str, pid: Pid) -> bool:
    """Register `name` for `pid` in s_group `group` (on all its members).

    Returns:
        True, or False when `name` is taken in `group` (even by `pid`) or `pid` already
        holds a name in `group` (a pid may hold one name in each of its groups).

    Raises:
        OtpError: "remote_s_group" when this node is not a member of `group`.
        BadArg: a malformed argument.
    """
    current_process("pyotp.s_group.register_name()")
    _check_group(group, "register_name")
    if type(name) is not str or type(pid) is not Pid:
        raise BadArg(f"register_name expects (group, name str, pid), got {name!r}, {pid!r}")
    await _ensure_started()
    members = await _own(group)
    reserved = []
    for node in members:
        dest = SERVER if node == _api.node() else (SERVER, node)
        try:
            ok = await gen_server.call(dest, ("reserve", group, name, pid), _T)
        except Exception:  # a member that cannot answer cannot agree
            ok = False
        if not ok:
            for done in reserved:
                d = SERVER if done == _api.node() else (SERVER, done)
                await gen_server.call(d, ("drop", group, name, pid), _T)
            return False
        reserved.append(node)
    return True


async def whereis_name(group: str, name: str) -> Pid | None:
    """Return the pid registered as `name` in `group`, or None."""
    current_process("pyotp.s_group.whereis_name()")
    _check_group(group, "whereis_name")
    _, _, names = await _view()
    return names.get((group, name))


def send(group: str, name: str, msg: Any) -> Pid:
    """Send `msg` to the process registered as `name` in `group`; return its pid.

    Raises:
        BadArg: no such name in that group (as Erlang's exit badarg).
    """
    current_process("pyotp.s_group.send()")
    pid = _names.get((group, name))
    if pid is None:
        raise BadArg(f"s_group.send: no process is registered as {name!r} in {group!r}")
    _api.send(pid, msg)
    return pid
