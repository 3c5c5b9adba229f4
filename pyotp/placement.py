"""Implicit placement over nodes (SD Erlang's attr/choose_node libraries).

Where it sits: user code → **pyotp.placement** → node attributes (given at boot with
`run(attributes=...)`, plus dynamic ones read with psutil) fetched from each candidate node
with `rpc.call` → the nodes that match, nearest and least loaded first.

Predicates are `(attr, op, value)` with `op` in `eq ne lt le gt ge`; a node without the
attribute never matches (not even `ne`). Built-in dynamic attributes: `num_processors`,
`mem_total`, `mem_free`, `loadavg1`, `loadavg5`, `loadavg15`, `num_processes` (pyotp
processes on the node), `os_type`. Distance over the locality tree: 0 same node, 0.25 same
host, 0.5 same `rack` attribute, 0.75 same `zone` attribute, 1.0 otherwise. Load: the node's
scheduler CPU and run queues, per scheduler, plus the host's loadavg1 per processor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import psutil

from schedulers import current_process
from transport import BadArg, OtpError, Pid

from . import _api, _config, rpc, s_group

__all__ = ["Spec", "choose_node", "choose_nodes", "distance", "node_attributes"]

_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}
_INFO_TIMEOUT = 5.0
# node -> its last fetched info, used by spawn(placement=Spec(...)), which cannot wait
_cache: dict[str, dict[str, Any]] = {}


class Spec:
    """What `spawn(..., placement=Spec(...))` asks for: the arguments of `choose_node`.

    A spawn cannot wait for other nodes, so it decides from the attributes seen by the last
    `choose_nodes`/`choose_node` call (the calling node is always known).
    """

    __slots__ = ("group", "max_distance", "near", "predicates")

    def __init__(
        self, *predicates: tuple, group: str | None = None, near: Any = None,
        max_distance: float | None = None,
    ) -> None:
        _check_predicates(predicates)
        _check_options(group, near, max_distance)
        self.predicates = predicates
        self.group = group
        self.near = near
        self.max_distance = max_distance

    def __repr__(self) -> str:
        return f"placement.Spec{self.predicates!r}"


def _check_options(group: Any, near: Any, max_distance: Any) -> None:
    if group is not None and (type(group) is not str or not group):
        raise BadArg(f"placement group= expects an s_group name str, got {group!r}")
    _near_node(near)
    if max_distance is not None and (
        type(max_distance) not in (int, float) or not max_distance >= 0
    ):
        raise BadArg(f"max_distance must be a number >= 0, got {max_distance!r}")


def _check_predicates(predicates: tuple) -> None:
    for p in predicates:
        if type(p) is not tuple or len(p) != 3 or type(p[0]) is not str:
            raise BadArg(f"a placement predicate is (attr, op, value), got {p!r}")
        if p[1] not in _OPS:
            raise BadArg(
                f"unknown placement operator {p[1]!r} in {p!r}; use one of {sorted(_OPS)}"
            )


def node_attributes() -> dict[str, Any]:
    """Return this node's attributes: those given at boot plus the dynamic ones."""
    node = _config.current()
    attrs = dict(node.attributes) if node is not None else {}
    vm = psutil.virtual_memory()
    load1, load5, load15 = os.getloadavg()
    attrs.update(
        num_processors=psutil.cpu_count() or 1,
        mem_total=vm.total,
        mem_free=vm.available,
        loadavg1=load1,
        loadavg5=load5,
        loadavg15=load15,
        os_type=sys.platform,
    )
    stats = _api.scheduler_statistics()
    attrs["num_processes"] = sum(s.processes for s in stats)
    return attrs


def _node_info() -> dict[str, Any]:
    """This node's attributes and load (what candidates answer over rpc)."""
    attrs = node_attributes()
    stats = _api.scheduler_statistics()
    per_sched = [s.cpu / 100.0 + s.run_queue / 100.0 + min(s.lag, 1.0) for s in stats]
    load = sum(per_sched) / max(len(per_sched), 1)
    load += attrs["loadavg1"] / attrs["num_processors"]
    return {"attributes": attrs, "load": load}


def _host(node: str) -> str:
    host = node.split("@", 1)[1] if "@" in node else node
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def distance(a: str, b: str, attrs_a: dict | None = None, attrs_b: dict | None = None) -> float:
    """Distance of nodes `a` and `b` over the locality tree (see the module docstring)."""
    if type(a) is not str or type(b) is not str:
        raise BadArg(f"placement.distance expects two node names, got {a!r}, {b!r}")
    if a == b:
        return 0.0
    if _host(a) == _host(b):
        return 0.25
    attrs_a, attrs_b = attrs_a or {}, attrs_b or {}
    for level, d in (("rack", 0.5), ("zone", 0.75)):
        if level in attrs_a and attrs_a.get(level) == attrs_b.get(level):
            return d
    return 1.0


def _matches(attrs: dict[str, Any], predicates: tuple) -> bool:
    for attr, op, value in predicates:
        if attr not in attrs:
            return False
        try:
            if not _OPS[op](attrs[attr], value):
                return False
        except TypeError:
            return False  # incomparable values never match
    return True


async def _candidates(group: str | None) -> list[str]:
    here = _api.node()
    if group is None:
        return [here, *_api.nodes()]
    for name, members in await s_group.own_s_groups():
        if name == group:
            return list(members)
    raise OtpError("remote_s_group", f"placement: this node is not in s_group {group!r}")


async def _info(node: str) -> dict[str, Any] | None:
    if node == _api.node():
        info = _node_info()
    else:
        try:
            info = await rpc.call(node, _node_info, timeout=_INFO_TIMEOUT)
        except OtpError:
            _cache.pop(node, None)
            return None
    _cache[node] = info
    return info


def _near_node(near: Any) -> str | None:
    if near is None:
        return None
    if type(near) is Pid:
        return near.node
    if type(near) is str:
        return near
    raise BadArg(f"placement near= expects a node name or a pid, got {near!r}")


def _rank(
    infos: dict[str, dict], predicates: tuple, near: str | None, near_attrs: dict | None,
    max_distance: float | None,
) -> list[str]:
    ranked = []
    for node, info in infos.items():
        attrs = info["attributes"]
        if not _matches(attrs, predicates):
            continue
        d = distance(near, node, near_attrs, attrs) if near else 0.0
        if max_distance is not None and d > max_distance:
            continue
        ranked.append((d, info["load"], node))
    ranked.sort()
    return [node for _, _, node in ranked]


async def choose_nodes(
    *predicates: tuple, group: str | None = None, near: Any = None,
    max_distance: float | None = None,
) -> list[str]:
    """Return the nodes whose attributes satisfy every predicate, nearest/least loaded first.

    Args:
        predicates: `(attr, op, value)` tuples, op in eq ne lt le gt ge.
        group: only members of this s_group (which this node must be in).
        near: a node name or a pid; ranks by distance from it.
        max_distance: drop nodes farther than this from `near` (0..1).

    Raises:
        BadArg: a malformed predicate, an unknown operator, or a bad option.
        OtpError: "remote_s_group" when `group` is not one of this node's s_groups.
    """
    current_process("pyotp.placement.choose_nodes()")
    _check_predicates(predicates)
    _check_options(group, near, max_distance)
    near_node = _near_node(near)
    infos = {}
    for node in await _candidates(group):
        info = await _info(node)
        if info is not None:
            infos[node] = info
    near_attrs = None
    if near_node is not None:
        near_info = infos.get(near_node) or await _info(near_node)
        near_attrs = near_info["attributes"] if near_info else {}
    return _rank(infos, predicates, near_node, near_attrs, max_distance)


async def choose_node(
    *predicates: tuple, group: str | None = None, near: Any = None,
    max_distance: float | None = None,
) -> str:
    """Return the least-loaded node matching (see `choose_nodes`).

    Raises:
        OtpError: "no_matching_node" when none matches; as `choose_nodes` otherwise.
    """
    nodes = await choose_nodes(*predicates, group=group, near=near, max_distance=max_distance)
    if not nodes:
        raise OtpError("no_matching_node", f"no node matches {predicates!r}")
    return nodes[0]


def choose_cached(spec: Spec) -> str:
    """Internal, for spawn: pick a node for `spec` from the last attributes seen."""
    here = _api.node()
    infos = {here: _node_info()}
    for node in _api.nodes():
        if node in _cache:
            infos[node] = _cache[node]
    near = _near_node(spec.near)
    near_attrs = infos.get(near, {}).get("attributes") if near else None
    ranked = _rank(infos, spec.predicates, near, near_attrs, spec.max_distance)
    if not ranked:
        raise BadArg(f"spawn placement={spec!r}: no known node matches")
    return ranked[0]


def _resolve_spec(placement: Any) -> str:
    if type(placement) is not Spec:
        raise BadArg(f"spawn placement= expects 'auto' or a placement.Spec, got {placement!r}")
    return choose_cached(placement)


_api.placement_resolver = _resolve_spec
