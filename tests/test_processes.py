"""Processes on one scheduler: spawn, send, receive, links, monitors, exits, registry, timers."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

import pyotp
from pyotp import ANY


async def _echo():
    while True:
        msg = await pyotp.receive()
        if msg == "stop":
            return
        pyotp.send(msg[0], msg[1])


async def _wait_forever():
    await pyotp.receive(("never", ANY))


async def _crash():
    raise ValueError("boom")


def test_run_returns_the_value_of_main():
    async def main(a, b):
        return a + b

    assert pyotp.run(main, 2, 3) == 5


def test_run_accepts_a_plain_function_as_main():
    def main():
        return pyotp.self()

    pid = pyotp.run(main)
    assert isinstance(pid, pyotp.Pid)


def test_run_raises_process_crash_when_main_crashes():
    async def main():
        raise KeyError("missing")

    with pytest.raises(pyotp.ProcessCrash) as info:
        pyotp.run(main)
    crash = info.value.reason
    assert isinstance(crash, pyotp.Crash)
    assert crash.type == "KeyError"
    assert "Traceback" in str(crash)


def test_run_raises_process_crash_with_the_exit_reason_of_main():
    async def main():
        raise pyotp.Exit(("shutdown", "why"))

    with pytest.raises(pyotp.ProcessCrash) as info:
        pyotp.run(main)
    assert info.value.reason == ("shutdown", "why")


def test_calls_from_plain_code_raise_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        pyotp.self()
    with pytest.raises(pyotp.NotInProcess):
        pyotp.spawn(_echo)
    with pytest.raises(pyotp.NotInProcess):
        pyotp.whereis("x")
    with pytest.raises(pyotp.NotInProcess):
        pyotp.make_ref()
    with pytest.raises(pyotp.NotInProcess):
        asyncio.run(pyotp.receive(timeout=0))


def test_messages_round_trip_between_processes():
    async def main():
        pid = pyotp.spawn(_echo)
        pyotp.send(pid, (pyotp.self(), ("hello", [1, 2])))
        got = await pyotp.receive(timeout=5)
        pyotp.send(pid, "stop")
        return got

    assert pyotp.run(main) == ("hello", [1, 2])


def test_send_returns_the_message_and_drops_it_for_a_dead_pid():
    async def main():
        pid, ref = pyotp.spawn_monitor(_crash)
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        return pyotp.send(pid, "late")

    logging.disable(logging.CRITICAL)
    try:
        assert pyotp.run(main) == "late"
    finally:
        logging.disable(logging.NOTSET)


def test_send_to_an_unregistered_name_raises_badarg():
    async def main():
        with pytest.raises(pyotp.BadArg, match="nobody"):
            pyotp.send("nobody", 1)
        with pytest.raises(pyotp.BadArg, match="expects a Pid"):
            pyotp.send(42, 1)
        return True

    assert pyotp.run(main)


def test_selective_receive_takes_the_oldest_match_and_keeps_the_rest_in_order():
    async def main():
        me = pyotp.self()
        for m in [("b", 1), ("a", 1), ("b", 2), ("a", 2), "c"]:
            pyotp.send(me, m)
        first_a = await pyotp.receive(("a", ANY))
        any_int = await pyotp.receive(("a", int), timeout=0)
        rest = [await pyotp.receive(timeout=0) for _ in range(3)]
        return first_a, any_int, rest

    assert pyotp.run(main) == (("a", 1), ("a", 2), [("b", 1), ("b", 2), "c"])


def test_receive_with_several_patterns_takes_the_oldest_matching_any():
    async def main():
        me = pyotp.self()
        pyotp.send(me, "x")
        pyotp.send(me, 3)
        pyotp.send(me, "y")
        return await pyotp.receive(int, "y", timeout=0)

    assert pyotp.run(main) == 3


def test_receive_times_out_with_timeout_and_leaves_the_mailbox_alone():
    async def main():
        pyotp.send(pyotp.self(), "other")
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive("wanted", timeout=0.05)
        with pytest.raises(TimeoutError):
            await pyotp.receive("wanted", timeout=0)
        return await pyotp.receive(timeout=0)

    assert pyotp.run(main) == "other"


def test_a_waiting_receive_is_handed_a_matching_message():
    async def main():
        me = pyotp.self()

        async def later():
            pyotp.send(me, "noise")
            pyotp.send(me, ("reply", 7))

        pyotp.spawn(later)
        got = await pyotp.receive(("reply", int), timeout=5)
        noise = await pyotp.receive(timeout=0)
        return got, noise

    assert pyotp.run(main) == (("reply", 7), "noise")


def test_receive_rejects_a_bad_timeout():
    async def main():
        with pytest.raises(pyotp.BadArg, match="timeout"):
            await pyotp.receive(timeout=-1)
        with pytest.raises(pyotp.BadArg):
            await pyotp.receive(timeout="soon")
        return True

    assert pyotp.run(main)


def test_a_nan_timeout_is_badarg_and_an_infinite_one_waits_forever():
    from pyotp import gen_server

    class Srv(gen_server.GenServer):
        def init(self, arg):
            return ("ok", arg)

        def handle_call(self, req, from_, state):
            return ("reply", state, state)

    async def main():
        nan, inf = float("nan"), float("inf")
        with pytest.raises(pyotp.BadArg, match="nan"):
            await pyotp.receive(timeout=nan)
        with pytest.raises(pyotp.BadArg, match="nan"):
            pyotp.send_after(nan, pyotp.self(), "m")
        srv = await gen_server.start(Srv, 7, timeout=inf)
        with pytest.raises(pyotp.BadArg, match="nan"):
            await gen_server.call(srv, "get", timeout=nan)
        assert await gen_server.call(srv, "get", timeout=inf) == 7
        with pytest.raises(pyotp.BadArg, match="nan"):
            await pyotp.process_info(srv, timeout=nan)
        pyotp.send_after(0.05, pyotp.self(), "late")
        return await pyotp.receive(timeout=inf)

    assert pyotp.run(main) == "late"


def test_match_follows_the_pattern_language():
    m = pyotp.match
    assert m(ANY, object())
    assert m(int, 3) and not m(int, "3")
    assert m(("a", ANY), ("a", [1])) and not m(("a", ANY), ["a", 1])
    assert m(["a", int], ["a", 1]) and not m(["a", int], ("a", 1))
    assert not m(("a",), ("a", 1))
    assert m({"k": int}, {"k": 1, "other": 2}) and not m({"k": int}, {"j": 1})
    assert m(lambda x: x > 2, 3) and not m(lambda x: x > 2, 1)
    assert m("x", "x") and not m("x", "y")


class _EqSpy:
    """A message element that counts how often a pattern compared itself with it."""

    seen = 0

    def __eq__(self, other):
        type(self).seen += 1
        return False

    __hash__ = object.__hash__


def test_a_fresh_ref_receive_skips_messages_queued_before_the_ref():
    """The receive marker: a call/reply receive does not rescan an old, long queue."""

    async def main():
        me = pyotp.self()
        spy = _EqSpy()
        for i in range(20_000):
            pyotp.send(me, (spy, i))
        proc = __import__("schedulers").current_process()
        ref = pyotp.make_ref()
        assert proc.marker_pos == 20_000
        pyotp.send(me, (ref, "answer"))
        got = await pyotp.receive((ref, ANY), timeout=5)
        # the ref pattern was never compared with the 20,000 old messages
        return got[1], proc.queue_len(), _EqSpy.seen

    assert pyotp.run(main) == ("answer", 20_000, 0)


def test_a_receive_with_one_pattern_without_the_fresh_ref_still_sees_older_messages():
    """The marker applies only when every pattern needs the ref: the oldest match wins."""

    async def main():
        me = pyotp.self()
        pyotp.send(me, ("a", 1))
        pyotp.send(me, 5)
        ref = pyotp.make_ref()
        pyotp.send(me, ("b", ref))
        first = await pyotp.receive(("a", ANY), ("b", ref), timeout=0)
        second = await pyotp.receive(int, (ref, ANY), timeout=0)
        third = await pyotp.receive(ref, ("b", ref), timeout=0)
        return first, second, third == ("b", ref)

    assert pyotp.run(main) == (("a", 1), 5, True)


def test_receive_marker_makes_call_reply_fast_with_a_long_queue():
    async def main():
        me = pyotp.self()
        for i in range(10_000):
            pyotp.send(me, ("old", i))
        proc = __import__("schedulers").current_process()
        ref = pyotp.make_ref()
        pyotp.send(me, (ref, "answer"))
        got = await pyotp.receive((ref, ANY), timeout=5)
        return got[1], proc.queue_len(), proc.marker_pos

    assert pyotp.run(main) == ("answer", 10_000, 10_000)


def test_links_propagate_an_abnormal_exit():
    async def main():
        pyotp.process_flag("trap_exit", True)

        async def middle():
            pyotp.spawn_link(_crash)
            await pyotp.receive()

        pid = pyotp.spawn_link(middle)
        msg = await pyotp.receive(("EXIT", pid, ANY), timeout=5)
        return msg[2]

    logging.disable(logging.CRITICAL)
    try:
        reason = pyotp.run(main)
    finally:
        logging.disable(logging.NOTSET)
    assert isinstance(reason, pyotp.Crash) and reason.type == "ValueError"


def test_a_normal_exit_does_not_kill_linked_processes():
    async def main():
        async def quick():
            return None

        pid = pyotp.spawn(_wait_forever)

        async def linker():
            pyotp.link(pid)

        _, ref = pyotp.spawn_monitor(linker)
        await pyotp.receive(("DOWN", ref, ANY, ANY, "normal"), timeout=5)
        alive = await pyotp.process_info(pid) is not None
        pyotp.exit(pid, "kill")
        return alive

    assert pyotp.run(main)


def test_trap_exit_turns_exit_signals_into_messages():
    async def main():
        old = pyotp.process_flag("trap_exit", True)
        pid = pyotp.spawn_link(_wait_forever)
        pyotp.exit(pid, "bye")
        msg = await pyotp.receive(("EXIT", ANY, ANY), timeout=5)
        return old, msg == ("EXIT", pid, "bye")

    assert pyotp.run(main) == (False, True)


def test_exit_kill_cannot_be_trapped_and_becomes_killed():
    async def main():
        async def trapper():
            pyotp.process_flag("trap_exit", True)
            await pyotp.receive(("never",))

        pid, ref = pyotp.spawn_monitor(trapper)
        await asyncio.sleep(0)
        pyotp.exit(pid, "kill")
        msg = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        return msg[4]

    assert pyotp.run(main) == "killed"


def test_exit_normal_is_ignored_by_a_process_that_does_not_trap():
    async def main():
        pid = pyotp.spawn(_wait_forever)
        pyotp.exit(pid, "normal")
        alive = await pyotp.process_info(pid) is not None
        pyotp.exit(pid, "kill")
        return alive

    assert pyotp.run(main)


def test_exit_normal_to_oneself_ends_the_process_with_normal():
    async def main():
        async def suicide():
            pyotp.exit(pyotp.self(), "normal")
            return "unreachable"

        _, ref = pyotp.spawn_monitor(suicide)
        return (await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5))[4]

    assert pyotp.run(main) == "normal"


def test_a_linked_kill_reason_is_trappable_and_not_converted():
    """A process exiting with reason kill sends kill via links, not killed (Erlang rule)."""

    async def main():
        pyotp.process_flag("trap_exit", True)

        async def dies_with_kill():
            raise pyotp.Exit("kill")

        pid = pyotp.spawn_link(dies_with_kill)
        return await pyotp.receive(("EXIT", pid, ANY), timeout=5)

    assert pyotp.run(main)[2] == "kill"


def test_linking_to_a_dead_process_gives_noproc():
    async def main():
        pid, ref = pyotp.spawn_monitor(lambda: None)
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)

        async def links_to_dead():
            pyotp.link(pid)

        _, ref2 = pyotp.spawn_monitor(links_to_dead)
        reason = (await pyotp.receive(("DOWN", ref2, ANY, ANY, ANY), timeout=5))[4]
        pyotp.process_flag("trap_exit", True)
        pyotp.link(pid)
        msg = await pyotp.receive(("EXIT", pid, ANY), timeout=5)
        return reason, msg[2]

    assert pyotp.run(main) == ("noproc", "noproc")


def test_unlink_stops_exit_propagation():
    async def main():
        pid = pyotp.spawn_link(_wait_forever)
        pyotp.unlink(pid)
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        info = await pyotp.process_info(pyotp.self())
        return info["links"]

    assert pyotp.run(main) == []


def test_monitor_delivers_down_with_the_exit_reason():
    async def main():
        async def quits():
            raise pyotp.Exit("bye")

        pid = pyotp.spawn(quits)
        ref = pyotp.monitor(pid)
        return await pyotp.receive(("DOWN", ref, "process", pid, ANY), timeout=5)

    assert pyotp.run(main)[4] == "bye"


def test_monitor_of_a_dead_pid_or_unknown_name_is_an_immediate_noproc():
    async def main():
        pid, ref = pyotp.spawn_monitor(lambda: None)
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        r1 = pyotp.monitor(pid)
        d1 = await pyotp.receive(("DOWN", r1, ANY, ANY, ANY), timeout=0)
        r2 = pyotp.monitor("nobody")
        d2 = await pyotp.receive(("DOWN", r2, ANY, ANY, ANY), timeout=0)
        return d1[3:], d2[3:]

    d1, d2 = pyotp.run(main)
    assert d1[1] == "noproc"
    assert d2 == (("nobody", "nonode@nohost"), "noproc")


def test_monitor_by_name_reports_name_and_node():
    async def main():
        pid = pyotp.spawn(_wait_forever)
        await pyotp.register("target", pid)
        ref = pyotp.monitor("target")
        pyotp.exit(pid, "kill")
        return await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)

    assert pyotp.run(main)[3:] == (("target", "nonode@nohost"), "killed")


def test_demonitor_with_flush_removes_a_queued_down():
    async def main():
        pid = pyotp.spawn(_wait_forever)
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        await asyncio.sleep(0)
        queued = (await pyotp.process_info(pyotp.self()))["message_queue_len"]
        pyotp.demonitor(ref, flush=True)
        after = (await pyotp.process_info(pyotp.self()))["message_queue_len"]
        return queued, after

    assert pyotp.run(main) == (1, 0)


def test_demonitor_stops_the_down_message():
    async def main():
        pid = pyotp.spawn(_wait_forever)
        ref = pyotp.monitor(pid)
        pyotp.demonitor(ref)
        pyotp.exit(pid, "kill")
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=0.05)
        return True

    assert pyotp.run(main)


def test_an_uncaught_exception_is_logged_as_a_crash_report(caplog):
    async def main():
        _, ref = pyotp.spawn_monitor(_crash)
        return (await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5))[4]

    with caplog.at_level(logging.ERROR, logger="pyotp.crash"):
        reason = pyotp.run(main)
    assert reason.type == "ValueError" and reason.message == "boom"
    assert "ValueError: boom" in str(reason)
    records = [r for r in caplog.records if r.name == "pyotp.crash"]
    assert len(records) == 1 and "Traceback" in records[0].getMessage()


def test_exit_is_not_swallowed_by_except_exception():
    async def main():
        async def stubborn():
            try:
                raise pyotp.Exit("out")
            except Exception:
                return "swallowed"

        _, ref = pyotp.spawn_monitor(stubborn)
        return (await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5))[4]

    assert pyotp.run(main) == "out"


def test_a_killed_process_that_swallows_cancellation_stays_dead():
    async def main():
        async def stubborn():
            try:
                await pyotp.receive(("never",))
            except BaseException:
                pass
            pyotp.send(pyotp.self(), "x")
            await pyotp.receive()

        pid, ref = pyotp.spawn_monitor(stubborn)
        await asyncio.sleep(0)
        pyotp.exit(pid, "kill")
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        await asyncio.sleep(0.01)
        return down[4], await pyotp.process_info(pid)

    assert pyotp.run(main) == ("killed", None)


def test_a_killed_process_whose_finally_calls_receive_ends():
    """A cleanup that receives (a call in a `finally`) swallows nothing: the task ends, it
    is not parked for good as a process that caught its exit."""

    async def main():
        async def cleanup():
            try:
                await pyotp.receive(("never",))
            finally:
                await pyotp.receive(("also never",), timeout=5)

        pids = [pyotp.spawn(cleanup) for _ in range(5)]
        await asyncio.sleep(0.01)
        tasks = [p._proc.task for p in pids]
        for p in pids:
            pyotp.exit(p, "kill")
        await asyncio.sleep(0.05)
        return [t.done() for t in tasks]

    assert pyotp.run(main) == [True] * 5


def test_register_whereis_unregister_and_registered():
    async def main():
        pid = pyotp.spawn(_echo)
        await pyotp.register("echo", pid)
        assert pyotp.whereis("echo") == pid
        assert "echo" in pyotp.registered()
        pyotp.send("echo", (pyotp.self(), "via name"))
        got = await pyotp.receive(timeout=5)
        await pyotp.unregister("echo")
        assert pyotp.whereis("echo") is None
        pyotp.send(pid, "stop")
        return got

    assert pyotp.run(main) == "via name"


def test_register_refuses_a_taken_name_a_dead_pid_and_a_second_name():
    async def main():
        a = pyotp.spawn(_wait_forever)
        await pyotp.register("a", a)
        with pytest.raises(pyotp.BadArg, match="already registered"):
            await pyotp.register("a", pyotp.self())
        with pytest.raises(pyotp.BadArg, match="already has"):
            await pyotp.register("b", a)
        dead, ref = pyotp.spawn_monitor(lambda: None)
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        with pytest.raises(pyotp.BadArg, match="not a live"):
            await pyotp.register("c", dead)
        with pytest.raises(pyotp.BadArg):
            await pyotp.register(3, a)
        with pytest.raises(pyotp.BadArg):
            await pyotp.unregister("never-registered")
        pyotp.exit(a, "kill")
        return True

    assert pyotp.run(main)


def test_a_name_is_freed_when_its_process_exits():
    async def main():
        pid, ref = pyotp.spawn_monitor(_wait_forever)
        await pyotp.register("short", pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        return pyotp.whereis("short")

    assert pyotp.run(main) is None


def test_make_ref_is_unique():
    async def main():
        return len({pyotp.make_ref() for _ in range(1000)})

    assert pyotp.run(main) == 1000


def test_send_after_delivers_and_cancel_timer_returns_time_left():
    async def main():
        me = pyotp.self()
        pyotp.send_after(0.01, me, "tick")
        got = await pyotp.receive(timeout=5)
        tref = pyotp.send_after(10, me, "never")
        left = pyotp.cancel_timer(tref)
        again = pyotp.cancel_timer(tref)
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive("never", timeout=0.02)
        return got, left, again

    got, left, again = pyotp.run(main)
    assert got == "tick" and 9 < left <= 10 and again is None


def test_process_info_describes_a_process_and_is_none_when_dead():
    async def main():
        pid = pyotp.spawn(_wait_forever)
        await pyotp.register("watched", pid)
        pyotp.send(pid, "queued")
        await asyncio.sleep(0)
        info = await pyotp.process_info(pid)
        pyotp.exit(pid, "kill")
        return info, await pyotp.process_info(pid), await pyotp.processes()

    info, dead, procs = pyotp.run(main)
    assert info["status"] == "waiting"
    assert info["message_queue_len"] == 1
    assert info["registered_name"] == "watched"
    assert info["trap_exit"] is False and info["scheduler"] == 0
    assert info["node"] == "nonode@nohost" and info["memory"] > 0
    assert info["current_function"][1] == "_wait_forever"
    for key in ("links", "monitors", "reductions"):
        assert key in info
    assert dead is None
    assert len(procs) >= 1


async def _sleep_long(parent):
    pyotp.send(parent, "sleeping")
    await asyncio.sleep(30)


def test_a_process_blocked_in_an_await_is_waiting_here_and_on_another_scheduler():
    """As Erlang's timer:sleep (a receive ... after): not on the run queue, so "waiting"."""

    async def main():
        pids = [pyotp.spawn(_sleep_long, pyotp.self(), scheduler=k) for k in (0, 1)]
        for _ in pids:
            await pyotp.receive("sleeping", timeout=10)
        await asyncio.sleep(0.05)
        return [(await pyotp.process_info(p))["status"] for p in pids]

    assert pyotp.run(main, schedulers=2) == ["waiting", "waiting"]


def test_spawn_options_are_checked():
    async def main():
        with pytest.raises(pyotp.BadArg, match="callable"):
            pyotp.spawn(42)
        with pytest.raises(pyotp.BadArg, match="scheduler"):
            pyotp.spawn(_wait_forever, scheduler=5)
        with pytest.raises(pyotp.BadArg, match="placement"):
            pyotp.spawn(_wait_forever, placement="nearby")
        with pytest.raises(pyotp.BadArg, match="trap_exit"):
            pyotp.process_flag("trap_exit", "yes")
        with pytest.raises(pyotp.BadArg, match="unknown flag"):
            pyotp.process_flag("priority", "high")
        return True

    assert pyotp.run(main)


def test_spawn_with_trap_exit_and_placement_auto():
    async def main():
        pid, ref = pyotp.spawn(_wait_forever, trap_exit=True, placement="auto", monitor=True)
        info = await pyotp.process_info(pid)
        pyotp.exit(pid, "stop")
        q = await pyotp.process_info(pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=5)
        return info["trap_exit"], q["message_queue_len"]

    assert pyotp.run(main) == (True, 1)


def test_a_long_chain_of_linked_processes_dies_without_recursion():
    async def main():
        async def link_next(n):
            if n:
                pyotp.spawn_link(link_next, n - 1)
            await pyotp.receive(("never",))

        pyotp.process_flag("trap_exit", True)
        first = pyotp.spawn_link(link_next, 5000)
        await asyncio.sleep(0.2)
        pyotp.exit(first, "chain")
        await pyotp.receive(("EXIT", first, ANY), timeout=5)
        while len(await pyotp.processes()) > 1:
            await asyncio.sleep(0.01)
        return True

    assert pyotp.run(main)


def test_run_shuts_down_every_process_and_trapping_ones_get_shutdown():
    seen = []

    async def trapper():
        pyotp.process_flag("trap_exit", True)
        seen.append(await pyotp.receive(("EXIT", ANY, ANY)))

    async def main():
        pyotp.spawn(trapper)
        pyotp.spawn(_wait_forever)
        await asyncio.sleep(0)
        return "done"

    assert pyotp.run(main) == "done"
    assert seen and seen[0][2] == "shutdown"


def test_node_and_nodes_when_not_distributed():
    async def main():
        return pyotp.node(), pyotp.nodes()

    assert pyotp.run(main) == ("nonode@nohost", [])


def test_monitor_node_of_an_unknown_node_gives_nodedown():
    async def main():
        pyotp.monitor_node("x@nowhere", True)
        return await pyotp.receive(timeout=5)

    assert pyotp.run(main) == ("nodedown", "x@nowhere")


def test_run_rejects_bad_arguments():
    with pytest.raises(pyotp.BadArg, match="callable"):
        pyotp.run(3)
    with pytest.raises(pyotp.BadArg, match="schedulers"):
        pyotp.run(lambda: None, schedulers=0)
    with pytest.raises(pyotp.BadArg, match="name"):
        pyotp.run(lambda: None, name="nohost")
    # ZeroMQ would bind port 99999 as 34463: a node named for a port it does not listen on.
    for bad in ("a@127.0.0.1:99999", "a@127.0.0.1:0", "a@127.0.0.1:-1", "a@127.0.0.1:x"):
        with pytest.raises(pyotp.BadArg, match="name"):
            pyotp.run(lambda: None, name=bad)


def test_a_node_that_cannot_listen_on_its_host_fails_clearly_and_leaves_no_trace():
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails at once."""
    with pytest.raises(OSError, match=r"cannot listen on host '192\.0\.2\.1'"):
        pyotp.run(lambda: None, name="a@192.0.2.1")
    assert pyotp.run(lambda: "again") == "again"  # not "a node is already running"


def test_net_and_rpc_refuse_a_node_name_with_a_bad_port():
    async def main():
        for bad in ("b@127.0.0.1:99999", "b@127.0.0.1:x", "nohost"):
            with pytest.raises(pyotp.BadArg, match="node name"):
                await pyotp.net.connect(bad)
            with pytest.raises(pyotp.BadArg, match="node name"):
                await pyotp.rpc.call(bad, len, "x")
        return True

    assert pyotp.run(main, name=f"badport{os.getpid()}@127.0.0.1")


def test_send_to_name_and_this_node_that_nobody_holds_is_dropped_like_erlang():
    """Erlang: `{Name, node()} ! Msg` to nobody returns Msg, no badarg (only a bare name
    raises); a non-term is still refused."""

    async def main():
        assert pyotp.send(("nobody_here", pyotp.node()), "m") == "m"
        with pytest.raises(pyotp.BadArg):
            pyotp.send("nobody_here", "m")
        return True

    assert pyotp.run(main)


def test_a_predicate_that_raises_does_not_match_as_an_erlang_guard():
    async def main():
        pyotp.send(pyotp.self(), "text")
        pyotp.send(pyotp.self(), 5)
        got = await pyotp.receive(lambda m: m > 3, timeout=0)  # "text" > 3 raises
        left = await pyotp.receive(timeout=0)
        return got, left, pyotp.match(lambda m: m[0] == "x", 7)

    assert pyotp.run(main) == (5, "text", False)


def test_send_after_refuses_a_destination_that_is_not_a_pid_name_or_name_node():
    async def main():
        bad = []
        for dest in (5, None, ("a",), ["x"], 1.5, ("a", 1)):
            with pytest.raises(pyotp.BadArg, match="destination"):
                pyotp.send_after(0.01, dest, "m")
            bad.append(dest)
        pyotp.cancel_timer(pyotp.send_after(5, ("x", pyotp.node()), "m"))
        return len(bad)

    assert pyotp.run(main) == 6


def test_node_wide_calls_take_a_timeout_and_register_returns_true():
    """API.md: every call that waits on another process takes timeout=; register answers
    Erlang's true."""

    async def main():
        me = pyotp.self()
        assert await pyotp.register("timed_name", me, timeout=5) is True
        info = await pyotp.process_info(me, timeout=5)
        pids = await pyotp.processes(timeout=5)
        await pyotp.unregister("timed_name", timeout=None)
        with pytest.raises(pyotp.BadArg, match="timeout"):
            await pyotp.process_info(me, timeout=-1)
        return info["registered_name"], me in pids, pyotp.whereis("timed_name")

    for schedulers in (1, 2):
        assert pyotp.run(main, schedulers=schedulers) == ("timed_name", True, None)


_STUBBORN = '''
import sys, pyotp

async def stubborn(parent):
    pyotp.send(parent, "ready")
    while True:
        try:
            await pyotp.receive()
        except:  # swallows CancelledError and Exit too
            pass

async def main(sched, last):
    victim = pyotp.spawn(stubborn, pyotp.self(), scheduler=sched)
    ref = pyotp.monitor(victim)
    await pyotp.receive("ready", timeout=10)
    pyotp.exit(victim, "kill")
    down = await pyotp.receive(("DOWN", ref, "process", victim, pyotp.ANY), timeout=10)
    if last:
        return down[4]  # the parked process is all that is left of this node
    pyotp.spawn(stubborn, pyotp.self(), scheduler=sched)  # alive until the node stops
    await pyotp.receive("ready", timeout=10)
    # the scheduler still serves other processes
    echo = pyotp.spawn(pyotp.send, pyotp.self(), "still here", scheduler=sched)
    return down[4], await pyotp.receive("still here", timeout=10), echo.scheduler

if __name__ == "__main__":
    print(pyotp.run(main, int(sys.argv[1]), sys.argv[2] == "last", schedulers=2), flush=True)
'''


def _run_stubborn(tmp_path, sched, mode):
    """Run _STUBBORN as a node's main script (its own OS process); return the result."""
    import subprocess
    import sys

    script = tmp_path / "stubborn.py"
    script.write_text(_STUBBORN)
    done = subprocess.run([sys.executable, str(script), str(sched), mode], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("sched", [0, 1])
def test_a_process_that_swallows_its_kill_neither_freezes_nor_outlives_its_node(tmp_path, sched):
    """A loop under a bare except: once killed it never runs again (no spin), its monitor
    fires "killed", other processes go on, and the node stops cleanly at the end."""
    done = _run_stubborn(tmp_path, sched, "more")
    assert done.stdout.strip() == repr(("killed", "still here", sched))
    assert "caught the exit that ended it ('killed')" in done.stderr


@pytest.mark.parametrize("sched", [0, 1])
def test_a_node_whose_only_leftover_is_a_parked_process_stops(tmp_path, sched):
    """Shutdown with no live process left still abandons a parked task (it returned early,
    and the loop's close then waited for that task forever, deaf to SIGTERM)."""
    done = _run_stubborn(tmp_path, sched, "last")
    assert done.stdout.strip() == "killed"


def test_spawn_flags_and_demonitor_flush_must_be_bools():
    async def main():
        for opts in ({"link": "x"}, {"monitor": 1}, {"trap_exit": "yes"}, {"link": None}):
            with pytest.raises(pyotp.BadArg, match="expect a bool"):
                pyotp.spawn(_wait_forever, **opts)
        ref = pyotp.monitor(pyotp.spawn(_wait_forever))
        with pytest.raises(pyotp.BadArg, match="flush"):
            pyotp.demonitor(ref, flush="x")
        return pyotp.demonitor(ref, flush=True)

    assert pyotp.run(main) is True


def test_send_after_refuses_a_non_term_for_another_scheduler_at_once():
    """It was accepted, then dropped without a word when the timer fired."""

    async def main():
        other = pyotp.spawn(_echo, scheduler=1)
        await pyotp.register("echo_there", other)
        for dest in (other, "echo_there"):
            with pytest.raises(pyotp.NotSerializable, match="set"):
                pyotp.send_after(0, dest, {1})
        with pytest.raises(pyotp.NotSerializable, match="set"):
            pyotp.send_after(0, ("x", "elsewhere@127.0.0.1"), {1})
        here = pyotp.send_after(10, pyotp.self(), {1})  # stays on this scheduler: fine
        pyotp.cancel_timer(here)
        pyotp.send_after(0, other, (pyotp.self(), "ok"))
        return await pyotp.receive(timeout=5)

    assert pyotp.run(main, schedulers=2) == "ok"
