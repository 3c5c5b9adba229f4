"""s_groups and implicit placement between real node OS processes (SD Erlang)."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import COOKIE, T, node_name

import pyotp
from pyotp import ANY, placement, s_group

pytestmark = pytest.mark.slow


def run_node(main, *args, attributes=None):
    return pyotp.run(main, *args, name=node_name("a"), cookie=COOKIE,
                     attributes=attributes, config={"kernel": {"net_ticktime": 1}})


async def idle():
    await pyotp.receive(("never",))


def test_s_group_shapes_and_errors_on_one_node(peer):
    b = peer("b")

    async def main():
        assert await s_group.s_groups() is None  # a free node
        here = pyotp.node()
        name, members = await s_group.new_s_group("g1", [b.name])
        assert (name, members) == ("g1", sorted([here, b.name]))
        with pytest.raises(pyotp.OtpError) as in_use:
            await s_group.new_s_group("g1", [b.name])
        with pytest.raises(pyotp.OtpError) as remote:
            await s_group.add_nodes("nope", [b.name])
        with pytest.raises(pyotp.OtpError) as itself:
            await s_group.remove_nodes("g1", [here])
        own = await s_group.own_s_groups()
        groups = await s_group.s_groups()
        return in_use.value.reason, remote.value.reason, itself.value.reason, own, groups

    in_use, remote, itself, own, groups = run_node(main)
    assert in_use == "s_group_name_is_in_use" and remote == "remote_s_group"
    assert itself == "cannot_remove_itself"
    assert len(own) == 1 and own[0][0] == "g1" and groups == (["g1"], [])


def test_names_in_an_s_group_are_seen_by_members_and_freed_on_exit(peer):
    b = peer("b")

    async def main():
        await s_group.new_s_group("g", [b.name])
        pid = pyotp.spawn(idle)
        assert await s_group.register_name("g", "svc", pid) is True
        assert await s_group.register_name("g", "svc", pyotp.self()) is False
        assert await s_group.register_name("g", "svc", pid) is False  # even by that pid
        assert await s_group.register_name("g", "svc2", pid) is False  # pid has a name
        assert await pyotp.rpc.call(b.name, s_group.register_name, "g", "svc3", pid,
                                    timeout=T) is False
        assert await s_group.whereis_name("g", "svc2") is None
        assert await s_group.whereis_name("g", "svc") == pid
        there = await pyotp.rpc.call(b.name, s_group.whereis_name, "g", "svc", timeout=T)
        with pytest.raises(pyotp.BadArg):
            s_group.send("g", "nobody", "x")
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        end = time.monotonic() + T
        while await s_group.whereis_name("g", "svc") is not None and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return there == pid, await s_group.whereis_name("g", "svc")

    assert run_node(main) == (True, None)


def test_connections_are_not_transitive_across_s_groups(peer, monkeypatch):
    c = peer("c")
    monkeypatch.setenv("PEER_CONNECT", c.name)
    b = peer("b")  # connected to C before we ever meet it
    monkeypatch.delenv("PEER_CONNECT")

    async def main():
        # A, in an s_group with B only, must not be pulled into a connection with C ...
        await s_group.new_s_group("ab", [b.name])
        await asyncio.sleep(1.0)  # give a transitive connect every chance to happen
        in_group = pyotp.nodes()
        # ... while a free node is (the control case: Erlang's full mesh)
        await s_group.delete_s_group("ab")
        return in_group

    assert run_node(main) == [b.name]


def test_a_free_node_connects_transitively(peer, monkeypatch):
    c = peer("c")
    monkeypatch.setenv("PEER_CONNECT", c.name)
    b = peer("b")
    monkeypatch.delenv("PEER_CONNECT")

    async def main():
        assert await pyotp.net.connect(b.name)
        end = time.monotonic() + T
        while len(pyotp.nodes()) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        return sorted(pyotp.nodes())

    assert run_node(main) == sorted([b.name, c.name])


def test_choose_nodes_filters_by_attributes_and_distance(peer):
    b = peer("b")

    async def main():
        assert await pyotp.net.connect(b.name)
        here = pyotp.node()
        everyone = await placement.choose_nodes()
        gpu = await placement.choose_nodes(("gpu", "eq", True))
        no_attr = await placement.choose_nodes(("colour", "ne", "red"))
        cores = await placement.choose_nodes(("num_processors", "ge", 1))
        near = await placement.choose_nodes(near=here, max_distance=0.0)
        with pytest.raises(pyotp.BadArg, match="operator"):
            await placement.choose_nodes(("gpu", "like", True))
        chosen = await placement.choose_node(("gpu", "eq", True))
        pid = pyotp.spawn(idle, placement=placement.Spec(("gpu", "eq", True)))
        return here, everyone, gpu, no_attr, cores, near, chosen, pid.node

    here, everyone, gpu, no_attr, cores, near, chosen, spawned_on = run_node(
        main, attributes={"gpu": True, "rack": "r1"}
    )
    assert set(everyone) == {here, b.name} and gpu == [here] and no_attr == []
    assert set(cores) == {here, b.name} and near == [here]
    assert chosen == here and spawned_on == here
