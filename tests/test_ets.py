"""pyotp.ets: table types, keypos, access rules, matching, select, info, owner exit.

Cases port OTP's `lib/stdlib/test/ets_SUITE.erl` where one exists; each names it.
"""

from __future__ import annotations

import pytest

import pyotp
from pyotp import ANY, ets

WAIT = 5.0


async def wait_down(pid):
    ref = pyotp.monitor(pid)
    await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=WAIT)


async def try_in_other(parent, fn, *args):
    """Run fn(*args) in this process; send back ("ok", result) or ("badarg", message)."""
    try:
        pyotp.send(parent, ("ok", fn(*args)))
    except pyotp.BadArg as e:
        pyotp.send(parent, ("badarg", str(e)))


async def other(fn, *args):
    pyotp.spawn(try_in_other, pyotp.self(), fn, *args)
    return await pyotp.receive(("ok", ANY), ("badarg", ANY), timeout=WAIT)


async def owner_of_table(parent, name, opts):
    tab = ets.new(name, opts)
    ets.insert(tab, ("k", 1))
    pyotp.send(parent, ("table", tab))
    await pyotp.receive("stop")


# ------------------------------------------------------------------ types


def test_a_set_keeps_one_object_per_key_and_insert_replaces():
    """Ports ets_SUITE:t_insert_list (set half)."""

    def main():
        t = ets.new("s", ["set"])
        assert ets.insert(t, ("a", 1)) is True
        ets.insert(t, [("b", 2), ("a", 3)])
        return sorted(ets.tab2list(t)), ets.lookup(t, "a"), ets.lookup(t, "zz")

    assert pyotp.run(main) == ([("a", 3), ("b", 2)], [("a", 3)], [])


def test_an_ordered_set_lists_objects_in_erlang_term_order():
    """Ports ets_SUITE:ordered."""

    def main():
        t = ets.new("o", ["ordered_set"])
        ets.insert(t, [(3, "c"), ("x", "atom"), (1, "a"), ((0,), "tuple"), (2.5, "f")])
        return [o[0] for o in ets.tab2list(t)]

    assert pyotp.run(main) == [1, 2.5, 3, "x", (0,)]


def test_a_bag_keeps_distinct_objects_and_a_duplicate_bag_keeps_duplicates():
    """Ports ets_SUITE:dups."""

    def main():
        bag = ets.new("b", ["bag"])
        dup = ets.new("d", ["duplicate_bag"])
        for t in (bag, dup):
            ets.insert(t, [("k", 1), ("k", 2), ("k", 1), ("j", 0)])
        return ets.lookup(bag, "k"), ets.lookup(dup, "k"), ets.info(dup)["size"]

    assert pyotp.run(main) == ([("k", 1), ("k", 2)], [("k", 1), ("k", 2), ("k", 1)], 4)


def test_keypos_chooses_the_key_element():
    """Ports ets_SUITE:keypos2."""

    def main():
        t = ets.new("kp", [("keypos", 2)])
        ets.insert(t, [("x", "k1", 1), ("y", "k1", 2), ("z", "k2", 3)])
        with pytest.raises(pyotp.BadArg):
            ets.insert(t, ("short",))
        return ets.lookup(t, "k1"), ets.info(t)["keypos"]

    assert pyotp.run(main) == ([("y", "k1", 2)], 2)


def test_insert_refuses_non_tuples_and_inserts_nothing_from_a_bad_list():
    def main():
        t = ets.new("bad", [])
        with pytest.raises(pyotp.BadArg, match="tuple"):
            ets.insert(t, ["not", "tuples"])
        with pytest.raises(pyotp.BadArg):
            ets.insert(t, [("ok", 1), "bad"])
        with pytest.raises(pyotp.BadArg):
            ets.insert(t, ([1], "unhashable key"))
        return ets.tab2list(t)

    assert pyotp.run(main) == []


# ------------------------------------------------------------------ names, delete, info


def test_a_named_table_is_used_by_its_name_and_a_second_one_is_refused():
    """Ports ets_SUITE:t_named_table (named half)."""

    def main():
        tid = ets.new("people", ["named_table", "public"])
        assert tid == "people"
        ets.insert("people", ("ann", 31))
        with pytest.raises(pyotp.BadArg, match="exists"):
            ets.new("people", ["named_table"])
        anon = ets.new("people", [])  # an unnamed table may share the name
        assert isinstance(anon, pyotp.Ref)
        return ets.lookup("people", "ann")

    assert pyotp.run(main) == [("ann", 31)]


def test_delete_removes_a_key_or_the_whole_table():
    """Ports ets_SUITE:t_delete_object / t_delete."""

    def main():
        t = ets.new("del", ["bag"])
        ets.insert(t, [("a", 1), ("a", 2), ("b", 3)])
        assert ets.delete(t, "a") is True
        assert ets.tab2list(t) == [("b", 3)]
        assert ets.delete(t) is True
        with pytest.raises(pyotp.BadArg, match="no table"):
            ets.lookup(t, "b")
        return ets.info(t)

    assert pyotp.run(main) is None


def test_info_describes_the_table():
    """Ports ets_SUITE:info."""

    def main():
        t = ets.new("inf", ["ordered_set", "private", ("keypos", 2)])
        ets.insert(t, [(0, 1), (0, 2)])
        return t, pyotp.self(), ets.info(t)

    t, me, info = pyotp.run(main)
    assert info["size"] == 2
    assert info["type"] == "ordered_set"
    assert info["owner"] == me
    assert info["named_table"] is False
    assert info["keypos"] == 2
    assert info["protection"] == "private"
    assert info["id"] == t and info["name"] == "inf"


def test_info_gives_the_node_and_memory_as_erlangs():
    def main():
        t = ets.new("mem", [])
        empty = ets.info(t)["memory"]
        ets.insert(t, [(i, "x" * 100) for i in range(100)])
        return ets.info(t), empty

    info, empty = pyotp.run(main)
    assert info["node"] == "nonode@nohost"
    assert type(info["memory"]) is int and info["memory"] > empty > 0


def test_new_refuses_bad_options():
    def main():
        for opts in (["sett"], [("keypos", 0)], "set"):
            with pytest.raises(pyotp.BadArg):
                ets.new("x", opts)
        with pytest.raises(pyotp.BadArg):
            ets.new(3, [])
        return True

    assert pyotp.run(main)


def test_ets_outside_a_process_raises_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        ets.new("t", [])


# ------------------------------------------------------------------ access rules


def test_a_protected_table_is_read_by_all_but_written_only_by_its_owner():
    """Ports ets_SUITE:t_protected (access half)."""

    async def main():
        t = ets.new("prot", [])
        ets.insert(t, ("k", 1))
        read = await other(ets.lookup, t, "k")
        write = await other(ets.insert, t, ("k", 2))
        delete = await other(ets.delete, t)
        return read, write[0], delete[0], "protected" in write[1], ets.lookup(t, "k")

    assert pyotp.run(main) == (("ok", [("k", 1)]), "badarg", "badarg", True, [("k", 1)])


def test_a_private_table_is_neither_read_nor_written_by_others():
    async def main():
        t = ets.new("priv", ["private"])
        ets.insert(t, ("k", 1))
        return (await other(ets.lookup, t, "k"))[0], (await other(ets.tab2list, t))[0]

    assert pyotp.run(main) == ("badarg", "badarg")


def test_a_public_table_is_written_by_any_process():
    async def main():
        t = ets.new("pub", ["public", "named_table"])
        await other(ets.insert, "pub", ("from_other", 1))
        return ets.lookup(t, "from_other")

    assert pyotp.run(main) == [("from_other", 1)]


def test_the_table_is_deleted_when_its_owner_exits():
    """Ports ets_SUITE:t_delete_on_exit (owner death)."""

    async def main():
        pid = pyotp.spawn(owner_of_table, pyotp.self(), "owned", ["named_table", "public"])
        _, tab = await pyotp.receive(("table", ANY), timeout=WAIT)
        assert ets.lookup(tab, "k") == [("k", 1)]
        pyotp.send(pid, "stop")
        await wait_down(pid)
        assert ets.info(tab) is None
        with pytest.raises(pyotp.BadArg):
            ets.lookup(tab, "k")
        # the name is free again
        return ets.new("owned", ["named_table"])

    assert pyotp.run(main) == "owned"


def test_a_killed_owner_loses_its_table_at_once():
    async def main():
        pid = pyotp.spawn(owner_of_table, pyotp.self(), "killed_owner", ["public"])
        _, tab = await pyotp.receive(("table", ANY), timeout=WAIT)
        pyotp.exit(pid, "kill")
        with pytest.raises(pyotp.BadArg, match=r"owner exited|no table"):
            ets.insert(tab, ("x", 1))
        return True

    assert pyotp.run(main)


# ------------------------------------------------------------------ match_object and select


def test_match_object_uses_wildcards_types_and_predicates():
    """Ports ets_SUITE:t_match_object (pattern forms)."""

    def main():
        t = ets.new("m", ["bag"])
        ets.insert(t, [("ann", 31, "oslo"), ("bob", 25, "rome"), ("cid", 31, "rome"),
                       ("ann", 40, "lima")])
        by_age = sorted(ets.match_object(t, (ANY, 31, ANY)))
        by_key = ets.match_object(t, ("ann", ANY, ANY))
        young = ets.match_object(t, (str, lambda a: a < 30, ANY))
        none = ets.match_object(t, (ANY, ANY))
        return by_age, by_key, young, none

    assert pyotp.run(main) == (
        [("ann", 31, "oslo"), ("cid", 31, "rome")],
        [("ann", 31, "oslo"), ("ann", 40, "lima")],
        [("bob", 25, "rome")],
        [],
    )


def test_an_underscore_in_a_pattern_is_a_wildcard_as_erlangs():
    """Erlang's '_' (here the str "_") matches anything, in match_object and select."""

    def main():
        t = ets.new("u", ["ordered_set"])
        ets.insert(t, [(1, "a", (1, 2)), (2, "b", (3, 4)), (3, "a", (5, 6))])
        return (
            ets.match_object(t, ("_", "a", "_")),
            ets.match_object(t, (2, "_", ("_", 4))),
            ets.select(t, [(("_", "b", "_"), None, "$_")]),
            ets.select(t, ("_", "_")),
        )

    assert pyotp.run(main) == (
        [(1, "a", (1, 2)), (3, "a", (5, 6))],
        [(2, "b", (3, 4))],
        [(2, "b", (3, 4))],
        [],
    )


def test_select_takes_a_predicate_a_pattern_or_match_spec_clauses():
    """Ports ets_SUITE:t_select (Python form of match specs)."""

    def main():
        t = ets.new("sel", ["ordered_set"])
        ets.insert(t, [(i, i * i) for i in range(6)])
        pred = ets.select(t, lambda o: o[1] > 10)
        pat = ets.select(t, (3, ANY))
        spec = ets.select(
            t,
            [
                ((0, ANY), None, lambda o: "zero"),
                ((ANY, ANY), lambda o: o[0] % 2 == 0, "$_"),
            ],
        )
        with pytest.raises(pyotp.BadArg):
            ets.select(t, [("not a clause",)])
        return pred, pat, spec

    assert pyotp.run(main) == (
        [(4, 16), (5, 25)],
        [(3, 9)],
        ["zero", (2, 4), (4, 16)],
    )


@pytest.mark.slow
def test_a_table_is_unknown_on_another_scheduler():
    async def main():
        tab = ets.new("here", ["public", "named_table"])
        ets.insert(tab, ("k", 1))
        pid = pyotp.spawn(try_in_other, pyotp.self(), ets.lookup, "here", "k", scheduler=1)
        assert pid.scheduler == 1
        return await pyotp.receive(("ok", ANY), ("badarg", ANY), timeout=WAIT)

    got = pyotp.run(main, schedulers=2)
    assert got[0] == "badarg" and "no table" in got[1]
