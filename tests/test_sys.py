"""pyotp.sys_: state, suspend/resume, status, statistics and trace of behaviour processes.

Cases port OTP's `lib/stdlib/test/sys_SUITE.erl` where one exists; each names it.
"""

from __future__ import annotations

import logging

import pytest

import pyotp
from pyotp import gen_event, gen_server, gen_statem, supervisor, sys_

WAIT = 5.0


class Counter(gen_server.GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, from_, n):
        if req == "get":
            return ("reply", n, n)
        return ("reply", ("unknown", req), n)

    def handle_cast(self, msg, n):
        if type(msg) is tuple and msg[0] == "add":
            return ("noreply", n + msg[1])
        if type(msg) is tuple and msg[0] == "log":
            return ("noreply", [*n, msg[1]]) if type(n) is list else ("noreply", [msg[1]])
        return ("noreply", n)

    def handle_info(self, msg, n):
        return ("noreply", n)


class Door(gen_statem.GenStatem):
    callback_mode = "state_functions"

    def init(self, code):
        return ("ok", "locked", {"code": code, "tries": 0})

    def locked(self, etype, content, data):
        if etype[0] == "call" if type(etype) is tuple else False:
            if content == data["code"]:
                return ("next_state", "open", data, [("reply", etype[1], "opened")])
            data = {**data, "tries": data["tries"] + 1}
            return ("keep_state", data, [("reply", etype[1], "wrong")])
        return "keep_state_and_data"

    def open(self, etype, content, data):
        if type(etype) is tuple and etype[0] == "call":
            return ("next_state", "locked", data, [("reply", etype[1], "locked")])
        return "keep_state_and_data"


class Recorder(gen_event.Handler):
    def init(self, arg):
        return ("ok", [])

    def handle_event(self, event, events):
        return ("ok", [*events, event])


async def plain_process():
    await pyotp.receive("stop")


def add_ten(n):
    return n + 10


# ------------------------------------------------------------------ get_state / replace_state


def test_get_state_returns_the_state_of_a_gen_server_by_pid_and_by_name():
    """Ports sys_SUITE:get_state."""

    async def main():
        pid = await gen_server.start_link(Counter, 7, name="counter")
        return await sys_.get_state(pid), await sys_.get_state("counter")

    assert pyotp.run(main) == (7, 7)


def test_get_state_of_a_gen_statem_is_the_state_and_data_pair():
    async def main():
        pid = await gen_statem.start_link(Door, 42)
        assert await gen_statem.call(pid, 1) == "wrong"
        return await sys_.get_state(pid)

    assert pyotp.run(main) == ("locked", {"code": 42, "tries": 1})


def test_get_state_of_a_gen_event_manager_lists_its_handlers_states():
    async def main():
        mgr = await gen_event.start_link()
        await gen_event.add_handler(mgr, Recorder, None)
        await gen_event.sync_notify(mgr, "e1")
        return await sys_.get_state(mgr)

    assert pyotp.run(main) == [(Recorder, None, ["e1"])]


def test_replace_state_returns_the_new_state_and_the_server_keeps_it():
    """Ports sys_SUITE:replace_state."""

    async def main():
        pid = await gen_server.start_link(Counter, 1)
        new = await sys_.replace_state(pid, add_ten)
        return new, await gen_server.call(pid, "get")

    assert pyotp.run(main) == (11, 11)


def test_replace_state_of_a_gen_statem_replaces_state_and_data():
    async def main():
        pid = await gen_statem.start_link(Door, 1)
        new = await sys_.replace_state(pid, lambda sd: ("open", {**sd[1], "tries": 9}))
        assert new == ("open", {"code": 1, "tries": 9})
        return await gen_statem.call(pid, "anything"), await sys_.get_state(pid)

    assert pyotp.run(main) == ("locked", ("locked", {"code": 1, "tries": 9}))


def test_a_failing_replace_state_function_raises_and_keeps_the_old_state():
    """Ports sys_SUITE:replace_state (the failing-function half)."""

    def boom(state):
        raise ValueError("no")

    async def main():
        pid = await gen_server.start_link(Counter, 5)
        with pytest.raises(pyotp.OtpError) as err:
            await sys_.replace_state(pid, boom)
        assert err.value.reason[0] == "callback_failed"
        return await sys_.get_state(pid)

    assert pyotp.run(main) == 5


def test_replace_state_refuses_a_non_callable():
    async def main():
        pid = await gen_server.start_link(Counter, 5)
        with pytest.raises(pyotp.BadArg):
            await sys_.replace_state(pid, 3)
        return True

    assert pyotp.run(main)


# ------------------------------------------------------------------ suspend / resume / status


def test_a_suspended_server_queues_other_messages_and_handles_them_in_order_on_resume():
    """Ports sys_SUITE:suspend."""

    async def main():
        pid = await gen_server.start_link(Counter, [])
        await sys_.suspend(pid)
        for i in range(5):
            gen_server.cast(pid, ("log", i))
        # a call does not get through while suspended
        with pytest.raises(pyotp.CallTimeout):
            await gen_server.call(pid, "get", timeout=0.2)
        # but system messages do, and see the state untouched
        assert await sys_.get_state(pid) == []
        status = await sys_.get_status(pid)
        assert status[3][1] == "suspended"
        gen_server.cast(pid, ("log", 5))
        await sys_.resume(pid)
        status = await sys_.get_status(pid)
        assert status[3][1] == "running"
        return await gen_server.call(pid, "get")

    assert pyotp.run(main) == [0, 1, 2, 3, 4, 5]


class Idle(gen_server.GenServer):
    """Tells `watcher` each time its idle timeout (re-armed by every call) fires."""

    def init(self, watcher):
        return ("ok", watcher, 0.2)

    def handle_call(self, req, from_, watcher):
        return ("reply", "ok", watcher, 0.2)

    def handle_info(self, msg, watcher):
        pyotp.send(watcher, ("idle", msg))
        return ("noreply", watcher)


def test_a_server_timeout_runs_again_after_suspend_and_resume():
    """As OTP's gen_server: the loop continues with the same timeout after system messages."""

    async def main():
        pid = await gen_server.start_link(Idle, pyotp.self())
        await pyotp.receive(("idle", "timeout"), timeout=WAIT)
        await gen_server.call(pid, "arm")
        await sys_.suspend(pid)
        await sys_.resume(pid)
        return await pyotp.receive(("idle", pyotp.ANY), timeout=1.0)

    assert pyotp.run(main) == ("idle", "timeout")


def test_a_suspended_gen_statem_and_gen_event_manager_queue_events_until_resumed():
    async def main():
        door = await gen_statem.start_link(Door, 3)
        mgr = await gen_event.start_link()
        await gen_event.add_handler(mgr, Recorder, None)
        await sys_.suspend(door)
        await sys_.suspend(mgr)
        for e in ("a", "b"):
            gen_event.notify(mgr, e)
        gen_statem.cast(door, "ignored")
        assert await sys_.get_state(mgr) == [(Recorder, None, [])]
        assert (await sys_.get_status(door))[3][1] == "suspended"
        await sys_.resume(mgr)
        await sys_.resume(door)
        assert await gen_statem.call(door, 3) == "opened"
        await gen_event.sync_notify(mgr, "c")
        return await sys_.get_state(mgr)

    assert pyotp.run(main) == [(Recorder, None, ["a", "b", "c"])]


def test_process_info_reports_suspended_for_every_behaviour_until_resumed():
    class Sup(supervisor.Supervisor):
        def init(self, arg):
            return ("ok", ({"strategy": "one_for_one"}, []))

    async def main():
        mgr = await gen_event.start_link()
        pids = [
            await gen_server.start_link(Counter, 0),
            await gen_statem.start_link(Door, 3),
            mgr,
            await supervisor.start_link(Sup, None),
        ]
        seen = []
        for pid in pids:
            await sys_.suspend(pid)
            suspended = (await pyotp.process_info(pid))["status"]
            await sys_.resume(pid)
            seen.append((suspended, (await pyotp.process_info(pid))["status"]))
        return seen

    assert pyotp.run(main) == [("suspended", "waiting")] * 4


def test_get_status_has_erlangs_shape():
    """Ports sys_SUITE:get_status."""

    async def main():
        pid = await gen_server.start_link(Counter, 3, name="st")
        return pid, await sys_.get_status("st")

    pid, status = pyotp.run(main)
    assert status[0] == "status" and status[1] == pid
    assert status[2] == ("module", "gen_server")
    assert status[3][1] == "running"


def test_get_status_of_a_gen_event_manager_has_erlangs_shape():
    """As OTP's gen_event: [pdict, sys_state, parent, debug, misc]; unlinked, its own parent."""

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Recorder, None)
        await sys_.suspend(mgr)
        suspended = await sys_.get_status(mgr)
        await sys_.resume(mgr)
        return mgr, suspended, await sys_.get_status(mgr)

    mgr, suspended, status = pyotp.run(main)
    assert suspended[3][1] == "suspended"
    assert status[:3] == ("status", mgr, ("module", "gen_event"))
    _pdict, sys_state, parent, _debug, misc = status[3]
    assert (sys_state, parent) == ("running", mgr)
    assert ("items", ("Installed handlers", [(Recorder, None, [])])) in misc


def test_sys_calls_to_a_dead_process_raise_call_exit_noproc():
    async def main():
        pid = await gen_server.start(Counter, 0)
        await gen_server.stop(pid)
        for fn in (sys_.get_state, sys_.suspend, sys_.resume, sys_.get_status):
            with pytest.raises(pyotp.CallExit) as err:
                await fn(pid)
            assert err.value.reason == "noproc"
        with pytest.raises(pyotp.CallExit):
            await sys_.get_state("nobody_has_this_name")
        return True

    assert pyotp.run(main)


def test_sys_calls_to_a_process_that_is_not_a_behaviour_time_out():
    async def main():
        pid = pyotp.spawn(plain_process)
        with pytest.raises(pyotp.CallTimeout):
            await sys_.get_state(pid, timeout=0.2)
        return True

    assert pyotp.run(main)


# ------------------------------------------------------------------ statistics and trace


def test_statistics_count_messages_in_and_out_while_on():
    """Ports sys_SUITE:stats."""

    async def main():
        pid = await gen_server.start_link(Counter, 0)
        assert await sys_.statistics(pid, "get") is None
        assert await sys_.statistics(pid, True) is None
        for _ in range(3):
            await gen_server.call(pid, "get")
        gen_server.cast(pid, ("add", 1))
        pyotp.send(pid, "info")
        stats = await sys_.statistics(pid, "get")
        await sys_.statistics(pid, False)
        off = await sys_.statistics(pid, "get")
        return stats, off

    stats, off = pyotp.run(main)
    assert off is None
    assert stats["messages_in"] == 5
    assert stats["messages_out"] == 3
    assert stats["reductions"] >= 5
    assert stats["current_time"] >= stats["start_time"]


def test_statistics_of_a_gen_statem_count_events_and_reply_actions():
    async def main():
        pid = await gen_statem.start_link(Door, 2)
        await sys_.statistics(pid, True)
        await gen_statem.call(pid, 1)
        await gen_statem.call(pid, 2)
        return await sys_.statistics(pid, "get")

    stats = pyotp.run(main)
    assert (stats["messages_in"], stats["messages_out"]) == (2, 2)


def test_statistics_flag_must_be_true_false_or_get():
    async def main():
        pid = await gen_server.start_link(Counter, 0)
        with pytest.raises(pyotp.BadArg):
            await sys_.statistics(pid, "yes")
        with pytest.raises(pyotp.BadArg):
            await sys_.trace(pid, 1)
        return True

    assert pyotp.run(main)


def test_trace_logs_messages_replies_and_state_changes_while_on(caplog):
    """Ports sys_SUITE:trace."""

    async def main():
        pid = await gen_server.start_link(Counter, 0, name="traced")
        await sys_.trace(pid, True)
        await gen_server.call(pid, "get")
        gen_server.cast(pid, ("add", 2))
        await gen_server.call(pid, "get")
        await sys_.trace(pid, False)
        gen_server.cast(pid, ("add", 100))
        return await gen_server.call(pid, "get")

    with caplog.at_level(logging.INFO, logger="pyotp.sys"):
        assert pyotp.run(main) == 102
    lines = [r.getMessage() for r in caplog.records if r.name == "pyotp.sys"]
    assert any("traced got call 'get'" in s for s in lines)
    assert any("traced sent 0 to" in s for s in lines)
    assert any("traced got cast ('add', 2)" in s for s in lines)
    assert any("traced new state 2" in s for s in lines)
    assert not any("100" in s for s in lines)


def test_trace_of_a_gen_statem_logs_its_state_changes(caplog):
    async def main():
        pid = await gen_statem.start_link(Door, 4)
        await sys_.trace(pid, True)
        await gen_statem.call(pid, 4)
        await sys_.trace(pid, False)
        return True

    with caplog.at_level(logging.INFO, logger="pyotp.sys"):
        assert pyotp.run(main)
    lines = [r.getMessage() for r in caplog.records if r.name == "pyotp.sys"]
    assert any("new state ('open'" in s for s in lines)
    assert any("sent 'opened'" in s for s in lines)


# ------------------------------------------------------------------ across schedulers


@pytest.mark.slow
def test_sys_functions_reach_a_server_on_another_scheduler():
    async def main():
        pid = await gen_server.start(Counter, 1, scheduler=1)
        assert pid.scheduler == 1
        await sys_.suspend(pid)
        gen_server.cast(pid, ("add", 1))
        assert await sys_.get_state(pid) == 1
        await sys_.resume(pid)
        assert await sys_.replace_state(pid, add_ten) == 12
        await sys_.statistics(pid, True)
        await gen_server.call(pid, "get")
        stats = await sys_.statistics(pid, "get")
        await gen_server.stop(pid)
        return stats["messages_in"]

    assert pyotp.run(main, schedulers=2) == 1


@pytest.mark.slow
def test_process_info_of_a_suspended_process_on_another_scheduler_reports_suspended():
    async def main():
        pids = [
            await gen_server.start(Counter, 0, scheduler=1),
            await gen_statem.start(Door, 3, scheduler=1),
        ]
        seen = []
        for pid in pids:
            assert pid.scheduler == 1
            await sys_.suspend(pid)
            suspended = (await pyotp.process_info(pid))["status"]
            await sys_.resume(pid)
            seen.append((suspended, (await pyotp.process_info(pid))["status"]))
        return seen

    assert pyotp.run(main, schedulers=2) == [("suspended", "waiting")] * 2


class Trapper(gen_server.GenServer):
    def init(self, watcher):
        pyotp.process_flag("trap_exit", True)
        return ("ok", watcher)

    def terminate(self, reason, watcher):
        pyotp.send(watcher, ("terminated", reason))


async def start_trapper_then_wait(watcher):
    pid = await gen_server.start_link(Trapper, watcher)
    pyotp.send(watcher, ("server", pid))
    await pyotp.receive("die")
    raise pyotp.Exit("parent_gone")


def test_a_suspended_server_that_traps_exits_still_terminates_when_its_parent_exits():
    async def main():
        parent = pyotp.spawn(start_trapper_then_wait, pyotp.self())
        _, server = await pyotp.receive(("server", pyotp.ANY), timeout=WAIT)
        await sys_.suspend(server)
        pyotp.send(parent, "die")
        return await pyotp.receive(("terminated", pyotp.ANY), timeout=WAIT)

    assert pyotp.run(main) == ("terminated", "parent_gone")
