"""pyotp.pg: process groups, on one node and across real node OS processes."""

from __future__ import annotations

import asyncio
import os
import time

import dist_helpers as h
import pytest
from conftest import COOKIE, T, node_name

import pyotp
from pyotp import ANY, pg

pytestmark = pytest.mark.slow


def run_node(main, *args, ticktime=1.0, cookie=COOKIE):
    return pyotp.run(main, *args, name=node_name("a"), cookie=cookie,
                     config={"kernel": {"net_ticktime": ticktime}})


# --------------------------------------------------------------------- one node


def test_reads_from_plain_code_raise_not_in_process():
    for read in (pg.get_members, pg.get_local_members, pg.which_groups):
        with pytest.raises(pyotp.NotInProcess):
            read("g")


def test_join_leave_and_get_members_on_one_node():
    """Ports pg_SUITE:single."""

    async def main():
        p1, p2 = pyotp.spawn(h.idle), pyotp.spawn(h.idle)
        assert await pg.join("g", p1) == "ok"
        assert await pg.join("g", [p1, p2]) == "ok"  # p1 twice: it is listed twice
        members = sorted(pg.get_members("g"))
        local = sorted(pg.get_local_members("g"))
        groups = pg.which_groups()
        assert await pg.leave("g", p1) == "ok"
        after_one_leave = sorted(pg.get_members("g"))
        assert await pg.leave("other", p1) == "not_joined"
        assert await pg.leave("g", [p1, p2]) == "ok"
        empty = (pg.get_members("g"), pg.which_groups())
        for p in (p1, p2):
            pyotp.exit(p, "kill")
        return members == sorted([p1, p1, p2]), local == members, groups, \
            after_one_leave == sorted([p1, p2]), empty

    assert pyotp.run(main) == (True, True, ["g"], True, ([], []))


def test_a_member_that_exits_leaves_every_group():
    """Ports pg_SUITE:process_owner_check (a dead member is dropped)."""

    async def main():
        pid = pyotp.spawn(h.crash_on, "die")
        await pg.join("g1", pid)
        await pg.join("g2", pid)
        await pg.join("g2", pid)
        ref, members = pg.monitor("g2")
        assert members == [pid, pid]
        pyotp.send(pid, "die")
        left = await pyotp.receive((ref, "leave", "g2", ANY), timeout=T)
        return left[3] == [pid, pid], pg.get_members("g1"), pg.which_groups()

    assert pyotp.run(main) == (True, [], [])


def test_monitor_reports_joins_and_leaves_until_demonitor():
    """Ports pg_SUITE:monitor."""

    async def main():
        ref, members = pg.monitor("watched")
        assert members == []
        pid = pyotp.spawn(h.idle)
        await pg.join("watched", pid)
        joined = await pyotp.receive((ref, "join", "watched", ANY), timeout=T)
        await pg.join("unwatched", pid)
        await pg.leave("watched", pid)
        left = await pyotp.receive((ref, ANY, ANY, ANY), timeout=T)
        assert pg.demonitor(ref) is True and pg.demonitor(ref) is False
        await pg.join("watched", pid)
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive((ref, ANY, ANY, ANY), timeout=0.2)
        pyotp.exit(pid, "kill")
        return joined[3] == [pid], left[1:3], left[3] == [pid]

    assert pyotp.run(main) == (True, ("leave", "watched"), True)


def test_scopes_are_isolated():
    """Ports pg_SUITE:errors-adjacent scope handling (a named scope next to the default)."""

    async def main():
        await pg.start_link("other")
        pid = pyotp.spawn(h.idle)
        await pg.join("g", pid, scope="other")
        in_default = pg.get_members("g")
        in_other = pg.get_members("g", scope="other")
        with pytest.raises(pyotp.StartError):
            await pg.start("other")
        with pytest.raises(pyotp.BadArg):
            await pg.join("g", "not a pid")
        pyotp.exit(pid, "kill")
        return in_default, in_other == [pid], pg.which_groups("other")

    assert pyotp.run(main) == ([], True, ["g"])


# --------------------------------------------------------------------- across nodes


def test_members_joined_on_either_node_are_seen_on_both(peer):
    """Ports pg_SUITE:two."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        mine = pyotp.spawn(h.idle)
        await pg.join("g", mine)
        theirs = await pyotp.rpc.call(b.name, h.pg_join_idle, "g", timeout=T)
        on_b = await pyotp.rpc.call(b.name, h.pg_members, "g", timeout=T)
        on_b_local = await pyotp.rpc.call(b.name, h.pg_local_members, "g", timeout=T)
        here = sorted(pg.get_members("g"))
        pyotp.exit(mine, "kill")
        return (here == sorted([mine, theirs]), on_b == here, on_b_local == [theirs],
                pg.get_local_members("g") == [mine])

    assert run_node(main) == (True, True, True, True)


def test_a_first_join_is_seen_at_once_on_nodes_whose_scope_server_was_not_met_yet(peer):
    """pg's promise: join returns once every connected node's scope server applied it,
    also right after a connection, before discovery met that node's server (or started
    it there)."""
    b, c = peer("b"), peer("c")

    async def main():
        assert await pyotp.net.connect(b.name)
        first = pyotp.spawn(h.idle)
        await pg.join("g", first)
        on_b = await pyotp.rpc.call(b.name, h.pg_members, "g", timeout=T)
        assert await pyotp.net.connect(c.name)
        second = pyotp.spawn(h.idle)
        await pg.join("g", second)
        on_c = await pyotp.rpc.call(c.name, h.pg_members, "g", timeout=T)
        fresh = pyotp.spawn(h.idle)
        await pg.join("x", fresh, scope="fresh")
        on_b_fresh = await pyotp.rpc.call(b.name, h.pg_members, "x", "fresh", timeout=T)
        return (on_b == [first], on_c == sorted([first, second]), on_b_fresh == [fresh])

    assert run_node(main) == (True, True, True)


def test_a_remote_pid_joins_through_its_own_node(peer):
    """Ports pg_SUITE:dyn_distribution (membership owned by the member's node)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        remote = pyotp.spawn(h.idle, node=b.name)
        await pg.join("g", remote)
        on_b_local = await pyotp.rpc.call(b.name, h.pg_local_members, "g", timeout=T)
        here = pg.get_members("g"), pg.get_local_members("g")
        assert await pg.leave("g", remote) == "ok"
        gone = await pyotp.rpc.call(b.name, h.pg_members, "g", timeout=T)
        return on_b_local == [remote], here == ([remote], []), gone, pg.get_members("g")

    assert run_node(main) == (True, True, [], [])


def test_monitor_sees_remote_joins_and_exits(peer):
    """Ports pg_SUITE:monitor (remote changes)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        ref, _ = pg.monitor("g")
        theirs = await pyotp.rpc.call(b.name, h.pg_join_idle, "g", "pg", 2, timeout=T)
        joined = []
        while len(joined) < 2:  # one message per join, or one for both if a sync brought them
            joined += (await pyotp.receive((ref, "join", "g", ANY), timeout=T))[3]
        await pyotp.rpc.call(b.name, h.kill, theirs, timeout=T)
        left = await pyotp.receive((ref, "leave", "g", ANY), timeout=T)
        return joined == [theirs, theirs], left[3] == [theirs, theirs], pg.get_members("g")

    assert run_node(main) == (True, True, [])


def test_members_of_a_killed_node_leave(peer):
    """Ports pg_SUITE:netsplit (members behind a lost connection are dropped)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        theirs = await pyotp.rpc.call(b.name, h.pg_join_idle, "g", timeout=T)
        mine = pyotp.spawn(h.idle)
        await pg.join("g", mine)
        ref, members = pg.monitor("g")
        assert sorted(members) == sorted([mine, theirs])
        b.kill()
        left = await pyotp.receive((ref, "leave", "g", ANY), timeout=T)
        pyotp.exit(mine, "kill")
        return left[3] == [theirs], pg.get_members("g") == [mine]

    assert run_node(main) == (True, True)


def test_scopes_are_isolated_across_nodes(peer):
    """Ports pg_SUITE:two (with two scopes side by side)."""
    b = peer()

    async def main():
        assert await pyotp.net.connect(b.name)
        theirs = await pyotp.rpc.call(b.name, h.pg_join_idle, "g", "blue", timeout=T)
        try:  # b's join started the scope here already (every node it meets runs it)
            await pg.start("blue")
        except pyotp.StartError as e:
            assert e.reason[0] == "already_started"
        ref, members = pg.monitor("g", scope="blue")
        if not members:  # discovery is under way: the sync brings b's member
            await pyotp.receive((ref, "join", "g", ANY), timeout=T)
        return pg.get_members("g", scope="blue") == [theirs], pg.get_members("g")

    assert run_node(main) == (True, [])


async def _members_on_this_scheduler(group, parent):
    from pyotp import pg as p

    end = time.monotonic() + 10
    while not p.get_members(group) and time.monotonic() < end:
        await asyncio.sleep(0.01)
    pyotp.send(parent, ("members", p.get_members(group), os.getpid()))


def test_get_members_answers_on_every_scheduler_of_a_node():
    async def main():
        from pyotp import pg as p

        await p.join("everywhere", pyotp.self())
        pyotp.spawn(_members_on_this_scheduler, "everywhere", pyotp.self(), scheduler=1)
        _, members, their_os = await pyotp.receive(("members", ANY, ANY), timeout=10)
        return members == [pyotp.self()], their_os != os.getpid()

    assert pyotp.run(main, name=node_name("p"), cookie="c", schedulers=2) == (True, True)


async def _join_read_leave_read(group, parent):
    """Join and leave `group`, reading the members right after each (on this scheduler)."""
    from pyotp import pg as p

    me = pyotp.self()
    await p.join(group, me)
    joined = (p.get_members(group), p.get_local_members(group), p.which_groups())
    await p.leave(group, me)
    left = (p.get_members(group), p.get_local_members(group), p.which_groups())
    pyotp.send(parent, ("read", joined == ([me], [me], [group]), left == ([], [], [])))


def test_a_join_or_leave_is_seen_at_once_by_the_caller_on_another_scheduler():
    """As Erlang's pg (an ets table): once join/leave returns, every process of the node
    reads the change, also on the scheduler that is not the scope server's."""

    async def main():
        pyotp.spawn(_join_read_leave_read, "here", pyotp.self(), scheduler=1)
        return (await pyotp.receive(("read", ANY, ANY), timeout=T))[1:]

    assert pyotp.run(main, schedulers=2) == (True, True)


def test_a_bad_group_is_badarg_in_the_caller_and_the_scope_server_lives_on():
    """An unhashable group used to crash the scope server (its table lost) while join said
    "ok"; now it is refused in the caller, as is a group that cannot cross to a node."""

    async def main():
        pid = pyotp.spawn(h.idle)
        await pg.join("g", pid)
        server = pyotp.whereis("$pg:" + pg.DEFAULT_SCOPE)  # the scope server's name
        for bad in ([1], {"a": 1}, (1, [2])):
            with pytest.raises(pyotp.BadArg, match="hashable"):
                await pg.join(bad, pid)
            with pytest.raises(pyotp.BadArg, match="hashable"):
                await pg.leave(bad, pid)
            with pytest.raises(pyotp.BadArg, match="hashable"):
                pg.get_members(bad)
            with pytest.raises(pyotp.BadArg, match="hashable"):
                pg.get_local_members(bad)
            with pytest.raises(pyotp.BadArg, match="hashable"):
                pg.monitor(bad)
        with pytest.raises(pyotp.NotSerializable, match="frozenset"):
            await pg.join(frozenset([1]), pid)
        await pg.join(("g", 2), pid)  # a hashable term is fine
        alive = server is not None and pyotp.whereis("$pg:" + pg.DEFAULT_SCOPE) == server
        return alive, pg.get_members("g") == [pid], pg.get_members(("g", 2)) == [pid]

    assert pyotp.run(main) == (True, True, True)


def test_a_join_is_seen_at_once_on_every_scheduler_of_another_node(peer, monkeypatch):
    """A join made here is read on every scheduler of another node (its scope server's
    replicas) once join has returned."""
    monkeypatch.setenv("PEER_SCHEDULERS", "2")
    b = peer("b")
    monkeypatch.delenv("PEER_SCHEDULERS")

    async def main():
        assert await pyotp.net.connect(b.name)
        me = pyotp.self()
        reader = pyotp.spawn(h.members_reader, node=b.name, scheduler=1)
        seen = []
        for group in ("g1", "g2", "g3", "g4", "g5"):
            await pg.join(group, me)
            pyotp.send(reader, ("read", group, me))
            seen.append(await pyotp.receive(("members", ANY, ANY), timeout=T))
        return seen, me

    seen, me = run_node(main)
    assert seen == [("members", 1, [me])] * 5
