"""A node of several scheduler OS processes: transparency, registry, placement, failures.

Every test here boots real scheduler OS processes talking over real ZeroMQ ipc:// sockets.
Functions spawned on another scheduler live at module level so the worker can import them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import zmq

import pyotp
from pyotp import ANY, gen_server, global_, pg, supervisor

pytestmark = pytest.mark.slow

T = 10  # generous liveness deadline (seconds)


# --------------------------------------------------------------------- processes to spawn


async def echo():
    while True:
        msg = await pyotp.receive()
        if msg == "stop":
            return
        pyotp.send(msg[0], (msg[1], os.getpid()))


async def idle():
    await pyotp.receive(("never",))


async def crash_after_go():
    await pyotp.receive("go")
    raise RuntimeError("remote boom")


async def whereis_reporter(parent, name):
    pyotp.send(parent, ("seen", pyotp.whereis(name)))


async def sink(n, parent):
    got = [await pyotp.receive() for _ in range(n)]
    pyotp.send(parent, ("got", got))


async def trapping_sink(parent):
    got = []
    while True:
        msg = await pyotp.receive()
        got.append(msg)
        if type(msg) is tuple and msg[0] == "EXIT":
            pyotp.send(parent, ("got", got))
            return


async def register_self(name, parent):
    try:
        await pyotp.register(name, pyotp.self())
        pyotp.send(parent, ("won", pyotp.self()))
    except pyotp.BadArg:
        pyotp.send(parent, ("lost", pyotp.self()))
    await pyotp.receive(("never",))


async def cancel_twice_and_report(tref, parent):
    pyotp.send(parent, ("cancelled", pyotp.cancel_timer(tref), pyotp.cancel_timer(tref)))


async def set_a_timer_that_fires_at_once(parent):
    pyotp.send(parent, ("tref", pyotp.send_after(0, parent, "fired")))


async def make_refs(parent, n):
    pyotp.send(parent, [pyotp.make_ref() for _ in range(n)])


def burn(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def long_stepper(parent):
    burn(0.4)
    pyotp.send(parent, "burnt")


class Counter(gen_server.GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, from_, n):
        if req == "pid":
            return ("reply", os.getpid(), n)
        return ("reply", n, n + 1)


async def exit_with_a_set_after_go():
    await pyotp.receive("go")
    raise pyotp.Exit({1, 2})


async def burst_on_go(to):
    await pyotp.receive("go")
    for m in (("a", 1), ("b", 2), ("c", 3), ("b", 4), ("d", 5)):
        pyotp.send(to, m)  # one loop turn: one frame carries all five


async def report_busy_wait(to):
    from schedulers import get

    pyotp.send(to, ("spin", get().router.spin))


class Delegating(gen_server.GenServer):
    """Answers "direct" itself; anything else through a helper process it spawns."""

    def init(self, arg):
        return ("ok", None)

    def handle_call(self, req, from_, state):
        if req == "direct":
            return ("reply", "direct", state)
        pyotp.spawn(reply_for, from_, req)
        return ("noreply", state)


async def reply_for(from_, value):
    gen_server.reply(from_, value)


class OneWorkerSup(supervisor.Supervisor):
    def init(self, sched):
        flags = {"strategy": "one_for_one", "intensity": 5, "period": 10}
        child = {
            "id": "counter",
            "start": (gen_server.start_link, (Counter, 0), {"name": "counter"}),
            "scheduler": sched,
        }
        return ("ok", (flags, [child]))


# --------------------------------------------------------------------- helpers


def run2(main, *args):
    return pyotp.run(main, *args, schedulers=2)


async def wait_for(predicate, deadline=T):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def worker_pids():
    return [p.pid for p in psutil.Process().children(recursive=True)
            if "schedulers._worker" in " ".join(p.cmdline())]


# --------------------------------------------------------------------- tests


def test_a_process_on_another_scheduler_runs_in_another_os_process():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        assert pid.scheduler == 1
        pyotp.send(pid, (pyotp.self(), "hi"))
        got = await pyotp.receive(timeout=T)
        pyotp.send(pid, "stop")
        return got, os.getpid()

    (msg, their_os_pid), our_os_pid = run2(main)
    assert msg == "hi" and their_os_pid != our_os_pid


def test_run_leaves_no_scheduler_process_and_no_socket_directory_behind():
    async def main():
        pyotp.spawn(idle, scheduler=1)
        return worker_pids(), get_pool_dir()

    workers, pool_dir = run2(main)
    assert len(workers) == 1 and pool_dir.startswith(tempfile.gettempdir())
    for pid in workers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert worker_pids() == []
    assert not os.path.exists(pool_dir)


def test_messages_and_signals_between_two_schedulers_keep_their_order():
    async def main():
        # trap_exit from birth: the exit signal may arrive before the process first runs
        pid = pyotp.spawn(trapping_sink, pyotp.self(), scheduler=1, trap_exit=True)
        for i in range(500):
            pyotp.send(pid, ("m", i))
        pyotp.exit(pid, "last")
        _, got = await pyotp.receive(("got", ANY), timeout=T)
        return got

    got = run2(main)
    assert got[:500] == [("m", i) for i in range(500)]
    assert got[500][0] == "EXIT" and got[500][2] == "last" and len(got) == 501


def test_terms_cross_schedulers_exactly_and_non_terms_are_refused_at_send():
    async def main():
        pid = pyotp.spawn(sink, 1, pyotp.self(), scheduler=1)
        with pytest.raises(pyotp.NotSerializable, match="set"):
            pyotp.send(pid, {1, 2})
        term = ((1, [2, (3,)]), {"k": (None, b"x")}, pyotp.self(), pyotp.make_ref())
        pyotp.send(pid, term)
        _, got = await pyotp.receive(("got", ANY), timeout=T)
        return got[0] == term and type(got[0][0]) is tuple

    assert run2(main)


def test_a_crash_on_another_scheduler_reaches_a_linked_trapping_process():
    async def main():
        pyotp.process_flag("trap_exit", True)
        pid = pyotp.spawn_link(crash_after_go, scheduler=1)
        pyotp.send(pid, "go")
        _, sender, reason = await pyotp.receive(("EXIT", ANY, ANY), timeout=T)
        return sender == pid, reason

    logging.disable(logging.CRITICAL)
    try:
        same, reason = run2(main)
    finally:
        logging.disable(logging.NOTSET)
    assert same and isinstance(reason, pyotp.Crash) and reason.type == "RuntimeError"


def test_an_exit_reason_that_is_no_term_still_reaches_links_and_monitors_elsewhere():
    """A dying process's EXIT and DOWN cannot be refused: a non-term reason crosses as a
    Crash of type NotSerializable, every watcher hears, and a plain exit/2 still refuses."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        pid = pyotp.spawn_link(exit_with_a_set_after_go, scheduler=1)
        ref = pyotp.monitor(pid)
        pyotp.send(pid, "go")
        exit_msg = await pyotp.receive(("EXIT", pid, ANY), timeout=T)
        down = await pyotp.receive(("DOWN", ref, "process", pid, ANY), timeout=T)
        with pytest.raises(pyotp.NotSerializable):
            pyotp.exit(pyotp.spawn(idle, scheduler=1), {3})
        return [(r.type, "{1, 2}" in r.message) for r in (exit_msg[2], down[4])]

    assert run2(main) == [("NotSerializable", True)] * 2


def test_an_exit_signal_kills_a_process_on_another_scheduler_and_its_monitor_fires():
    async def main():
        pid = pyotp.spawn(idle, scheduler=1)
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        down = await pyotp.receive(("DOWN", ref, "process", pid, ANY), timeout=T)
        return down[4], await pyotp.process_info(pid)

    assert run2(main) == ("killed", None)


def test_a_linked_process_on_another_scheduler_dies_with_its_partner():
    async def partner(parent):
        pyotp.send(parent, ("partner", pyotp.self()))
        await pyotp.receive(("never",))

    async def main():
        pid = pyotp.spawn(idle, scheduler=1)
        ref = pyotp.monitor(pid)

        async def links_then_dies():
            pyotp.link(pid)
            raise pyotp.Exit("together")

        pyotp.spawn(links_then_dies)
        return (await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T))[4]

    assert run2(main) == "together"


def test_monitor_of_a_dead_remote_pid_and_demonitor_work_across_schedulers():
    async def main():
        pid, ref = pyotp.spawn_monitor(idle, scheduler=1)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, "process", pid, "killed"), timeout=T)
        ref2 = pyotp.monitor(pid)
        noproc = await pyotp.receive(("DOWN", ref2, ANY, ANY, ANY), timeout=T)
        other = pyotp.spawn(idle, scheduler=1)
        ref3 = pyotp.monitor(other)
        pyotp.demonitor(ref3)
        pyotp.exit(other, "kill")
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("DOWN", ref3, ANY, ANY, ANY), timeout=0.3)
        return noproc[4]

    assert run2(main) == "noproc"


def test_a_name_registered_from_one_scheduler_is_seen_on_the_other_at_once():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        await pyotp.register("shared", pid)
        pyotp.spawn(whereis_reporter, pyotp.self(), "shared", scheduler=1)
        seen = await pyotp.receive(("seen", ANY), timeout=T)
        pyotp.send("shared", (pyotp.self(), "by name"))
        reply = await pyotp.receive(("by name", ANY), timeout=T)
        ref = pyotp.monitor("shared")
        pyotp.exit(pid, "kill")
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        await wait_for(lambda: pyotp.whereis("shared") is None)
        return seen[1] == pid, reply[0], down[3]

    assert run2(main) == (True, "by name", ("shared", "nonode@nohost"))


def test_registration_is_atomic_across_schedulers():
    async def main():
        me = pyotp.self()
        for i in range(6):
            pyotp.spawn(register_self, "contested", me, scheduler=i % 2)
        results = [await pyotp.receive((ANY, ANY), timeout=T) for _ in range(6)]
        winners = [pid for tag, pid in results if tag == "won"]
        return len(winners), pyotp.whereis("contested") == winners[0]

    assert run2(main) == (1, True)


def test_register_refuses_a_dead_remote_pid_and_a_second_name():
    async def main():
        pid = pyotp.spawn(idle, scheduler=1)
        await pyotp.register("first", pid)
        with pytest.raises(pyotp.BadArg, match="already has"):
            await pyotp.register("second", pid)
        dead, ref = pyotp.spawn_monitor(idle, scheduler=1)
        pyotp.exit(dead, "kill")
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        with pytest.raises(pyotp.BadArg, match="not a live"):
            await pyotp.register("third", dead)
        await pyotp.unregister("first")
        return pyotp.whereis("first")

    assert run2(main) is None


def test_process_info_and_processes_see_every_scheduler():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        pyotp.send(pid, (pyotp.self(), "ready?"))
        await pyotp.receive(("ready?", ANY), timeout=T)  # now parked in receive
        info = await pyotp.process_info(pid)
        all_pids = await pyotp.processes()
        return info["scheduler"], info["status"], pid in all_pids, pyotp.self() in all_pids

    assert run2(main) == (1, "waiting", True, True)


def test_cancel_timer_from_another_scheduler_cancels_and_returns_the_time_left():
    async def main():
        me = pyotp.self()
        tref = pyotp.send_after(10, me, "never")
        pyotp.spawn(cancel_twice_and_report, tref, me, scheduler=1)
        _, left, again = await pyotp.receive(("cancelled", ANY, ANY), timeout=T)
        # The cancel frame came before the report on the same stream, so the timer is gone
        # from this (its) scheduler already: cancelling here finds nothing.
        here = pyotp.cancel_timer(tref)
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive("never", timeout=0)
        return left, again, here

    left, again, here = run2(main)
    assert 0 < left <= 10 and again is None and here is None


def test_cancel_timer_from_another_scheduler_of_a_timer_that_fired_returns_none():
    async def main():
        pyotp.spawn(set_a_timer_that_fires_at_once, pyotp.self(), scheduler=1)
        _, tref = await pyotp.receive(("tref", ANY), timeout=T)
        await pyotp.receive("fired", timeout=T)
        return tref.scheduler, pyotp.cancel_timer(tref)

    assert run2(main) == (1, None)


def test_refs_made_on_different_schedulers_never_collide():
    async def main():
        pyotp.spawn(make_refs, pyotp.self(), 200, scheduler=1)
        theirs = await pyotp.receive(list, timeout=T)
        ours = [pyotp.make_ref() for _ in range(200)]
        return len(set(theirs) | set(ours))

    assert run2(main) == 400


def test_gen_server_call_to_a_server_on_another_scheduler():
    async def main():
        pid = await gen_server.start_link(Counter, 5, scheduler=1)
        a = await gen_server.call(pid, "next", timeout=T)
        b = await gen_server.call(pid, "next", timeout=T)
        their_os = await gen_server.call(pid, "pid", timeout=T)
        await gen_server.stop(pid)
        with pytest.raises(pyotp.CallExit):
            await gen_server.call(pid, "next", timeout=T)
        return a, b, their_os != os.getpid()

    assert run2(main) == (5, 6, True)


def test_selective_receive_of_a_burst_from_another_scheduler_keeps_order():
    # The receiver is parked waiting for ("b", _) when the burst arrives in one frame: the
    # first match wakes it, everything else stays queued in sending order.
    async def main():
        sender = pyotp.spawn(burst_on_go, pyotp.self(), scheduler=1)
        pyotp.send(sender, "go")
        first = await pyotp.receive(("b", ANY), timeout=T)
        rest = [await pyotp.receive(timeout=T) for _ in range(4)]
        return first, rest

    assert run2(main) == (("b", 2), [("a", 1), ("c", 3), ("b", 4), ("d", 5)])


def test_timers_still_fire_while_a_process_calls_another_scheduler_back_to_back():
    # Each reply may arrive while the caller polls, so the caller need not wait in the loop;
    # the loop must still turn now and then (at least every 2 ms of polling) for timers and
    # heartbeats to run. (Liveness only: a slow reply also lets the loop turn.)
    async def main():
        srv = await gen_server.start_link(Counter, 0, scheduler=1)
        pyotp.send_after(0.02, pyotp.self(), "tick")
        for _ in range(20_000):
            await gen_server.call(srv, "next", timeout=T)
            try:
                await pyotp.receive("tick", timeout=0)
                return True
            except pyotp.Timeout:
                pass
        return "no tick after 20,000 calls"

    assert run2(main) is True


def test_scheduler_busy_wait_is_configured_on_every_scheduler_and_zero_turns_it_off():
    async def main():
        from schedulers import get

        pyotp.spawn(report_busy_wait, pyotp.self(), scheduler=1)
        theirs = (await pyotp.receive(("spin", ANY), timeout=T))[1]
        srv = await gen_server.start_link(Counter, 0, scheduler=1)
        answers = [await gen_server.call(srv, "next", timeout=T) for _ in range(3)]
        return get().router.spin, theirs, answers

    config = {"kernel": {"scheduler_busy_wait_us": 0}}
    assert pyotp.run(main, schedulers=2, config=config) == (0.0, 0.0, [0, 1, 2])
    config = {"kernel": {"scheduler_busy_wait_us": 250}}
    assert pyotp.run(main, schedulers=2, config=config)[:2] == (0.00025, 0.00025)


def test_a_bad_busy_wait_setting_is_refused_by_name():
    async def main():
        return None

    with pytest.raises(pyotp.BadArg, match="scheduler_busy_wait_us"):
        pyotp.run(main, schedulers=2, config={"kernel": {"scheduler_busy_wait_us": -1}})
    with pytest.raises(pyotp.BadArg, match="max_message_size"):
        pyotp.run(main, config={"kernel": {"max_message_size": "big"}})
    assert pyotp.run(main) is None  # refused before booting: nothing left behind


def test_calls_across_schedulers_leave_no_monitor_behind():
    # A server's own reply drops its side of the call's monitor (no Demonitor frame); a
    # helper's reply cannot, so the caller's demonitor must still reach the server.
    async def main():
        srv = await gen_server.start_link(Delegating, None, scheduler=1)
        answers = set()
        for _ in range(20):
            answers.add(await gen_server.call(srv, "direct", timeout=T))
            answers.add(await gen_server.call(srv, "helper", timeout=T))
        mine = await pyotp.process_info(pyotp.self())
        theirs = await pyotp.process_info(srv)  # behind every Demonitor on the same stream
        return answers, mine["monitors"], theirs["monitored_by"]

    assert run2(main) == ({"direct", "helper"}, [], [])


def test_a_call_to_a_dead_process_on_another_scheduler_exits_noproc():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        ref = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")
        await pyotp.receive(("DOWN", ref, "process", pid, ANY), timeout=T)
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(pid, "hello", timeout=T)
        me = await pyotp.process_info(pyotp.self())
        return info.value.reason, me["monitors"]

    assert run2(main) == ("noproc", [])


def test_placement_near_and_auto_pick_live_schedulers():
    async def main():
        far = pyotp.spawn(idle, scheduler=1)
        near = pyotp.spawn(idle, near=far)
        auto = [pyotp.spawn(idle, placement="auto") for _ in range(8)]
        with pytest.raises(pyotp.BadArg, match=r"schedulers 0\.\.1"):
            pyotp.spawn(idle, scheduler=2)
        stats = await wait_for(lambda: len(pyotp.scheduler_statistics()) == 2
                               and pyotp.scheduler_statistics())
        return near.scheduler, {p.scheduler for p in auto}, [s.index for s in stats]

    near, auto, indices = run2(main)
    assert near == 1 and auto == {0, 1} and indices == [0, 1]


def test_spawn_on_another_scheduler_needs_an_importable_function():
    async def main():
        with pytest.raises(pyotp.BadArg, match="importable"):
            pyotp.spawn(lambda: None, scheduler=1)
        return True

    assert run2(main)


def test_a_long_step_is_logged_once_and_counted(caplog):
    async def main():
        pyotp.spawn(long_stepper, pyotp.self())
        await pyotp.receive("burnt", timeout=T)
        return pyotp.scheduler_statistics()[0].long_steps

    with caplog.at_level(logging.WARNING, logger="pyotp.scheduler"):
        steps = pyotp.run(main)
    records = [r for r in caplog.records if "long_schedule" in r.getMessage()]
    assert steps == 1 and len(records) == 1


def test_a_killed_scheduler_fires_noconnection_and_is_replaced_with_a_new_creation():
    async def main():
        pyotp.process_flag("trap_exit", True)
        linked = pyotp.spawn_link(echo, scheduler=1)
        monitored = pyotp.spawn(idle, scheduler=1)
        ref = pyotp.monitor(monitored)
        first_creation = linked.creation
        pyotp.send(linked, (pyotp.self(), "who"))
        _, victim = await pyotp.receive(("who", ANY), timeout=T)
        os.kill(victim, signal.SIGKILL)
        exit_msg = await pyotp.receive(("EXIT", linked, ANY), timeout=T)
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        await wait_for(lambda: any(
            s.index == 1 and s.creation == first_creation + 1
            for s in pyotp.scheduler_statistics()))
        fresh = pyotp.spawn(echo, scheduler=1)
        pyotp.send(fresh, (pyotp.self(), "again"))
        _, new_os = await pyotp.receive(("again", ANY), timeout=T)
        pyotp.send(linked, (pyotp.self(), "stale"))  # a stale pid never reaches anyone
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("stale", ANY), timeout=0.3)
        return exit_msg[2], down[4], fresh.creation - first_creation, new_os != victim

    logging.disable(logging.CRITICAL)
    try:
        assert run2(main) == ("noconnection", "noconnection", 1, True)
    finally:
        logging.disable(logging.NOTSET)


def test_auto_placement_runs_what_cannot_cross_on_the_calling_scheduler():
    """A lambda, a closure or arguments that are no terms cannot go to another scheduler:
    placement="auto" puts them here every time, rather than fail when the load says 1."""

    async def main():
        me = pyotp.self()
        pids = []
        for i in range(40):
            pids.append(pyotp.spawn(lambda i=i: pyotp.send(me, ("ran", i)), placement="auto"))
            pids.append(pyotp.spawn(pyotp.send, me, ("set", {i}), placement="auto"))
        got = sorted([(await pyotp.receive(ANY, timeout=T))[0] for _ in range(80)])
        crossing = [pyotp.spawn(echo, placement="auto").scheduler for _ in range(40)]
        return got == ["ran"] * 40 + ["set"] * 40, {p.scheduler for p in pids}, set(crossing)

    ran, here, crossing = run2(main)
    assert ran and here == {0}
    assert crossing == {0, 1}  # what can cross still goes where the load says


def report_names(parent):
    """Tell `parent` what this scheduler's copies of the global_ and pg tables say."""
    pyotp.send(parent, ("names", global_.whereis_name("before"),
                        global_.whereis_name("after"), pg.get_members("g")))


def test_global_and_pg_serve_a_scheduler_that_replaced_a_killed_one():
    """Their copies on a replaced scheduler come back, and no change waits on the lost one."""

    async def main():
        me = pyotp.self()
        assert await global_.register_name("before", me)
        probe = pyotp.spawn(echo, scheduler=1)
        pyotp.send(probe, (me, "who"))
        _, victim = await pyotp.receive(("who", ANY), timeout=T)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: any(s.index == 1 and s.creation == probe.creation + 1
                                   for s in pyotp.scheduler_statistics()))
        other = pyotp.spawn(idle)
        registered = await asyncio.wait_for(global_.register_name("after", other), T)
        await asyncio.wait_for(pg.join("g", me), T)
        want = ("names", me, other, [me])
        end = time.monotonic() + T
        while True:  # the copies on the new scheduler 1 catch up
            pyotp.spawn(report_names, me, scheduler=1)
            seen = await pyotp.receive(("names", ANY, ANY, ANY), timeout=T)
            if seen == want or time.monotonic() > end:
                return registered, seen == want
            await asyncio.sleep(0.05)

    logging.disable(logging.CRITICAL)
    try:
        assert run2(main) == (True, True)
    finally:
        logging.disable(logging.NOTSET)


def test_a_supervisor_restarts_a_child_lost_with_its_scheduler():
    async def main():
        sup = await supervisor.start_link(OneWorkerSup, 1)
        first_os = await gen_server.call("counter", "pid", timeout=T)
        os.kill(first_os, signal.SIGKILL)

        async def answers_again():
            end = time.monotonic() + T
            while time.monotonic() < end:
                try:
                    return await gen_server.call("counter", "pid", timeout=1)
                except (pyotp.CallExit, pyotp.CallTimeout):
                    await asyncio.sleep(0.05)
            raise AssertionError("the child was not restarted")

        second_os = await answers_again()
        counts = await supervisor.count_children(sup)
        return second_os != first_os, counts["active"]

    logging.disable(logging.CRITICAL)
    try:
        assert run2(main) == (True, 1)
    finally:
        logging.disable(logging.NOTSET)


def test_a_malformed_frame_is_dropped_and_the_scheduler_lives_on():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        endpoint = f"ipc://{get_pool_dir()}/s1"
        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect(endpoint)
        for junk in (b"", b"\xff\x00garbage", b"\x91\x93\x00\x01", b"\x92" * 5):
            sock.send(junk)
        sock.close()
        pyotp.send(pid, (pyotp.self(), "still here"))
        return (await pyotp.receive(("still here", ANY), timeout=T))[0]

    assert run2(main) == "still here"


def get_pool_dir():
    from schedulers import get

    return get().router.mesh.endpoint.rsplit("/", 1)[0].removeprefix("ipc://")


NODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    import pyotp

    async def idle():
        await pyotp.receive(("never",))

    async def main():
        pyotp.spawn(idle, scheduler=1)
        await asyncio.sleep(0.3)
        print("ready", flush=True)
        await pyotp.receive(("never",))

    if __name__ == "__main__":
        try:
            pyotp.run(main, schedulers=2)
        except KeyboardInterrupt:  # Ctrl-C: a clean stop, then this (not a crash)
            print("interrupted", flush=True)
            sys.exit(130)
    """
)


def _start_node(tmp_path):
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.readline().strip() == "ready"
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert children
    return proc, children


def _wait_gone(pids, deadline=T):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return False


def test_worker_schedulers_die_with_a_sigkilled_node(tmp_path):
    proc, children = _start_node(tmp_path)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert _wait_gone(children)


def test_ctrl_c_stops_a_node_and_every_scheduler(tmp_path):
    proc, children = _start_node(tmp_path)
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=T)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert _wait_gone(children)
    assert out.strip() == "interrupted" and proc.returncode == 130  # run raised it


def test_spawn_arguments_over_max_message_size_are_refused_at_spawn():
    """Else the Spawn frame would be dropped in transit and the pid born lost, unseen."""

    async def main():
        with pytest.raises(pyotp.BadArg, match="max_message_size"):
            pyotp.spawn(echo, b"q" * 5000, scheduler=1)
        pid = pyotp.spawn(echo, scheduler=1)  # still fine afterwards
        pyotp.send(pid, (pyotp.self(), b"ok"))
        return (await pyotp.receive((bytes, ANY), timeout=T))[0]

    got = pyotp.run(main, schedulers=2, config={"kernel": {"max_message_size": 2000}})
    assert got == b"ok"


def test_a_message_over_max_message_size_is_refused_at_send_and_harms_no_one():
    async def main():
        pid = pyotp.spawn(echo, scheduler=1)
        with pytest.raises(pyotp.BadArg, match="max_message_size"):
            pyotp.send(pid, (pyotp.self(), b"x" * 5000))
        pyotp.send(pid, (pyotp.self(), b"y" * 100))
        return (await pyotp.receive((bytes, ANY), timeout=T))[0]

    got = pyotp.run(main, schedulers=2, config={"kernel": {"max_message_size": 2000}})
    assert got == b"y" * 100


def test_a_script_without_a_main_guard_gets_a_hint_when_its_function_is_spawned_elsewhere(
    tmp_path,
):
    """The other scheduler loads the script to find the function; an unguarded pyotp.run
    there fails, and the spawned process's crash reason says why and what to do."""
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent("""
        import pyotp

        async def echo(parent):
            pyotp.send(parent, "hi")

        async def main():
            pid, ref = pyotp.spawn(echo, pyotp.self(), scheduler=1, monitor=True)
            return str(await pyotp.receive(pyotp.ANY, timeout=10))

        print(pyotp.run(main, schedulers=2))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert "DOWN" in done.stdout
    assert 'Guard its entry point with `if __name__ == "__main__":`' in done.stdout


def test_process_info_names_a_main_script_function_the_same_on_every_scheduler(tmp_path):
    """Another scheduler loads the main script as "__mp_main__"; process_info still says
    "__main__", as for the same function on scheduler 0."""
    script = tmp_path / "names.py"
    script.write_text(textwrap.dedent("""
        import pyotp

        async def idle():
            await pyotp.receive("never")

        async def main():
            pids = [pyotp.spawn(idle, scheduler=k) for k in (0, 1)]
            return [(await pyotp.process_info(p))["current_function"] for p in pids]

        if __name__ == "__main__":
            print(pyotp.run(main, schedulers=2))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr([("__main__", "idle"), ("__main__", "idle")])
