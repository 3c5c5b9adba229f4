"""Tests of pyotp.gen_statem, porting the main cases of OTP's gen_statem_SUITE."""

from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import gen_statem

WAIT = 5.0  # generous deadline for something that must happen


# --------------------------------------------------------------------------- helpers


async def flush() -> list:
    out = []
    while True:
        try:
            out.append(await pyotp.receive(timeout=0))
        except pyotp.Timeout:
            return out


async def wait_down(pid: pyotp.Pid) -> object:
    ref = pyotp.monitor(pid)
    msg = await pyotp.receive(("DOWN", ref, "process", pyotp.ANY, pyotp.ANY), timeout=WAIT)
    return msg[4]


async def sys_request(pid: pyotp.Pid, req: object) -> object:
    """Send a raw system request, as pyotp.sys_ does, and wait for the reply."""
    ref = pyotp.monitor(pid)
    pyotp.send(pid, ("$system", (pyotp.self(), ref), req))
    msg = await pyotp.receive((ref, pyotp.ANY), timeout=WAIT)
    pyotp.demonitor(ref, flush=True)
    return msg[1]


def run(main):
    return pyotp.run(main)


# --------------------------------------------------------------------------- the suite's machine
# The OTP suite's machine: idle --connect--> wfor_conf --confirm--> connected; a ping while
# waiting for the confirmation is postponed and answered once connected.


class Phone(gen_statem.GenStatem):
    callback_mode = "state_functions"

    def init(self, arg):
        if arg == "ignore":
            return "ignore"
        if arg == "stop":
            return ("stop", "stopped")
        if arg == "crash":
            raise ValueError("init blew up")
        if arg == "sleep":
            return self._sleepy()
        return ("ok", "idle", {"arg": arg})

    async def _sleepy(self):
        await asyncio.sleep(1.0)
        return ("ok", "idle", None)

    def idle(self, etype, content, data):
        return self._common(etype, content, data) or self._idle(etype, content, data)

    def _idle(self, etype, content, data):
        if etype == "cast" and type(content) is tuple and content[0] == "connect":
            pyotp.send(content[1], "accept")
            return ("next_state", "wfor_conf", data)
        if etype[0] == "call" and content == "connect":
            return ("next_state", "wfor_conf", data, [("reply", etype[1], "accept")])
        if etype == "cast" and content == "next_event":
            return (
                "next_state",
                "next_events",
                data,
                [("next_event", "internal", m) for m in ("a", "b", "c")],
            )
        return "keep_state_and_data"

    def wfor_conf(self, etype, content, data):
        common = self._common(etype, content, data)
        if common:
            return common
        if content == "confirm":
            if etype[0] == "call":
                return ("next_state", "connected", data, ("reply", etype[1], "yes"))
            return ("next_state", "connected", data)
        return ("keep_state_and_data", "postpone")

    def connected(self, etype, content, data):
        common = self._common(etype, content, data)
        if common:
            return common
        if etype == "cast" and type(content) is tuple and content[0] == "ping":
            pyotp.send(content[1], ("pong", content[2]))
            return "keep_state_and_data"
        if etype == "cast" and type(content) is tuple and content[0] == "msg":
            pyotp.send(content[1], ("ack", content[2]))
            return "keep_state_and_data"
        if content == "disconnect":
            if etype[0] == "call":
                return ("next_state", "idle", data, [("reply", etype[1], "yes")])
            return ("next_state", "idle", data)
        return "keep_state_and_data"

    def next_events(self, etype, content, data):
        if etype == "internal":
            got = data.setdefault("internal", [])
            got.append(content)
            return ("keep_state", data)
        return self._common(etype, content, data) or "keep_state_and_data"

    def _common(self, etype, content, data):
        if etype == "cast" and type(content) is tuple and content[0] == "alive?":
            pyotp.send(content[1], "yes")
            return "keep_state_and_data"
        if type(etype) is tuple and etype[0] == "call":
            frm = etype[1]
            if content == "get_data":
                return ("keep_state_and_data", [("reply", frm, data)])
            if type(content) is tuple and content[0] == "stop":
                return ("stop_and_reply", content[1], [("reply", frm, "stopped")])
            if type(content) is tuple and content[0] == "delayed_answer":
                pyotp.send_after(content[1], pyotp.self(), ("$answer", frm))
                return "keep_state_and_data"
            if content == "badreturn":
                return "badreturn"
        if etype == "info" and type(content) is tuple and content[0] == "$answer":
            gen_statem.reply(content[1], "delayed")
            return "keep_state_and_data"
        return None


class PhoneHandleEvent(Phone):
    """The same machine in handle_event_function mode."""

    callback_mode = "handle_event_function"

    def handle_event(self, etype, content, state, data):
        return getattr(Phone, state)(self, etype, content, data)


async def check_state(stm, expected):
    state, _data = await sys_request(stm, "get_state")
    assert state == expected, (state, expected)


async def do_func_test(stm):
    """The suite's do_func_test: connect (with a postponed ping), messages, disconnect."""
    me = pyotp.self()
    gen_statem.cast(stm, ("alive?", me))
    assert await pyotp.receive("yes", timeout=WAIT) == "yes"
    await check_state(stm, "idle")
    gen_statem.cast(stm, ("connect", me))
    await pyotp.receive("accept", timeout=WAIT)
    await check_state(stm, "wfor_conf")
    tag = pyotp.make_ref()
    gen_statem.cast(stm, ("ping", me, tag))  # postponed until connected
    gen_statem.cast(stm, "confirm")
    await pyotp.receive(("pong", tag), timeout=WAIT)
    await check_state(stm, "connected")
    for i in range(3):
        gen_statem.cast(stm, ("msg", me, i))
        await pyotp.receive(("ack", i), timeout=WAIT)
    gen_statem.cast(stm, "disconnect")
    await check_state(stm, "idle")


async def do_sync_func_test(stm):
    assert await gen_statem.call(stm, "connect", timeout=WAIT) == "accept"
    assert await gen_statem.call(stm, "confirm", timeout=WAIT) == "yes"
    await check_state(stm, "connected")
    assert await gen_statem.call(stm, "disconnect", timeout=WAIT) == "yes"
    await check_state(stm, "idle")


MODES = pytest.mark.parametrize("cls", [Phone, PhoneHandleEvent], ids=["state_fn", "handle_ev"])


# --------------------------------------------------------------------------- start


@MODES
def test_a_linked_machine_runs_through_its_states_and_stops(cls):
    """Ports gen_statem_SUITE:start1 and start6 (both callback modes)."""

    async def main():
        pid = await gen_statem.start_link(cls, [])
        await do_func_test(pid)
        await do_sync_func_test(pid)
        await gen_statem.stop(pid)
        assert await pyotp.process_info(pid) is None
        assert await flush() == []

    run(main)


@MODES
def test_an_unlinked_machine_stopped_with_shutdown_does_not_hurt_the_caller(cls):
    """Ports gen_statem_SUITE:start2."""

    async def main():
        pid = await gen_statem.start(cls, [])
        await do_func_test(pid)
        ref = pyotp.monitor(pid)
        assert await gen_statem.call(pid, ("stop", "shutdown"), timeout=WAIT) == "stopped"
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert down[4] == "shutdown"
        assert await flush() == []

    run(main)


@MODES
def test_start_with_a_timeout_fails_when_init_is_too_slow(cls):
    """Ports gen_statem_SUITE:start3."""

    async def main():
        pid = await gen_statem.start(cls, [], timeout=5)
        await do_func_test(pid)
        await gen_statem.stop(pid)
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start(cls, "sleep", timeout=0.05)
        assert info.value.reason == "timeout"
        assert await flush() == []

    run(main)


@MODES
def test_start_returns_none_when_init_ignores(cls):
    """Ports gen_statem_SUITE:start4."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        assert await gen_statem.start(cls, "ignore") is None
        assert await gen_statem.start_link(cls, "ignore") is None
        assert await flush() == []

    run(main)


@MODES
def test_start_raises_start_error_when_init_stops(cls):
    """Ports gen_statem_SUITE:start5."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start(cls, "stop")
        assert info.value.reason == "stopped"
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start_link(cls, "stop")
        assert info.value.reason == "stopped"
        assert await flush() == []

    run(main)


def test_start_raises_start_error_with_the_crash_when_init_raises():
    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start_link(Phone, "crash")
        assert isinstance(info.value.reason, pyotp.Crash)
        assert info.value.reason.type == "ValueError"

    run(main)


@MODES
def test_a_registered_machine_answers_by_name_and_cannot_start_twice(cls):
    """Ports gen_statem_SUITE:start8 and start9."""

    async def main():
        pid = await gen_statem.start_link(cls, [], name="my_stm")
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start(cls, [], name="my_stm")
        assert info.value.reason == ("already_started", pid)
        await do_func_test("my_stm")
        await do_sync_func_test("my_stm")
        await gen_statem.stop("my_stm")
        assert pyotp.whereis("my_stm") is None
        # start11: the name is free again once the machine stopped
        pid2 = await gen_statem.start_link(cls, [], name="my_stm")
        assert pid2 != pid
        await gen_statem.stop("my_stm")

    run(main)


def test_start_rejects_a_class_with_a_bad_callback_mode():
    class Bad(gen_statem.GenStatem):
        callback_mode = ["state_enter"]  # noqa: RUF012 - the API\'s list form

        def init(self, args):
            return ("ok", "a", None)

    class Method(gen_statem.GenStatem):
        def callback_mode(self):  # a method, as Erlang's callback_mode/0: not the API's form
            return "state_functions"

        def init(self, args):
            return ("ok", "a", None)

    async def main():
        with pytest.raises(pyotp.BadArg):
            await gen_statem.start(Bad, None)
        with pytest.raises(pyotp.BadArg):
            await gen_statem.start("not a class", None)
        with pytest.raises(pyotp.BadArg, match="callback_mode"):
            await gen_statem.start(Method, None)

    run(main)


# --------------------------------------------------------------------------- stop


def test_stop_ends_the_machine_and_a_second_stop_says_noproc():
    """Ports gen_statem_SUITE:stop1."""

    async def main():
        pid = await gen_statem.start(Phone, [])
        await gen_statem.stop(pid)
        assert await pyotp.process_info(pid) is None
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.stop(pid)
        assert info.value.reason == "noproc"

    run(main)


def test_stop_with_another_reason_ends_the_machine_with_it():
    """Ports gen_statem_SUITE:stop2 and stop3 (an invalid timeout leaves it alive)."""

    async def main():
        pid = await gen_statem.start(Phone, [])
        with pytest.raises(pyotp.BadArg):
            await gen_statem.stop(pid, "other_reason", "invalid_timeout")
        assert await pyotp.process_info(pid) is not None
        ref = pyotp.monitor(pid)
        await gen_statem.stop(pid, "other_reason", None)
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert down[4] == "other_reason"

    run(main)


def test_stop_by_registered_name_and_by_name_and_node():
    """Ports gen_statem_SUITE:stop4 and stop5."""

    async def main():
        pid = await gen_statem.start(Phone, [], name="to_stop")
        await gen_statem.stop("to_stop")
        assert await pyotp.process_info(pid) is None
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.stop("to_stop")
        assert info.value.reason == "noproc"
        pid = await gen_statem.start(Phone, [], name="to_stop")
        await gen_statem.stop(("to_stop", pyotp.node()))
        assert await pyotp.process_info(pid) is None
        with pytest.raises(pyotp.CallExit):
            await gen_statem.stop(("to_stop", pyotp.node()))

    run(main)


# --------------------------------------------------------------------------- abnormal


def test_a_call_that_times_out_raises_and_its_late_reply_is_dropped():
    """Ports gen_statem_SUITE:abnormal1."""

    async def main():
        await gen_statem.start(Phone, [], name="abnormal1")
        assert await gen_statem.call("abnormal1", ("delayed_answer", 0.001), 1) == "delayed"
        with pytest.raises(pyotp.CallTimeout):
            await gen_statem.call("abnormal1", ("delayed_answer", 0.2), 0.01)
        # the late reply arrives at the machine's pace; it must never reach us
        assert await gen_statem.call("abnormal1", ("delayed_answer", 0.3), WAIT) == "delayed"
        await gen_statem.stop("abnormal1")
        assert await flush() == []

    run(main)


def test_a_bad_return_value_crashes_the_machine():
    """Ports gen_statem_SUITE:abnormal2."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        pid = await gen_statem.start_link(Phone, [])
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.call(pid, "badreturn", timeout=WAIT)
        reason = info.value.reason
        assert reason == ("bad_return_from_state_function", "badreturn")
        msg = await pyotp.receive(("EXIT", pid, pyotp.ANY), timeout=WAIT)
        assert msg[2] == reason
        assert await flush() == []

    run(main)


def test_a_call_to_a_dead_machine_raises_noproc():
    """Ports gen_statem_SUITE:shutdown."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        pid = await gen_statem.start_link(Phone, [])
        await do_func_test(pid)
        await do_sync_func_test(pid)
        reason = ("shutdown", "reason")
        assert await gen_statem.call(pid, ("stop", reason), timeout=WAIT) == "stopped"
        await pyotp.receive(("EXIT", pid, reason), timeout=WAIT)
        pyotp.process_flag("trap_exit", False)
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.call(pid, "hej", timeout=WAIT)
        assert info.value.reason == "noproc"
        assert await flush() == []

    run(main)


# --------------------------------------------------------------------------- stop_and_reply, order


class MapMachine(gen_statem.GenStatem):
    """The suite's map_statem: init and each state are functions given as the init arg."""

    callback_mode = "handle_event_function"

    def init(self, machine):
        self.machine = machine
        return machine["init"]()

    def handle_event(self, etype, content, state, data):
        return self.machine[state](etype, content, data)


def test_stop_and_reply_sends_every_reply_before_exiting():
    """Ports gen_statem_SUITE:stop_and_reply."""

    def start(etype, content, data):
        assert etype == "cast" and content[0] == "echo"
        return ("next_state", "wait", ("reply", content[1], content[2]))

    def wait(etype, content, r1):
        _, reason, frm, rep = content
        return ("stop_and_reply", reason, [r1, ("reply", frm, rep)])

    machine = {"init": lambda: ("ok", "start", None), "start": start, "wait": wait}

    async def main():
        pyotp.process_flag("trap_exit", True)
        stm = await gen_statem.start_link(MapMachine, machine)
        me = pyotp.self()
        # A reply reaches a caller holding a monitor whose ref is the tag (a call's alias).
        tag1, tag2 = pyotp.monitor(stm), pyotp.monitor(stm)
        gen_statem.cast(stm, ("echo", (me, tag1), "reply1"))
        gen_statem.cast(stm, ("stop_and_reply", "reason", (me, tag2), "reply2"))
        await pyotp.receive(("EXIT", stm, pyotp.ANY), timeout=WAIT)
        got = [m for m in await flush() if m[0] != "DOWN"]
        assert got == [(tag1, "reply1"), (tag2, "reply2")]
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.call(stm, "hej", timeout=WAIT)
        assert info.value.reason == "noproc"
        assert await flush() == []

    run(main)


def test_stop_and_reply_answers_pending_calls_and_the_current_one():
    async def main():
        me = pyotp.self()

        def start(etype, content, data):
            if content == "hold":
                pyotp.send(me, "holding")
                return ("keep_state", etype[1])
            return ("stop_and_reply", "normal", [("reply", data, "bye"), ("reply", etype[1], 2)])

        machine = {"init": lambda: ("ok", "start", None), "start": start}
        stm = await gen_statem.start(MapMachine, machine)
        ref = pyotp.monitor(stm)

        async def first_caller():
            pyotp.send(me, ("first", await gen_statem.call(stm, "hold", timeout=WAIT)))

        pyotp.spawn(first_caller)
        await pyotp.receive("holding", timeout=WAIT)
        assert await gen_statem.call(stm, "go", timeout=WAIT) == 2
        assert await pyotp.receive(("first", pyotp.ANY), timeout=WAIT) == ("first", "bye")
        down = await pyotp.receive(("DOWN", ref, "process", stm, pyotp.ANY), timeout=WAIT)
        assert down[4] == "normal"

    run(main)


def test_events_are_handled_in_order_next_event_postpone_and_zero_timeout():
    """Ports gen_statem_SUITE:event_order."""

    def start(etype, content, data):
        if etype == "cast":
            return ("keep_state_and_data", "postpone")  # handled in buffer
        frm = etype[1]
        _, pid, (tag3, tag4, tag5) = content
        return (
            "next_state",
            "buffer",
            [],
            [
                ("next_event", "internal", ("reply", (pid, tag3), "ok3")),
                ("next_event", "internal", ("reply", (pid, tag4), "ok4")),
                # cancelled: next_event and postponed events are queued
                ("timeout", 0, ("reply", (pid, tag5), "ok5")),
                ("reply", frm, "ok"),
            ],
        )

    def buffer(etype, content, replies):
        if etype in ("internal", "timeout", "cast"):
            return ("keep_state", [content, *replies])
        frm = etype[1]
        return (
            "next_state",
            "stop",
            None,
            [*reversed(replies), ("reply", frm, "ok"), ("next_event", "internal", content)],
        )

    def stop(etype, content, data):
        assert etype == "internal"
        return content

    machine = {
        "init": lambda: ("ok", "start", None),
        "start": start,
        "buffer": buffer,
        "stop": stop,
    }

    async def main():
        pyotp.process_flag("trap_exit", True)
        stm = await gen_statem.start_link(MapMachine, machine)
        me = pyotp.self()
        seen = []

        # The machine replies with ("reply", (me, tag), x) actions: collect the raw messages.
        # Raw tags need a monitor alias to be delivered, so use monitors as tags.
        tags = [pyotp.monitor(stm) for _ in range(5)]
        gen_statem.cast(stm, ("reply", (me, tags[0]), "ok1"))
        gen_statem.cast(stm, ("reply", (me, tags[1]), "ok2"))
        assert await gen_statem.call(stm, ("buffer", me, tags[2:]), timeout=WAIT) == "ok"
        assert await gen_statem.call(stm, ("stop", "reason"), timeout=WAIT) == "ok"
        await pyotp.receive(("EXIT", stm, "reason"), timeout=WAIT)
        for m in await flush():
            if type(m) is tuple and len(m) == 2 and m[0] in tags:
                seen.append((tags.index(m[0]), m[1]))
        # ok3, ok4 (inserted) come before ok1, ok2 (postponed, retried); ok5 never fires
        assert seen == [(2, "ok3"), (3, "ok4"), (0, "ok1"), (1, "ok2")]

    run(main)


def test_next_events_are_handled_first_in_action_order():
    """Ports gen_statem_SUITE:next_events."""

    async def main():
        pid = await gen_statem.start(Phone, [])
        gen_statem.cast(pid, "next_event")
        state, data = await sys_request(pid, "get_state")
        assert state == "next_events"
        assert data["internal"] == ["a", "b", "c"]
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- state_enter


class Enter(gen_statem.GenStatem):
    """Records every callback in data['log']; the test drives it with casts."""

    callback_mode = ["handle_event_function", "state_enter"]  # noqa: RUF012 - the API\'s list form

    def init(self, args):
        return ("ok", "a", {"log": [], "repeats": 0})

    def handle_event(self, etype, content, state, data):
        data["log"].append((etype, content, state))
        if etype == "enter":
            if state == "r" and data["repeats"] < 2:
                data["repeats"] += 1
                return ("repeat_state", data)
            if state == "bad_next":
                return ("next_state", "a", data)
            if state == "bad_postpone":
                return ("keep_state", data, ["postpone"])
            if state == "bad_next_event":
                return ("keep_state", data, [("next_event", "internal", 1)])
            if state == "bad_return":
                return "bogus"
            if state == "bad_action":
                return ("keep_state", data, ["bogus"])
            if state == "no_postpone":
                return ("keep_state", data, [("postpone", False), ("state_timeout", 0, "ok")])
            if state == "timed":
                return ("keep_state", data, [("state_timeout", 0, "from_enter")])
            return ("keep_state", data)
        if etype == "cast":
            if content == "keep":
                return ("keep_state", data)
            if content == "repeat":
                return ("repeat_state", data)
            return ("next_state", content, data)
        if etype[0] == "call":
            return ("keep_state_and_data", ("reply", etype[1], data["log"]))
        return ("keep_state", data)


def test_state_enter_calls_run_on_start_on_change_and_on_repeat_only():
    """Ports gen_statem_SUITE:enter (state enter calls)."""

    async def main():
        pid = await gen_statem.start(Enter, None)
        gen_statem.cast(pid, "keep")
        gen_statem.cast(pid, "b")
        gen_statem.cast(pid, "repeat")
        gen_statem.cast(pid, "b")  # same state: no enter call
        log = await gen_statem.call(pid, "log", timeout=WAIT)
        assert log[:6] == [
            ("enter", "a", "a"),
            ("cast", "keep", "a"),
            ("cast", "b", "a"),
            ("enter", "a", "b"),
            ("cast", "repeat", "b"),
            ("enter", "b", "b"),
        ]
        assert log[6] == ("cast", "b", "b")
        await gen_statem.stop(pid)

    run(main)


def test_repeat_state_from_an_enter_call_repeats_the_enter_call():
    async def main():
        pid = await gen_statem.start(Enter, None)
        gen_statem.cast(pid, "r")
        log = await gen_statem.call(pid, "log", timeout=WAIT)
        enters = [e for e in log if e[0] == "enter" and e[2] == "r"]
        assert enters == [("enter", "a", "r")] * 3
        await gen_statem.stop(pid)

    run(main)


def test_actions_of_an_enter_call_take_effect():
    async def main():
        pid = await gen_statem.start(Enter, None)
        gen_statem.cast(pid, "timed")
        log = await gen_statem.call(pid, "log", timeout=WAIT)
        assert log[-2] == ("state_timeout", "from_enter", "timed")
        await gen_statem.stop(pid)

    run(main)


@pytest.mark.parametrize(
    ("state", "what"),
    [
        ("bad_next", "bad_state_enter_return_from_state_function"),
        ("bad_postpone", "bad_state_enter_action_from_state_function"),
        ("bad_next_event", "bad_state_enter_action_from_state_function"),
        # any other bad return or action is named as from any state callback (OTP's terms)
        ("bad_return", "bad_return_from_state_function"),
        ("bad_action", "bad_action_from_state_function"),
    ],
)
def test_an_enter_call_may_not_change_state_postpone_or_insert_events(state, what):
    async def main():
        pid = await gen_statem.start(Enter, None)
        ref = pyotp.monitor(pid)
        gen_statem.cast(pid, state)
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert down[4][0] == what

    run(main)


def test_an_enter_call_may_say_postpone_false():
    async def main():
        pid = await gen_statem.start(Enter, None)
        gen_statem.cast(pid, "no_postpone")
        log = await gen_statem.call(pid, "log", timeout=WAIT)
        assert log[-3:-1] == [("enter", "a", "no_postpone"), ("state_timeout", "ok", "no_postpone")]
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- postpone


class Gate(gen_statem.GenStatem):
    """closed postpones every cast; 'open' opens it; open echoes casts to the owner."""

    callback_mode = "state_functions"

    def init(self, owner):
        return ("ok", "closed", owner)

    def closed(self, etype, content, owner):
        if etype[0] == "call":
            if content == "open":
                return ("next_state", "open", owner, ("reply", etype[1], "ok"))
            if content == "repeat":
                return ("repeat_state", owner, ("reply", etype[1], "ok"))
            return ("keep_state_and_data", ("reply", etype[1], "closed"))
        return ("keep_state_and_data", "postpone")

    def open(self, etype, content, owner):
        if etype[0] == "call":
            if content == "close":
                return ("next_state", "closed", owner, ("reply", etype[1], "ok"))
            return ("keep_state_and_data", ("reply", etype[1], "open"))
        pyotp.send(owner, ("got", content))
        return "keep_state_and_data"


def test_postponed_events_are_retried_in_order_after_a_state_change():
    """Ports the postpone part of gen_statem_SUITE:event_order / do_func_test."""

    async def main():
        pid = await gen_statem.start(Gate, pyotp.self())
        for i in range(5):
            gen_statem.cast(pid, i)
        assert await gen_statem.call(pid, "keep", timeout=WAIT) == "closed"
        assert await gen_statem.call(pid, "repeat", timeout=WAIT) == "ok"  # not a change
        assert await flush() == []
        assert await gen_statem.call(pid, "open", timeout=WAIT) == "ok"
        got = [await pyotp.receive(("got", pyotp.ANY), timeout=WAIT) for _ in range(5)]
        assert got == [("got", i) for i in range(5)]
        gen_statem.cast(pid, "later")
        assert await pyotp.receive(("got", "later"), timeout=WAIT)
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- timeouts


class Timers(gen_statem.GenStatem):
    """Sets whatever timeout actions it is cast; reports every timeout event to its owner."""

    callback_mode = "handle_event_function"

    def init(self, owner):
        return ("ok", "s0", owner)

    def handle_event(self, etype, content, state, owner):
        if etype == "cast":
            if type(content) is tuple and content[0] == "goto":
                return ("next_state", content[1], owner, content[2])
            if type(content) is tuple and content[0] == "actions":
                return ("keep_state_and_data", content[1])
            return "keep_state_and_data"
        if etype[0] == "call":
            return ("keep_state_and_data", ("reply", etype[1], state))
        if etype == "info":
            pyotp.send(owner, ("info", content))
            return "keep_state_and_data"
        pyotp.send(owner, (etype, content, state))
        return "keep_state_and_data"


def test_a_state_timeout_fires_unless_the_state_changes():
    """Ports gen_statem_SUITE:state_timeout."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        gen_statem.cast(pid, ("goto", "s1", ("state_timeout", 0.02, "t1")))
        gen_statem.cast(pid, "other event")  # does not cancel a state timeout
        assert await pyotp.receive(timeout=WAIT) == ("state_timeout", "t1", "s1")
        # cancelled by a state change
        gen_statem.cast(pid, ("goto", "s2", ("state_timeout", 0.05, "t2")))
        gen_statem.cast(pid, ("goto", "s3", []))
        # restarted, then cancelled with None and "infinity"
        gen_statem.cast(pid, ("actions", ("state_timeout", 0.05, "t3")))
        gen_statem.cast(pid, ("actions", ("state_timeout", None, "x")))
        gen_statem.cast(pid, ("actions", ("state_timeout", 0.05, "t4")))
        gen_statem.cast(pid, ("actions", ("state_timeout", "infinity", "x")))
        # a state change to the same state is not a change: this one fires
        gen_statem.cast(pid, ("actions", ("state_timeout", 0.1, "t5")))
        gen_statem.cast(pid, ("goto", "s3", []))
        assert await pyotp.receive(timeout=WAIT) == ("state_timeout", "t5", "s3")
        assert await flush() == []
        await gen_statem.stop(pid)

    run(main)


def test_an_event_timeout_fires_when_idle_and_any_event_cancels_it():
    """Ports gen_statem_SUITE:event_timeout (timeout action)."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        gen_statem.cast(pid, ("actions", ("timeout", 0.02, "idle")))
        assert await pyotp.receive(timeout=WAIT) == ("timeout", "idle", "s0")
        gen_statem.cast(pid, ("actions", [("timeout", 0.2, "never")]))
        pyotp.send(pid, "an info event cancels it")
        assert await pyotp.receive(timeout=WAIT) == ("info", "an info event cancels it")
        gen_statem.cast(pid, ("actions", ("timeout", 0.05, "last")))
        assert await pyotp.receive(timeout=WAIT) == ("timeout", "last", "s0")
        assert await flush() == []
        await gen_statem.stop(pid)

    run(main)


def test_a_zero_time_timeout_event_cancels_a_running_event_timeout():
    """A queued timeout event is an event too: it cancels the event timeout (as in OTP)."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        gen_statem.cast(pid, ("actions", [("timeout", 0.05, "never"), (("timeout", "g"), 0, "g0")]))
        assert await pyotp.receive(timeout=WAIT) == (("timeout", "g"), "g0", "s0")
        # "update" of a timer that is not running is a zero-time timeout: the same
        update = ("state_timeout", "update", "u")
        gen_statem.cast(pid, ("actions", [("timeout", 0.05, "never"), update]))
        assert await pyotp.receive(timeout=WAIT) == ("state_timeout", "u", "s0")
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(timeout=0.15)
        await gen_statem.stop(pid)

    run(main)


def test_generic_timeouts_are_named_and_survive_events_and_state_changes():
    """Ports gen_statem_SUITE:generic_timers."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        gen_statem.cast(
            pid,
            (
                "actions",
                [
                    (("timeout", "a"), 0.05, "ta"),
                    (("timeout", "b"), 0.03, "tb"),
                    (("timeout", "c"), 0.02, "tc"),
                ],
            ),
        )
        gen_statem.cast(pid, ("goto", "s1", []))
        gen_statem.cast(pid, ("actions", (("timeout", "c"), "infinity", None)))  # cancel c
        gen_statem.cast(pid, "an event")
        first = await pyotp.receive(timeout=WAIT)
        second = await pyotp.receive(timeout=WAIT)
        assert first == (("timeout", "b"), "tb", "s1")
        assert second == (("timeout", "a"), "ta", "s1")
        # restarting a named timer replaces it
        gen_statem.cast(pid, ("actions", (("timeout", "a"), 0.2, "old")))
        gen_statem.cast(pid, ("actions", (("timeout", "a"), 0.01, "new")))
        assert await pyotp.receive(timeout=WAIT) == (("timeout", "a"), "new", "s1")
        # cancel and update forms
        gen_statem.cast(pid, ("actions", (("timeout", "d"), 0.05, "d1")))
        gen_statem.cast(pid, ("actions", (("timeout", "d"), "update", "d2")))
        assert await pyotp.receive(timeout=WAIT) == (("timeout", "d"), "d2", "s1")
        gen_statem.cast(pid, ("actions", (("timeout", "e"), 0.02, "e1")))
        gen_statem.cast(pid, ("actions", (("timeout", "e"), "cancel")))
        assert await gen_statem.call(pid, "sync", timeout=WAIT) == "s1"
        with pytest.raises(pyotp.Timeout):  # the thing tested: a cancelled timer stays silent
            await pyotp.receive(timeout=0.06)
        await gen_statem.stop(pid)

    run(main)


def test_a_generic_timeout_may_be_named_by_any_term():
    """OTP takes any term as a generic timeout's name: lists and dicts too."""

    async def main():
        pid = await gen_statem.start(Timers, pyotp.self())
        gen_statem.cast(pid, ("actions", [(("timeout", ["a", 1]), 0.2, "old"),
                                          (("timeout", {"k": [1]}), 0.02, "dict")]))
        gen_statem.cast(pid, ("actions", (("timeout", ["a", 1]), 0.01, "new")))  # replaces
        got = [await pyotp.receive(timeout=WAIT), await pyotp.receive(timeout=WAIT)]
        assert sorted(got, key=lambda e: e[1]) == [
            (("timeout", {"k": [1]}), "dict", "s0"),
            (("timeout", ["a", 1]), "new", "s0"),
        ]
        gen_statem.cast(pid, ("actions", (("timeout", [2]), 0.02, "x")))
        gen_statem.cast(pid, ("actions", (("timeout", [2]), "cancel")))
        gen_statem.cast(pid, ("actions", (("timeout", [3]), 0, "zero")))
        assert await pyotp.receive(timeout=WAIT) == (("timeout", [3]), "zero", "s0")
        with pytest.raises(pyotp.Timeout):  # the cancelled one and the replaced one stay silent
            await pyotp.receive(timeout=0.3)
        await gen_statem.stop(pid)

    run(main)


def test_zero_timeouts_fire_after_the_events_already_queued():
    """Ports gen_statem_SUITE:timeout_cancel_and_update (zero-time part)."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        gen_statem.cast(
            pid,
            (
                "actions",
                [
                    ("state_timeout", 0, "st0"),
                    (("timeout", "g"), 0, "g0"),
                    ("next_event", "info", "inserted"),
                    ("timeout", 0, "dropped"),
                ],
            ),
        )
        got = [await pyotp.receive(timeout=WAIT) for _ in range(3)]
        assert got == [
            ("info", "inserted"),
            ("state_timeout", "st0", "s0"),
            (("timeout", "g"), "g0", "s0"),
        ]
        # an event timeout of zero fires when nothing is queued
        gen_statem.cast(pid, ("actions", ("timeout", 0, "ev0")))
        assert await pyotp.receive(timeout=WAIT) == ("timeout", "ev0", "s0")
        # a queued zero state timeout is cancelled by a state change before it runs
        gen_statem.cast(
            pid,
            ("actions", [("state_timeout", 0, "gone"), ("next_event", "cast", ("goto", "s1", []))]),
        )
        assert await gen_statem.call(pid, "sync", timeout=WAIT) == "s1"
        assert await flush() == []
        await gen_statem.stop(pid)

    run(main)


def test_init_actions_start_timeouts_and_insert_events():
    class Init(gen_statem.GenStatem):
        callback_mode = "state_functions"

        def init(self, owner):
            return (
                "ok",
                "s",
                owner,
                [("state_timeout", 0.01, "st"), ("next_event", "internal", "first")],
            )

        def s(self, etype, content, owner):
            pyotp.send(owner, (etype, content))
            return "keep_state_and_data"

    async def main():
        pid = await gen_statem.start(Init, pyotp.self())
        assert await pyotp.receive(timeout=WAIT) == ("internal", "first")
        assert await pyotp.receive(timeout=WAIT) == ("state_timeout", "st")
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- replies


def test_postpone_in_init_actions_is_ignored():
    """OTP: init's actions run as a state callback's, with postpone forced to false."""

    class Init(gen_statem.GenStatem):
        callback_mode = "state_functions"

        def init(self, owner):
            return ("ok", "s", owner, ["postpone", ("postpone", True), ("next_event", "cast", 1)])

        def s(self, etype, content, owner):
            pyotp.send(owner, (etype, content))
            return "keep_state_and_data"

    async def main():
        pid = await gen_statem.start(Init, pyotp.self())
        assert await pyotp.receive(timeout=WAIT) == ("cast", 1)
        gen_statem.cast(pid, 2)
        assert await pyotp.receive(timeout=WAIT) == ("cast", 2)
        await gen_statem.stop(pid)

    run(main)


def test_a_call_can_be_answered_later_with_reply():
    """Ports the deferred-reply part of gen_statem_SUITE (reply/2)."""

    class Later(gen_statem.GenStatem):
        callback_mode = "handle_event_function"

        def init(self, args):
            return ("ok", "waiting", [])

        def handle_event(self, etype, content, state, pending):
            if etype[0] == "call" and content == "wait":
                return ("keep_state", [*pending, etype[1]])
            if etype[0] == "call" and content == "release":
                for frm in pending:
                    gen_statem.reply(frm, "released")
                return ("keep_state", [], [("reply", etype[1], len(pending))])
            return "keep_state_and_data"

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Later, None)

        async def waiter():
            pyotp.send(me, ("waited", await gen_statem.call(pid, "wait", timeout=WAIT)))

        pyotp.spawn(waiter)
        pyotp.spawn(waiter)
        released = 0
        while released < 2:
            released += await gen_statem.call(pid, "release", timeout=WAIT)
        got = [await pyotp.receive(("waited", pyotp.ANY), timeout=WAIT) for _ in range(2)]
        assert got == [("waited", "released")] * 2
        await gen_statem.stop(pid)

    run(main)


def test_a_call_to_an_unknown_name_raises_noproc_and_a_cast_does_not_raise():
    async def main():
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.call("nobody_here", "x", timeout=1)
        assert info.value.reason == "noproc"
        assert gen_statem.cast("nobody_here", "x") is None

    run(main)


# --------------------------------------------------------------------------- terminate


class Term(gen_statem.GenStatem):
    callback_mode = "state_functions"

    def init(self, owner):
        pyotp.process_flag("trap_exit", True)
        return ("ok", "s", owner)

    def s(self, etype, content, owner):
        if content == "crash":
            raise RuntimeError("boom")
        if content == "exit":
            raise pyotp.Exit("exited")
        if content == "stop":
            return ("stop", "stopped", "new data")
        return "keep_state_and_data"

    def terminate(self, reason, state, data):
        pyotp.send(data if type(data) is pyotp.Pid else self.owner, ("terminate", reason, state))

    @property
    def owner(self):
        return self._owner


class TermOwner(Term):
    def init(self, owner):
        self._owner = owner
        return super().init(owner)


def test_terminate_runs_when_the_parent_exits_and_the_machine_traps_exits():
    """Ports gen_statem_SUITE:shutdown (terminate on the parent's EXIT)."""

    async def main():
        me = pyotp.self()

        async def parent():
            await gen_statem.start_link(TermOwner, me)
            raise pyotp.Exit("parent_gone")

        pyotp.spawn(parent)
        msg = await pyotp.receive(("terminate", pyotp.ANY, pyotp.ANY), timeout=WAIT)
        assert msg == ("terminate", "parent_gone", "s")

    run(main)


@pytest.mark.parametrize(
    ("cast", "check"),
    [
        ("crash", lambda r: isinstance(r, pyotp.Crash) and r.type == "RuntimeError"),
        ("exit", lambda r: r == "exited"),
        ("stop", lambda r: r == "stopped"),
    ],
)
def test_terminate_runs_before_the_machine_exits(cast, check):
    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(TermOwner, me)
        ref = pyotp.monitor(pid)
        gen_statem.cast(pid, cast)
        msg = await pyotp.receive(("terminate", pyotp.ANY, "s"), timeout=WAIT)
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert check(msg[1])
        assert down[4] == msg[1]

    run(main)


def test_a_crash_in_terminate_becomes_the_exit_reason():
    class BadTerm(gen_statem.GenStatem):
        callback_mode = "state_functions"

        def init(self, args):
            return ("ok", "s", None)

        def terminate(self, reason, state, data):
            raise KeyError("in terminate")

    async def main():
        pid = await gen_statem.start(BadTerm, None)
        with pytest.raises(pyotp.CallExit) as info:
            await gen_statem.stop(pid)
        assert isinstance(info.value.reason, pyotp.Crash)
        assert info.value.reason.type == "KeyError"

    run(main)


def test_an_undefined_state_function_crashes_the_machine():
    class NoState(gen_statem.GenStatem):
        callback_mode = "state_functions"

        def init(self, args):
            return ("ok", "missing", None)

    async def main():
        pid = await gen_statem.start(NoState, None)
        ref = pyotp.monitor(pid)
        gen_statem.cast(pid, "x")
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert "undef_state_function" in str(down[4])

    run(main)


# --------------------------------------------------------------------------- sys


def test_system_requests_get_and_replace_state_suspend_resume_and_status():
    """Ports gen_statem_SUITE:get_state, replace_state and sys1 (suspend/resume)."""

    async def main():
        pid = await gen_statem.start(Gate, pyotp.self())
        assert await sys_request(pid, "get_state") == ("closed", pyotp.self())
        new = await sys_request(pid, ("replace_state", lambda sd: ("open", sd[1])))
        assert new == ("open", pyotp.self())
        assert await gen_statem.call(pid, "x", timeout=WAIT) == "open"
        bad = await sys_request(pid, ("replace_state", lambda sd: 1 / 0))
        assert bad[0] == "error"
        assert await sys_request(pid, "get_state") == ("open", pyotp.self())
        assert await sys_request(pid, "suspend") == "ok"
        with pytest.raises(pyotp.CallTimeout):
            await gen_statem.call(pid, "x", timeout=0.05)
        status = await sys_request(pid, "get_status")
        assert status[:3] == ("status", pid, ("module", "gen_statem"))
        assert status[3][1] == "suspended"
        assert ("State", ("open", pyotp.self())) in status[3][4][2][1]
        assert await sys_request(pid, "resume") == "ok"
        assert await gen_statem.call(pid, "x", timeout=WAIT) == "open"
        await gen_statem.stop(pid)

    run(main)


def test_code_change_converts_state_and_data():
    """Ports gen_statem_SUITE:code_change."""

    class Upg(gen_statem.GenStatem):
        callback_mode = "handle_event_function"

        def init(self, args):
            return ("ok", "old", 1)

        def handle_event(self, etype, content, state, data):
            return ("keep_state_and_data", ("reply", etype[1], (state, data)))

        def code_change(self, old_vsn, state, data, extra):
            return ("ok", "new", (data, old_vsn, extra))

    async def main():
        pid = await gen_statem.start(Upg, None)
        assert await sys_request(pid, "suspend") == "ok"
        assert await sys_request(pid, ("code_change", None, "1.0", "x")) == "ok"
        assert await sys_request(pid, "resume") == "ok"
        assert await gen_statem.call(pid, "get", timeout=WAIT) == ("new", (1, "1.0", "x"))
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- misc


def test_async_callbacks_and_hibernate_work():
    class Async(gen_statem.GenStatem):
        callback_mode = ["state_functions", "state_enter"]  # noqa: RUF012 - the API\'s list form

        async def init(self, args):
            await asyncio.sleep(0)
            return ("ok", "s", 0)

        async def s(self, etype, content, n):
            if etype == "enter":
                return ("keep_state", n + 100, "hibernate")
            await asyncio.sleep(0)
            return ("keep_state", n + 1, [("reply", etype[1], n + 1), "hibernate"])

    async def main():
        pid = await gen_statem.start(Async, None)
        assert await gen_statem.call(pid, "inc", timeout=WAIT) == 101
        assert await gen_statem.call(pid, "inc", timeout=WAIT) == 102
        await gen_statem.stop(pid)

    run(main)


def test_a_bad_action_crashes_the_machine():
    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(Timers, me)
        ref = pyotp.monitor(pid)
        gen_statem.cast(pid, ("actions", [("state_timeout", -1, "x")]))
        down = await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT)
        assert "bad_action_from_state_function" in str(down[4])

    run(main)


# --------------------------------------------------------------------------- a code lock


class CodeLock(gen_statem.GenStatem):
    """The OTP User's Guide code lock: enter the code to open; it locks again after a while."""

    callback_mode = ["state_functions", "state_enter"]  # noqa: RUF012 - the API\'s list form

    def init(self, code):
        return ("ok", "locked", {"code": code, "length": len(code), "buttons": []})

    def locked(self, etype, content, data):
        if etype == "enter":
            data["buttons"] = []
            return ("keep_state", data)
        if etype == "timeout":  # the button sequence went stale
            data["buttons"] = []
            return ("keep_state", data)
        if etype == "cast" and content[0] == "button":
            buttons = (data["buttons"] + [content[1]])[-data["length"] :]
            data["buttons"] = buttons
            if buttons == data["code"]:
                return ("next_state", "open", data)
            return ("keep_state", data, [("timeout", 1.0, "button")])
        return self.handle_common(etype, content, data)

    def open(self, etype, content, data):
        if etype == "enter":
            return ("keep_state_and_data", [("state_timeout", 0.05, "lock")])
        if etype == "state_timeout":
            return ("next_state", "locked", data)
        if etype == "cast":
            return ("keep_state_and_data", "postpone")  # buttons wait until locked again
        return self.handle_common(etype, content, data)

    def handle_common(self, etype, content, data):
        if etype[0] == "call" and content == "code_length":
            return ("keep_state_and_data", ("reply", etype[1], data["length"]))
        return "keep_state_and_data"


class ObservableLock(CodeLock):
    def locked(self, etype, content, data):
        if etype == "enter":
            pyotp.send(data["owner"], ("locked", content))
        return super().locked(etype, content, data)

    def open(self, etype, content, data):
        if etype == "enter":
            pyotp.send(data["owner"], ("opened", content))
        return super().open(etype, content, data)

    def init(self, args):
        code, owner = args
        ok, state, data = super().init(code)
        data["owner"] = owner
        return (ok, state, data)


def test_the_code_lock_opens_with_the_right_code_and_locks_again():
    """A classic example: the OTP design principles' code_lock with state_enter."""

    async def main():
        me = pyotp.self()
        pid = await gen_statem.start_link(ObservableLock, ([1, 2, 3], me), name="code_lock")
        assert await pyotp.receive(("locked", pyotp.ANY), timeout=WAIT) == ("locked", "locked")
        assert await gen_statem.call("code_lock", "code_length", timeout=WAIT) == 3
        for b in (9, 1, 2, 3):
            gen_statem.cast("code_lock", ("button", b))
        assert await pyotp.receive(("opened", pyotp.ANY), timeout=WAIT) == ("opened", "locked")
        # pressed while open: postponed, so they count once the lock closed again
        for b in (1, 2, 3):
            gen_statem.cast("code_lock", ("button", b))
        assert await pyotp.receive(("locked", pyotp.ANY), timeout=WAIT) == ("locked", "open")
        assert await pyotp.receive(("opened", pyotp.ANY), timeout=WAIT) == ("opened", "locked")
        assert await pyotp.receive(("locked", pyotp.ANY), timeout=WAIT) == ("locked", "open")
        await gen_statem.stop(pid)

    run(main)


# --------------------------------------------------------------------------- exits, shutdown


def test_an_exit_from_a_linked_non_parent_is_an_info_event():
    async def main():
        me = pyotp.self()
        pid = await gen_statem.start(TermOwner, me)

        async def linked():
            pyotp.link(pid)
            raise pyotp.Exit("bye")

        other = pyotp.spawn(linked)
        # TermOwner ignores info events: it is still alive and in its state afterwards
        await wait_down(other)
        assert await sys_request(pid, "get_state") == ("s", me)
        await gen_statem.stop(pid)
        assert await pyotp.receive(("terminate", "normal", "s"), timeout=WAIT)

    run(main)


def test_a_trapping_machine_runs_terminate_when_the_node_shuts_down():
    seen = []

    class Keeper(gen_statem.GenStatem):
        callback_mode = "state_functions"

        def init(self, args):
            pyotp.process_flag("trap_exit", True)
            return ("ok", "s", None)

        def terminate(self, reason, state, data):
            seen.append((reason, state))

    async def main():
        await gen_statem.start(Keeper, None)

    run(main)
    assert seen == [("shutdown", "s")]


def test_a_machine_can_be_started_from_an_instance_and_a_bad_init_return_fails():
    class Inst(gen_statem.GenStatem):
        callback_mode = "handle_event_function"

        def __init__(self, greeting):
            self.greeting = greeting

        def init(self, args):
            if args == "bad":
                return ("okay", 1)
            return ("ok", 0, None)

        def handle_event(self, etype, content, state, data):
            return ("keep_state_and_data", ("reply", etype[1], self.greeting))

    async def main():
        pid = await gen_statem.start(Inst("hello"), None)
        assert await gen_statem.call(pid, "hi", timeout=WAIT) == "hello"
        await gen_statem.stop(pid)
        with pytest.raises(pyotp.StartError) as info:
            await gen_statem.start(Inst("x"), "bad")
        assert info.value.reason == ("bad_return_from_init", ("okay", 1))
        assert gen_statem.cast(12345, "to nowhere") is None

    run(main)


def test_an_event_postponed_while_changing_state_is_retried_in_the_new_state():
    async def main():
        me = pyotp.self()

        def first(etype, content, data):
            return ("next_state", "second", data, "postpone")

        def second(etype, content, data):
            pyotp.send(me, ("second got", etype, content))
            return "keep_state_and_data"

        machine = {"init": lambda: ("ok", "first", None), "first": first, "second": second}
        pid = await gen_statem.start(MapMachine, machine)
        gen_statem.cast(pid, "x")
        assert await pyotp.receive(timeout=WAIT) == ("second got", "cast", "x")
        await gen_statem.stop(pid)

    run(main)


class _TrapMachine(gen_statem.GenStatem):
    callback_mode = "handle_event_function"

    def init(self, watcher):
        pyotp.process_flag("trap_exit", True)
        return ("ok", "s", watcher)

    def handle_event(self, kind, content, state, watcher):
        if kind == "info":
            pyotp.send(watcher, ("info", content))
        return "keep_state_and_data"

    def terminate(self, reason, state, watcher):
        pyotp.send(watcher, ("terminate", reason))


def test_a_machine_started_without_link_is_its_own_parent():
    """OTP: gen_statem:start makes the machine its own parent: the starter's EXIT is an
    info event, not a parent exit."""

    async def main():
        pid = await gen_statem.start(_TrapMachine, pyotp.self())
        pyotp.exit(pid, "other")
        got = await pyotp.receive(timeout=5)
        await gen_statem.stop(pid)
        end = await pyotp.receive(("terminate", pyotp.ANY), timeout=5)
        return got, end

    got, end = pyotp.run(main)
    assert got[0] == "info" and got[1][0] == "EXIT" and got[1][2] == "other"
    assert end == ("terminate", "normal")
