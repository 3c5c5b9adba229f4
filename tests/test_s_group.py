"""s_groups and implicit placement between real node OS processes (SD Erlang)."""

from __future__ import annotations

import asyncio
import time

import dist_helpers
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


async def _from_scheduler_1(group, other):
    """Run on scheduler 1 (another OS process than the s_group server's)."""
    pid = pyotp.spawn(idle)
    registered = await s_group.register_name(group, "svc1", pid)
    seen = await s_group.whereis_name(group, "svc1")
    own = await s_group.own_s_groups()
    groups = await s_group.s_groups()
    with pytest.raises(pyotp.OtpError) as in_use:
        await s_group.new_s_group(group, [other])
    end = time.monotonic() + T
    while True:  # send reads this scheduler's mirror, a moment behind the server
        try:
            sent = s_group.send(group, "svc1", "hello")
            break
        except pyotp.BadArg:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.02)
    return registered, seen == pid, own, groups, in_use.value.reason, sent == pid


def test_s_group_calls_work_from_every_scheduler_of_a_node(peer):
    """The server lives on scheduler 0; a process on scheduler 1 (another OS process) sees
    the same groups and names."""
    b = peer("b")

    async def main():
        await s_group.new_s_group("gs", [b.name])
        _relay_pid, ref = pyotp.spawn(_relay, pyotp.self(), "gs", b.name, scheduler=1,
                                  monitor=True)
        return await pyotp.receive(("result", ANY), ("DOWN", ref, ANY, ANY, ANY), timeout=3 * T)

    result = pyotp.run(main, name=node_name("a"), cookie=COOKIE, schedulers=2,
                       config={"kernel": {"net_ticktime": 1}})
    registered, seen, own, groups, in_use, sent = result[1]
    assert registered is True and seen and sent
    assert [g for g, _ in own] == ["gs"] and groups == (["gs"], [])
    assert in_use == "s_group_name_is_in_use"


async def _relay(parent, group, other):
    pyotp.send(parent, ("result", await _from_scheduler_1(group, other)))


def test_a_node_added_to_an_s_group_gets_its_names_and_members(peer):
    b, c, d = peer("b"), peer("c"), peer("d")

    async def main():
        here = pyotp.node()
        await s_group.new_s_group("g", [b.name, c.name])
        mine = pyotp.spawn(idle)
        assert await s_group.register_name("g", "on_a", mine)
        on_b = await pyotp.rpc.call(b.name, dist_helpers.spawn_idle, timeout=T)
        assert await s_group.register_name("g", "on_b", on_b)
        _, members = await s_group.add_nodes("g", [d.name])
        later = pyotp.spawn(idle)
        assert await s_group.register_name("g", "later", later)

        async def on_d(fn, *args):
            return await pyotp.rpc.call(d.name, fn, *args, timeout=T)

        seen = {n: await on_d(dist_helpers.s_group_whereis, "g", n)
                for n in ("on_a", "on_b", "later")}
        own = await on_d(dist_helpers.s_group_own)

        async def d_meets_the_group():
            return await on_d(dist_helpers.connected_nodes) == sorted([here, b.name, c.name])

        await _wait_until(d_meets_the_group, "D connected to A, B and C")
        # A copied name is still dropped on D when its process exits.
        pyotp.exit(mine, "kill")

        async def gone_on_d():
            return await on_d(dist_helpers.s_group_whereis, "g", "on_a") is None

        await _wait_until(gone_on_d, "on_a dropped on D")
        return members, seen == {"on_a": mine, "on_b": on_b, "later": later}, own

    members, seen_all, own = run_node(main)
    assert len(members) == 4 and d.name in members
    assert seen_all
    assert own == [("g", members)]


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


def test_the_kernel_s_groups_config_makes_the_groups_at_boot(peer, monkeypatch):
    """SD Erlang's static s_groups: the groups listing this node are its own (connections
    limited to their members, not transitive), the others are known by name."""
    c = peer("c")
    monkeypatch.setenv("PEER_CONNECT", c.name)
    b = peer("b")  # connected to C before A ever meets it
    monkeypatch.delenv("PEER_CONNECT")
    a = node_name("a")
    config = {"kernel": {"net_ticktime": 1, "s_groups": [
        ["ab", [a, b.name]], ["cd", "normal", [c.name, "d@127.0.0.1"]]]}}

    async def main():
        groups = await s_group.s_groups(), await s_group.own_s_groups()
        assert await pyotp.net.connect(b.name)
        await asyncio.sleep(1.0)  # give a transitive connect to C every chance to happen
        return groups, pyotp.nodes()

    groups, connected = pyotp.run(main, name=a, cookie=COOKIE, config=config)
    assert groups == ((["ab"], ["cd"]), [("ab", sorted([a, b.name]))])
    assert connected == [b.name]


@pytest.mark.parametrize("bad", [5, [["g"]], [["g", []]], [[1, ["a@h"]]], [["g", ["noat"]]],
                                 [["g", ["a@h"]], ["g", ["b@h"]]]])
def test_a_malformed_kernel_s_groups_config_is_badarg_before_boot(bad):
    async def main():
        return "booted"

    with pytest.raises(pyotp.BadArg, match="s_groups"):
        pyotp.run(main, name=node_name("a"), cookie=COOKIE, config={"kernel": {"s_groups": bad}})


async def _wait_until(predicate, what):
    """Poll the coroutine function `predicate` until it is true (deadline T)."""
    end = time.monotonic() + T
    while not await predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _stays_only(nodes, settle=2.0):
    """Watch this node's connections for `settle` s; return every set seen other than `nodes`."""
    seen = []
    end = time.monotonic() + settle
    while time.monotonic() < end:
        now = sorted(pyotp.nodes())
        if now != sorted(nodes):
            seen.append(now)
        await asyncio.sleep(0.05)
    return seen


@pytest.mark.parametrize("how", ["b_dials_free_c", "free_c_dials_b", "b_makes_a_group_with_c"])
def test_a_grouped_node_is_not_pulled_into_a_group_mates_other_connections(peer, monkeypatch, how):
    b = peer("b")

    async def main():
        loop = asyncio.get_running_loop()
        here = pyotp.node()
        await s_group.new_s_group("g1", [b.name])
        if how == "free_c_dials_b":
            monkeypatch.setenv("PEER_CONNECT", b.name)  # C dials B as it boots
        c = await loop.run_in_executor(None, peer, "c")
        monkeypatch.delenv("PEER_CONNECT", raising=False)
        if how == "b_dials_free_c":
            assert await pyotp.rpc.call(b.name, dist_helpers.net_connect, c.name, timeout=T)
        elif how == "b_makes_a_group_with_c":
            await pyotp.rpc.call(b.name, dist_helpers.s_group_new, "g2", [b.name, c.name],
                                 timeout=T)

        async def b_sees_c():
            there = await pyotp.rpc.call(b.name, dist_helpers.connected_nodes, timeout=T)
            return c.name in there

        await _wait_until(b_sees_c, "B connected to C")
        extra = await _stays_only([b.name])  # a transitive connect has every chance
        on_b = await pyotp.rpc.call(b.name, dist_helpers.connected_nodes, timeout=T)
        on_c = await pyotp.rpc.call(b.name, pyotp.rpc.call, c.name,
                                    dist_helpers.connected_nodes, timeout=T)
        return here, extra, on_b, on_c, c.name

    here, extra, on_b, on_c, c_name = run_node(main)
    assert extra == []  # A was never connected to anyone but B
    assert on_b == sorted([here, c_name])
    assert on_c == [b.name]


def test_a_grouped_node_refuses_a_connection_a_free_node_was_introduced_to(peer, monkeypatch):
    b = peer("b")
    x = peer("x")

    async def main():
        loop = asyncio.get_running_loop()
        await s_group.new_s_group("g1", [b.name])
        assert await pyotp.net.connect(x.name)  # explicit: A's own, outside its group
        monkeypatch.setenv("PEER_CONNECT", x.name)  # free C dials free X, which knows A
        c = await loop.run_in_executor(None, peer, "c")
        monkeypatch.delenv("PEER_CONNECT")
        extra = await _stays_only([b.name, x.name])
        on_c = await pyotp.rpc.call(x.name, pyotp.rpc.call, c.name,
                                    dist_helpers.connected_nodes, timeout=T)
        return extra, on_c

    extra, on_c = run_node(main)
    assert extra == []
    assert on_c == [x.name]


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


def test_placement_options_of_the_wrong_type_are_badarg():
    """group=5 used to say "this node is not in s_group 5"; distance(5, 6) a raw TypeError."""

    async def main():
        for opts in ({"group": 5}, {"group": ""}, {"near": 5}, {"max_distance": "x"},
                     {"max_distance": float("nan")}):
            with pytest.raises(pyotp.BadArg):
                await placement.choose_nodes(**opts)
            with pytest.raises(pyotp.BadArg):
                placement.Spec(**opts)
        with pytest.raises(pyotp.BadArg, match="node names"):
            placement.distance(5, 6)
        return await placement.choose_nodes(max_distance=0.5)

    assert len(run_node(main)) == 1  # this node only
