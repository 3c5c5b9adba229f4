"""supervisor: strategies, restart types, intensity, shutdown kinds, child management, specs.

Most tests port a case of OTP's `lib/stdlib/test/supervisor_SUITE.erl`; each names it.
"""

from __future__ import annotations

import pytest

import pyotp
from pyotp import ANY, gen_server, supervisor

# ------------------------------------------------------------------ children


class Worker(gen_server.GenServer):
    """A child: answers "ping", stops or crashes on a cast, reports terminate to a watcher."""

    def init(self, arg):
        wid, opts = arg
        if opts.get("fail"):
            return ("stop", "init_failed")
        if opts.get("ignore"):
            return "ignore"
        if opts.get("trap"):
            pyotp.process_flag("trap_exit", True)
        if "log" in opts:
            opts["log"].append(("start", wid))
        return ("ok", (wid, opts))

    def handle_call(self, req, from_, state):
        if req == "ping":
            return ("reply", "pong", state)
        return ("reply", ("args", state), state)

    def handle_cast(self, msg, state):
        if msg == "stop_normal":
            return ("stop", "normal", state)
        raise RuntimeError("worker told to crash")

    def terminate(self, reason, state):
        wid, opts = state
        if "log" in opts:
            opts["log"].append(("stop", wid, reason))


def worker(wid, opts=None, restart="permanent", **extra):
    spec = {
        "id": wid,
        "start": (gen_server.start_link, (Worker, (wid, opts or {}))),
        "restart": restart,
    }
    spec.update(extra)
    return spec


async def _stubborn():
    # Traps exits and ignores every EXIT: only "kill" ends it.
    while True:
        await pyotp.receive()


def start_stubborn():
    """A plain start function returning a linked pid (no behaviour)."""
    return pyotp.spawn_link(_stubborn, trap_exit=True)


def start_ignore():
    return None


def start_crashing():
    raise pyotp.StartError("cannot_start")


class Sup(supervisor.Supervisor):
    """init(arg) returns ("ok", arg): the test passes (flags, children)."""

    def init(self, arg):
        if arg == "ignore":
            return "ignore"
        return ("ok", arg)


async def start_sup(flags, children, name=None):
    """Start a supervisor from a trapping main, so its exit comes as a message."""
    pyotp.process_flag("trap_exit", True)
    return await supervisor.start_link(Sup, (flags, children), name=name)


async def pids(sup):
    return {c[0]: c[1] for c in await supervisor.which_children(sup)}


async def kill_and_wait(pid):
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=5)


async def sup_exit(sup):
    msg = await pyotp.receive(("EXIT", sup, ANY), timeout=5)
    return msg[2]


# ------------------------------------------------------------------ start


def test_start_link_starts_children_in_order_and_reports_them():
    """Ports supervisor_SUITE:sup_start_normal and which_children."""

    async def main():
        log = []
        sup = await start_sup(
            {}, [worker("a", {"log": log}), worker("b", {"log": log, "trap": True})], "s"
        )
        assert pyotp.whereis("s") == sup
        assert log == [("start", "a"), ("start", "b")]
        wc = await supervisor.which_children(sup)
        assert [(c[0], c[2], c[3]) for c in wc] == [
            ("b", "worker", [f"{__name__}.Worker"]),
            ("a", "worker", [f"{__name__}.Worker"]),
        ]
        assert all(isinstance(c[1], pyotp.Pid) for c in wc)
        return await supervisor.count_children(sup)

    assert pyotp.run(main) == {"specs": 2, "active": 2, "supervisors": 0, "workers": 2}


def test_init_returning_ignore_makes_start_link_return_none():
    """Ports supervisor_SUITE:sup_start_ignore_init."""

    async def main():
        return await supervisor.start_link(Sup, "ignore")

    assert pyotp.run(main) is None


def test_a_child_returning_ignore_keeps_its_spec_without_a_pid():
    """Ports supervisor_SUITE:sup_start_ignore_child."""

    async def main():
        sup = await start_sup({}, [{"id": "i", "start": (start_ignore, ())}, worker("w")])
        wc = await supervisor.which_children(sup)
        assert await supervisor.start_child(sup, {"id": "j", "start": (start_ignore, ())}) is None
        counts = await supervisor.count_children(sup)
        return wc[1][:2], counts

    wc, counts = pyotp.run(main)
    assert wc == ("i", None)
    assert counts == {"specs": 3, "active": 1, "supervisors": 0, "workers": 3}


def test_a_child_failing_to_start_fails_the_supervisor_start():
    """Ports supervisor_SUITE:sup_start_error_return."""

    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await start_sup({}, [worker("ok"), worker("bad", {"fail": True})])
        return info.value.reason

    assert pyotp.run(main) == ("shutdown", ("failed_to_start_child", "bad", "init_failed"))


def test_bad_flags_and_bad_init_returns_fail_the_start():
    """Ports supervisor_SUITE:sup_start_fail / sup_flags."""

    class BadReturn(supervisor.Supervisor):
        def init(self, arg):
            return "what"

    async def main():
        reasons = []
        for flags in ({"strategy": "nope"}, {"intensity": -1}, {"period": 0}):
            with pytest.raises(pyotp.StartError) as info:
                await start_sup(flags, [])
            reasons.append(info.value.reason)
        with pytest.raises(pyotp.StartError) as info:
            await start_sup({}, [{"start": (start_ignore, ())}])
        reasons.append(info.value.reason)
        with pytest.raises(pyotp.StartError) as info:
            await supervisor.start_link(BadReturn, None)
        reasons.append(info.value.reason[0])
        with pytest.raises(pyotp.StartError) as info:
            await start_sup({"strategy": "simple_one_for_one"}, [worker("a"), worker("b")])
        reasons.append(info.value.reason[0])
        return reasons

    assert pyotp.run(main) == [
        ("supervisor_data", ("invalid_strategy", "nope")),
        ("supervisor_data", ("invalid_intensity", -1)),
        ("supervisor_data", ("invalid_period", 0)),
        ("start_spec", "missing_id"),
        "bad_return",
        "bad_start_spec",
    ]


def test_flags_neither_a_dict_nor_a_3_tuple_fail_with_invalid_type():
    """Ports supervisor_SUITE:sup_flags (flags other than a map or a 3-tuple)."""

    async def main():
        reasons = []
        for flags in ("one_for_one", ("one_for_one", 1)):
            with pytest.raises(pyotp.StartError) as info:
                await start_sup(flags, [])
            reasons.append(info.value.reason)
        return reasons

    assert pyotp.run(main) == [
        ("supervisor_data", ("invalid_type", "one_for_one")),
        ("supervisor_data", ("invalid_type", ("one_for_one", 1))),
    ]


def test_a_plain_start_function_returning_a_pid_is_supervised():
    """A start fn that is plain (not async) and returns a linked pid."""

    async def main():
        sup = await start_sup(
            {"intensity": 5},
            [{"id": "p", "start": (start_stubborn, ()), "shutdown": "brutal_kill"}],
        )
        before = (await pids(sup))["p"]
        await kill_and_wait(before)
        after = (await pids(sup))["p"]
        return before != after and isinstance(after, pyotp.Pid)

    assert pyotp.run(main)


# ------------------------------------------------------------------ strategies


def test_one_for_one_restarts_only_the_dead_child():
    """Ports supervisor_SUITE:one_for_one."""

    async def main():
        sup = await start_sup(
            {"strategy": "one_for_one", "intensity": 5}, [worker("a"), worker("b")]
        )
        p1 = await pids(sup)
        await kill_and_wait(p1["a"])
        p2 = await pids(sup)
        assert p2["a"] != p1["a"] and p2["b"] == p1["b"]
        assert await gen_server.call(p2["a"], "ping") == "pong"
        return True

    assert pyotp.run(main)


def test_one_for_all_restarts_every_child_in_start_order():
    """Ports supervisor_SUITE:one_for_all."""

    async def main():
        log = []
        sup = await start_sup(
            {"strategy": "one_for_all", "intensity": 5},
            [worker(w, {"log": log, "trap": True}) for w in "abc"],
        )
        p1 = await pids(sup)
        log.clear()
        await kill_and_wait(p1["b"])
        p2 = await pids(sup)
        assert all(p2[w] != p1[w] for w in "abc")
        return list(log)  # a copy: the node's shutdown appends to log after main returns

    assert pyotp.run(main) == [
        ("stop", "c", "shutdown"),
        ("stop", "a", "shutdown"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
    ]


def test_rest_for_one_restarts_the_dead_child_and_those_started_after_it():
    """Ports supervisor_SUITE:rest_for_one."""

    async def main():
        sup = await start_sup(
            {"strategy": "rest_for_one", "intensity": 5}, [worker(w) for w in "abc"]
        )
        p1 = await pids(sup)
        await kill_and_wait(p1["b"])
        p2 = await pids(sup)
        return p2["a"] == p1["a"], p2["b"] != p1["b"], p2["c"] != p1["c"]

    assert pyotp.run(main) == (True, True, True)


def test_one_for_all_does_not_restart_a_temporary_sibling():
    """Ports supervisor_SUITE:one_for_all_other_child_temporary."""

    async def main():
        sup = await start_sup(
            {"strategy": "one_for_all", "intensity": 5},
            [worker("a"), worker("t", restart="temporary")],
        )
        await kill_and_wait((await pids(sup))["a"])
        return [c[0] for c in await supervisor.which_children(sup)]

    assert pyotp.run(main) == ["a"]


def test_simple_one_for_one_starts_children_with_extra_args():
    """Ports supervisor_SUITE:simple_one_for_one and simple_one_for_one_extra."""

    async def start_dyn(prefix, extra):
        return await gen_server.start_link(Worker, ((prefix, extra), {}))

    async def main():
        spec = {"id": "dyn", "start": (start_dyn, ("pre",)), "restart": "permanent"}
        sup = await start_sup({"strategy": "simple_one_for_one", "intensity": 5}, [spec])
        c1 = await supervisor.start_child(sup, ["x"])
        c2 = await supervisor.start_child(sup, ["y"])
        assert await gen_server.call(c1, "args") == ("args", (("pre", "x"), {}))
        wc = await supervisor.which_children(sup)
        assert sorted(c[1] for c in wc) == sorted([c1, c2])
        assert all(c[0] is None and c[2] == "worker" for c in wc)
        assert await supervisor.count_children(sup) == {
            "specs": 1,
            "active": 2,
            "supervisors": 0,
            "workers": 2,
        }
        await kill_and_wait(c1)
        wc = await supervisor.which_children(sup)
        assert len(wc) == 2 and c1 not in [c[1] for c in wc]
        await supervisor.terminate_child(sup, c2)
        assert len(await supervisor.which_children(sup)) == 1
        assert await supervisor.terminate_child(sup, c2) is None  # a dead pid: ok, as OTP
        errors = []
        for call in (
            supervisor.terminate_child(sup, pyotp.self()),
            supervisor.terminate_child(sup, "dyn"),
            supervisor.restart_child(sup, "dyn"),
            supervisor.delete_child(sup, "dyn"),
        ):
            with pytest.raises(pyotp.OtpError) as info:
                await call
            errors.append(info.value.reason)
        return errors

    assert pyotp.run(main) == [
        "not_found",
        "simple_one_for_one",
        "simple_one_for_one",
        "simple_one_for_one",
    ]


def test_simple_one_for_one_stops_all_children_when_it_stops():
    """Ports supervisor_SUITE:simple_one_for_one_shutdown."""

    async def main():
        log = []

        async def start_dyn(n):
            return await gen_server.start_link(Worker, (n, {"log": log, "trap": True}))

        spec = {"id": "d", "start": (start_dyn, ()), "shutdown": 1.0}
        sup = await start_sup({"strategy": "simple_one_for_one"}, [spec])
        for n in range(3):
            await supervisor.start_child(sup, [n])
        await gen_server.stop(sup, "shutdown")
        return sorted(e for e in log if e[0] == "stop")

    assert pyotp.run(main) == [("stop", n, "shutdown") for n in range(3)]


def _flaky_start(fails_on, attempts, watcher):
    """A start function failing on the attempt numbers in `fails_on`; each failure is
    reported to `watcher` as ("failed", n)."""

    async def start():
        attempts.append(1)
        if len(attempts) in fails_on:
            pyotp.send(watcher, ("failed", len(attempts)))
            raise pyotp.StartError("no_start")
        return await gen_server.start_link(Worker, ("d", {}))

    return start


def test_simple_one_for_one_child_that_fails_to_restart_is_retried_and_listed_once():
    """Ports supervisor_SUITE:hanging_restart_loop_simple (try_again for a dynamic child)."""

    async def main():
        attempts = []
        start = _flaky_start({2}, attempts, pyotp.self())
        spec = {"id": "d", "start": (start, ())}
        sup = await start_sup({"strategy": "simple_one_for_one", "intensity": 5}, [spec])
        old = await supervisor.start_child(sup, [])
        await kill_and_wait(old)
        await pyotp.receive(("failed", 2), timeout=5)
        await supervisor.count_children(sup)  # the retry (a cast to itself) is done by now
        wc = await supervisor.which_children(sup)
        return len(attempts), [c[1] != old and isinstance(c[1], pyotp.Pid) for c in wc], (
            await supervisor.count_children(sup)
        )

    assert pyotp.run(main) == (
        3,
        [True],
        {"specs": 1, "active": 1, "supervisors": 0, "workers": 1},
    )


def test_simple_one_for_one_terminate_child_of_a_restarting_child_or_a_dead_pid():
    """Ports supervisor_SUITE:child_adm_simple: terminating a dead pid is ok, an alive pid
    that is not a child is not_found; a child waiting to restart is removed by its old pid."""

    async def main():
        attempts = []
        start = _flaky_start(set(range(2, 100)), attempts, pyotp.self())
        spec = {"id": "d", "start": (start, ())}
        sup = await start_sup({"strategy": "simple_one_for_one", "intensity": 100}, [spec])
        old = await supervisor.start_child(sup, [])
        await kill_and_wait(old)
        await pyotp.receive(("failed", 2), timeout=5)
        restarting = [c[1] for c in await supervisor.which_children(sup)]
        assert await supervisor.terminate_child(sup, old) is None
        after = await supervisor.which_children(sup)
        assert await supervisor.terminate_child(sup, old) is None  # dead pid: ok
        with pytest.raises(pyotp.OtpError) as info:
            await supervisor.terminate_child(sup, pyotp.self())
        return restarting, after, info.value.reason, len(attempts) < 100

    assert pyotp.run(main) == (["restarting"], [], "not_found", True)


# ------------------------------------------------------------------ restart types


def test_permanent_children_are_restarted_even_after_a_normal_exit():
    """Ports supervisor_SUITE:permanent_normal."""

    async def main():
        sup = await start_sup({"intensity": 5}, [worker("p")])
        p1 = (await pids(sup))["p"]
        ref = pyotp.monitor(p1)
        gen_server.cast(p1, "stop_normal")
        await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=5)
        return (await pids(sup))["p"] not in (None, p1)

    assert pyotp.run(main)


def test_transient_children_restart_only_after_an_abnormal_exit():
    """Ports supervisor_SUITE:transient_normal and transient_abnormal."""

    async def main():
        sup = await start_sup({"intensity": 5}, [worker("t", restart="transient")])
        p1 = (await pids(sup))["t"]
        await kill_and_wait(p1)
        p2 = (await pids(sup))["t"]
        assert p2 not in (None, p1)
        ref = pyotp.monitor(p2)
        gen_server.cast(p2, "stop_normal")
        await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=5)
        return await supervisor.which_children(sup)

    assert pyotp.run(main) == [("t", None, "worker", [f"{__name__}.Worker"])]


def test_temporary_children_are_never_restarted_and_their_spec_goes():
    """Ports supervisor_SUITE:temporary_normal and temporary_abnormal."""

    async def main():
        sup = await start_sup({"intensity": 5}, [worker("t", restart="temporary"), worker("k")])
        await kill_and_wait((await pids(sup))["t"])
        return [c[0] for c in await supervisor.which_children(sup)]

    assert pyotp.run(main) == ["k"]


def test_exceeding_the_restart_intensity_shuts_the_supervisor_down():
    """Ports supervisor_SUITE:sup_restart_intensity (one restart allowed, the second stops it)."""

    async def main():
        log = []
        sup = await start_sup(
            {"intensity": 1, "period": 5},
            [worker("a", {"log": log}), worker("b", {"log": log, "trap": True})],
        )
        await kill_and_wait((await pids(sup))["a"])
        p = (await pids(sup))["a"]
        await kill_and_wait(p)
        reason = await sup_exit(sup)
        return reason, log[-1]

    assert pyotp.run(main) == ("shutdown", ("stop", "b", "shutdown"))


def test_a_child_that_cannot_restart_is_retried_until_intensity_is_exceeded():
    """Ports supervisor_SUITE:restart_failure (try_again until max restart intensity)."""
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) > 1:
            raise pyotp.StartError("no_more")
        return await gen_server.start_link(Worker, ("f", {}))

    async def main():
        sup = await start_sup({"intensity": 3, "period": 5}, [{"id": "f", "start": (flaky, ())}])
        await kill_and_wait((await pids(sup))["f"])
        return await sup_exit(sup)

    assert pyotp.run(main) == "shutdown"
    assert len(attempts) == 4


def test_requests_are_served_between_the_retries_of_a_child_that_cannot_restart():
    """Ports supervisor_SUITE:hanging_restart_loop: while a child is "restarting" other
    requests get in; restart_child/delete_child refuse it, terminate_child ends the retries."""

    async def main():
        attempts = []
        start = _flaky_start(set(range(2, 100)), attempts, pyotp.self())
        sup = await start_sup({"intensity": 100}, [{"id": "f", "start": (start, ())}])
        await kill_and_wait((await pids(sup))["f"])
        await pyotp.receive(("failed", 2), timeout=5)
        seen = await pids(sup)
        errors = []
        for call in (supervisor.restart_child(sup, "f"), supervisor.delete_child(sup, "f")):
            with pytest.raises(pyotp.OtpError) as info:
                await call
            errors.append(info.value.reason)
        await supervisor.terminate_child(sup, "f")
        return seen, errors, await pids(sup), len(attempts) < 100

    assert pyotp.run(main) == (
        {"f": "restarting"},
        ["restarting", "restarting"],
        {"f": None},
        True,
    )


# ------------------------------------------------------------------ shutdown


def test_children_are_stopped_in_reverse_start_order():
    """Ports supervisor_SUITE:sup_stop_infinity / terminate order."""

    async def main():
        log = []
        sup = await start_sup({}, [worker(w, {"log": log, "trap": True}) for w in "abc"])
        await gen_server.stop(sup, "shutdown")
        return [e[1] for e in log if e[0] == "stop"]

    assert pyotp.run(main) == ["c", "b", "a"]


def test_brutal_kill_kills_a_child_that_traps_exits_and_ignores_shutdown():
    """Ports supervisor_SUITE:sup_stop_brutal_kill."""

    async def main():
        spec = {"id": "s", "start": (start_stubborn, ()), "shutdown": "brutal_kill"}
        sup = await start_sup({}, [spec])
        pid = (await pids(sup))["s"]
        ref = pyotp.monitor(pid)
        await supervisor.terminate_child(sup, "s")
        msg = await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=0)
        return msg[4], await supervisor.which_children(sup)

    reason, wc = pyotp.run(main)
    assert reason == "killed"
    assert wc == [("s", None, "worker", [__name__])]


def test_a_shutdown_timeout_kills_a_child_that_ignores_shutdown():
    """Ports supervisor_SUITE:sup_stop_timeout."""

    async def main():
        spec = {"id": "s", "start": (start_stubborn, ()), "shutdown": 0.05}
        sup = await start_sup({}, [spec])
        pid = (await pids(sup))["s"]
        ref = pyotp.monitor(pid)
        await gen_server.stop(sup, "shutdown")
        return (await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=0))[4]

    assert pyotp.run(main) == "killed"


def test_a_shutdown_timeout_lets_an_obedient_child_terminate_cleanly():
    """Ports supervisor_SUITE:sup_stop_timeout (child that obeys shutdown)."""

    async def main():
        log = []
        sup = await start_sup({}, [worker("w", {"log": log, "trap": True}, shutdown="infinity")])
        await supervisor.terminate_child(sup, "w")
        return log[-1]

    assert pyotp.run(main) == ("stop", "w", "shutdown")


def test_a_nested_supervisor_stops_its_own_children_first():
    """Ports supervisor_SUITE:sup_stop_infinity with a supervisor child."""

    async def main():
        log = []
        inner = {
            "id": "inner",
            "start": (
                supervisor.start_link,
                (Sup, ({}, [worker("w1", {"log": log, "trap": True})])),
            ),
            "type": "supervisor",
        }
        sup = await start_sup({}, [worker("w0", {"log": log, "trap": True}), inner])
        counts = await supervisor.count_children(sup)
        await gen_server.stop(sup, "shutdown")
        return counts, [e[1] for e in log if e[0] == "stop"]

    counts, stops = pyotp.run(main)
    assert counts == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}
    assert stops == ["w1", "w0"]


# ------------------------------------------------------------------ child management


def test_start_child_errors_already_started_and_already_present():
    """Ports supervisor_SUITE:sup_start_child / child_adm."""

    async def main():
        sup = await start_sup({}, [])
        pid = await supervisor.start_child(sup, worker("a"))
        with pytest.raises(pyotp.OtpError) as started:
            await supervisor.start_child(sup, worker("a"))
        await supervisor.terminate_child(sup, "a")
        with pytest.raises(pyotp.OtpError) as present:
            await supervisor.start_child(sup, worker("a"))
        with pytest.raises(pyotp.OtpError) as failed:
            await supervisor.start_child(sup, {"id": "x", "start": (start_crashing, ())})
        with pytest.raises(pyotp.OtpError) as bad:
            await supervisor.start_child(sup, worker("y", restart="sometimes"))
        return started.value.reason == ("already_started", pid), (
            present.value.reason,
            failed.value.reason,
            bad.value.reason,
        )

    same, reasons = pyotp.run(main)
    assert same
    assert reasons == ("already_present", "cannot_start", ("invalid_restart_type", "sometimes"))


def test_terminate_restart_and_delete_child_with_their_errors():
    """Ports supervisor_SUITE:child_adm (terminate/restart/delete and their errors)."""

    async def main():
        sup = await start_sup({}, [worker("a")])
        errors = {}

        async def err(key, coro):
            with pytest.raises(pyotp.OtpError) as info:
                await coro
            errors[key] = info.value.reason

        await err("restart_running", supervisor.restart_child(sup, "a"))
        await err("delete_running", supervisor.delete_child(sup, "a"))
        await err("terminate_missing", supervisor.terminate_child(sup, "zz"))
        await err("restart_missing", supervisor.restart_child(sup, "zz"))
        await err("delete_missing", supervisor.delete_child(sup, "zz"))
        old = (await pids(sup))["a"]
        assert await supervisor.terminate_child(sup, "a") is None
        assert (await pids(sup))["a"] is None
        new = await supervisor.restart_child(sup, "a")
        assert new not in (None, old) and (await pids(sup))["a"] == new
        await supervisor.terminate_child(sup, "a")
        assert await supervisor.delete_child(sup, "a") is None
        assert await supervisor.which_children(sup) == []
        return errors

    assert pyotp.run(main) == {
        "restart_running": "running",
        "delete_running": "running",
        "terminate_missing": "not_found",
        "restart_missing": "not_found",
        "delete_missing": "not_found",
    }


def test_client_calls_to_a_dead_supervisor_raise_call_exit():
    async def main():
        with pytest.raises(pyotp.CallExit) as info:
            await supervisor.which_children("no_such_sup")
        return info.value.reason

    assert pyotp.run(main) == "noproc"


# ------------------------------------------------------------------ significant children


def test_any_significant_child_exiting_shuts_the_supervisor_down():
    """Ports supervisor_SUITE:auto_shutdown_any_significant (one_for_one)."""

    async def main():
        sup = await start_sup(
            {"auto_shutdown": "any_significant"},
            [worker("s", restart="transient", significant=True), worker("p")],
        )
        gen_server.cast((await pids(sup))["s"], "stop_normal")
        return await sup_exit(sup)

    assert pyotp.run(main) == "shutdown"


def test_all_significant_waits_for_the_last_significant_child():
    """Ports supervisor_SUITE:auto_shutdown_all_significant."""

    async def main():
        sup = await start_sup(
            {"auto_shutdown": "all_significant"},
            [worker(w, restart="temporary", significant=True) for w in ("s1", "s2")],
        )
        p = await pids(sup)
        await kill_and_wait(p["s1"])
        assert list(await pids(sup)) == ["s2"]  # still alive
        await kill_and_wait(p["s2"])
        return await sup_exit(sup)

    assert pyotp.run(main) == "shutdown"


def test_a_significant_child_that_is_restarted_does_not_shut_down():
    """Ports supervisor_SUITE:auto_shutdown_any_significant (abnormal exit: restart)."""

    async def main():
        sup = await start_sup(
            {"auto_shutdown": "any_significant", "intensity": 5},
            [worker("s", restart="transient", significant=True)],
        )
        old = (await pids(sup))["s"]
        await kill_and_wait(old)
        return (await pids(sup))["s"] not in (None, old)

    assert pyotp.run(main)


def test_significant_with_auto_shutdown_never_is_a_bad_spec():
    """Ports supervisor_SUITE:auto_shutdown_bad_combination."""

    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await start_sup({}, [worker("s", restart="transient", significant=True)])
        return info.value.reason

    assert pyotp.run(main) == (
        "start_spec",
        ("bad_combination", [("auto_shutdown", "never"), ("significant", True)]),
    )


# ------------------------------------------------------------------ check_childspecs


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"start": (start_ignore, ())}, "missing_id"),
        ({"id": "x"}, "missing_start"),
        ({"id": "x", "start": "nope"}, ("invalid_mfa", "nope")),
        (
            {"id": "x", "start": (start_ignore, ()), "restart": "bad"},
            ("invalid_restart_type", "bad"),
        ),
        ({"id": "x", "start": (start_ignore, ()), "shutdown": -1}, ("invalid_shutdown", -1)),
        ({"id": "x", "start": (start_ignore, ()), "type": "foo"}, ("invalid_child_type", "foo")),
        ({"id": "x", "start": (start_ignore, ()), "modules": "foo"}, ("invalid_modules", "foo")),
        ({"id": "x", "start": (start_ignore, ()), "modules": ["m", 1]}, ("invalid_module", 1)),
        (
            {"id": "x", "start": (start_ignore, ()), "significant": True},
            ("bad_combination", [("restart", "permanent"), ("significant", True)]),
        ),
        # The spawn options a spec may carry: refused by the check, not "badarg" per start.
        ({"id": "x", "start": (start_ignore, ()), "scheduler": "0"}, ("invalid_scheduler", "0")),
        ({"id": "x", "start": (start_ignore, ()), "scheduler": -1}, ("invalid_scheduler", -1)),
        ({"id": "x", "start": (start_ignore, ()), "node": 5}, ("invalid_node", 5)),
        ({"id": "x", "start": (start_ignore, ()), "near": "p"}, ("invalid_near", "p")),
        ({"id": "x", "start": (start_ignore, ()), "placement": "x"}, ("invalid_placement", "x")),
    ],
)
def test_check_childspecs_raises_otp_error_naming_the_problem(spec, reason):
    """Ports supervisor_SUITE:check_childspecs."""

    async def main():
        with pytest.raises(pyotp.OtpError) as info:
            supervisor.check_childspecs([spec])
        return info.value

    error = pyotp.run(main)
    assert error.reason == reason
    assert str(error)  # a readable message


def test_check_childspecs_accepts_good_specs_and_rejects_duplicates():
    """Ports supervisor_SUITE:check_childspecs (ok and duplicate_child_name)."""
    good = [
        worker("a"),
        worker("b", restart="transient", shutdown="brutal_kill", type="supervisor"),
        worker("c", restart="temporary", significant=True, modules="dynamic", scheduler=0),
    ]

    async def main():
        assert supervisor.check_childspecs(good) is None
        assert supervisor.check_childspecs(good[2:], "any_significant") is None
        with pytest.raises(pyotp.OtpError) as info:
            supervisor.check_childspecs([worker("a"), worker("a")])
        return info.value.reason

    assert pyotp.run(main) == ("duplicate_child_name", "a")
    with pytest.raises(pyotp.NotInProcess):
        supervisor.check_childspecs(good)  # from plain code, as every public call


def test_a_child_spec_may_carry_a_scheduler_option():
    """Placement keys pass through to start functions that accept them."""

    async def main():
        sup = await start_sup({}, [worker("a", scheduler=0)])
        return await gen_server.call((await pids(sup))["a"], "ping")

    assert pyotp.run(main) == "pong"


def test_the_healing_tree_example_runs_and_heals():
    """examples/healing_tree.py: a killed worker is restarted and answers again."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "examples" / "healing_tree.py"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "counter after restart = 1" in out
    assert out.rstrip().endswith("healed")


def test_code_change_rereads_init_and_updates_existing_child_specs():
    """Ports supervisor_SUITE:code_change (new specs for existing children, pids kept)."""

    class Upgradable(supervisor.Supervisor):
        shutdown = 1.0

        def init(self, arg):
            return ("ok", ({"intensity": 2}, [worker("a", shutdown=type(self).shutdown)]))

    async def main():
        sup = await supervisor.start_link(Upgradable, None)
        before = await pids(sup)
        Upgradable.shutdown = 2.0
        ref = pyotp.monitor(sup)
        pyotp.send(sup, ("$system", (pyotp.self(), ref), ("code_change", __name__, "1", None)))
        reply = (await pyotp.receive((ref, ANY), timeout=5))[1]
        pyotp.send(sup, ("$system", (pyotp.self(), ref), "get_state"))
        state = (await pyotp.receive((ref, ANY), timeout=5))[1]
        return reply, state.children[0].shutdown, state.intensity, before == await pids(sup)

    assert pyotp.run(main) == ("ok", 2.0, 2, True)


# ------------------------------------------------------------------ review against OTP


class SlowStopper(gen_server.GenServer):
    """A child that traps exits and takes a moment in terminate, logging when it is done."""

    def init(self, arg):
        wid, log = arg
        pyotp.process_flag("trap_exit", True)
        return ("ok", (wid, log))

    async def terminate(self, reason, state):
        wid, log = state
        try:
            await pyotp.receive("never sent", timeout=0.1)
        except pyotp.Timeout:
            pass
        log.append(("stop", wid))


def slow(wid, log):
    return {"id": wid, "start": (gen_server.start_link, (SlowStopper, (wid, log)))}


def test_one_for_all_stops_siblings_one_at_a_time_newest_first():
    """Follows supervisor.erl terminate_children: on a one_for_all restart the siblings are
    stopped one after the other in reverse start order (each waited for before the next)."""

    async def main():
        log = []
        sup = await start_sup(
            {"strategy": "one_for_all", "intensity": 5}, [slow(w, log) for w in "abcd"]
        )
        await kill_and_wait((await pids(sup))["d"])
        await supervisor.which_children(sup)  # the restart is done once the call returns
        return list(log)

    assert pyotp.run(main) == [("stop", "c"), ("stop", "b"), ("stop", "a")]


def test_rest_for_one_stops_later_siblings_one_at_a_time_newest_first():
    """Follows supervisor.erl terminate_children for rest_for_one: reverse start order."""

    async def main():
        log = []
        sup = await start_sup(
            {"strategy": "rest_for_one", "intensity": 5}, [slow(w, log) for w in "abcd"]
        )
        await kill_and_wait((await pids(sup))["a"])
        await supervisor.which_children(sup)
        return list(log)

    assert pyotp.run(main) == [("stop", "d"), ("stop", "c"), ("stop", "b")]


def test_a_temporary_child_returning_ignore_leaves_no_spec_behind():
    """Follows supervisor.erl: `{ok, undefined} when ?is_temporary(Child)` is not saved, both
    in start_children (init) and in handle_start_child (checked in erl: OTP 25)."""

    async def main():
        ign = {"id": "i", "start": (start_ignore, ()), "restart": "temporary"}
        sup = await start_sup({}, [ign, worker("w")])
        first = [c[0] for c in await supervisor.which_children(sup)]
        late = {"id": "j", "start": (start_ignore, ()), "restart": "temporary"}
        assert await supervisor.start_child(sup, late) is None
        second = [c[0] for c in await supervisor.which_children(sup)]
        counts = await supervisor.count_children(sup)
        return first, second, counts

    first, second, counts = pyotp.run(main)
    assert first == ["w"]
    assert second == ["w"]
    assert counts == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


def test_supervisor_start_is_unlinked_and_stop_stops_the_tree():
    """API.md: start and stop of every behaviour; OTP spells these gen_server's."""

    class Sup(supervisor.Supervisor):
        def init(self, arg):
            return ("ok", ({"strategy": "one_for_one"}, [worker("a")]))

    async def main():
        sup = await supervisor.start(Sup, None, name="unlinked_sup")
        me = await pyotp.process_info(pyotp.self())
        child = (await supervisor.which_children(sup))[0][1]
        ref = pyotp.monitor(child)
        await supervisor.stop(sup)
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        return sup in me["links"], down[4], pyotp.whereis("unlinked_sup")

    linked, reason, name = pyotp.run(main)
    assert not linked
    assert reason == "shutdown"
    assert name is None


def test_a_supervisor_runs_on_another_scheduler_and_sys_cannot_harm_it():
    """supervisor.start_link(..., scheduler=1) starts the tree there (the Supervisor class
    travels by name); sys_.get_state of it from here (its state is no term) raises BadArg
    in the caller instead of crashing the supervisor with its reply."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        flags = {"strategy": "one_for_one"}
        sup = await supervisor.start_link(Sup, (flags, [worker("a")]), scheduler=1)
        child = (await pids(sup))["a"]
        with pytest.raises(pyotp.BadArg, match="cannot reach"):
            await pyotp.sys_.get_state(sup)
        alive = await pyotp.process_info(sup) is not None
        pong = await gen_server.call(child, "ping")
        await supervisor.stop(sup)
        return sup.scheduler, child.scheduler, alive, pong

    assert pyotp.run(main, schedulers=2) == (1, 1, True, "pong")
