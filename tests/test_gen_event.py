"""gen_event: managers, handlers, notify/call, supervised handlers, swaps, fault isolation.

Most tests port a case of Erlang/OTP's `lib/stdlib/test/gen_event_SUITE.erl`; `DummyH` and
`Dummy1H` play the suite's `dummy_h` and `dummy1_h` (Dummy1H has async callbacks, so both
callback styles run through every case).
"""

from __future__ import annotations

import logging
import time

import pytest

import pyotp
from pyotp import ANY, gen_event
from pyotp._gen import _resolve

T = 5  # generous deadline for messages we wait on


class DummyH(gen_event.Handler):
    """The suite's dummy_h: reports events to the test process (its state)."""

    def init(self, args):
        if args == "make_error":
            return ("error", "my_error")
        if type(args) is tuple and args[0] == "state":
            return ("ok", args[1])
        if type(args) is tuple and args[1] == "hibernate":
            return ("ok", args[0], "hibernate")
        return ("ok", args)

    def handle_event(self, event, parent):
        if type(event) is tuple and event[0] == "swap_event":
            return ("swap_handler", "swap", parent, event[1], event[2])
        if event == "error_event":
            return ("return", "faulty")
        if event == "do_crash":
            raise ValueError("badmatch 4")
        pyotp.send(parent, ("dummy_h", event))
        return ("ok", parent)

    def handle_call(self, query, parent):
        if query == "hejsan":
            return ("ok", ("ok", "hejhopp"), parent)
        if type(query) is tuple and query[0] == "swap_call":
            return ("swap_handler", ("ok", "swapped"), "swap", parent, query[1], query[2])
        if query == "error_call":
            return ("return", "faulty")
        if query == "exit_call":
            raise ValueError("badmatch 4")
        return ("ok", "ok", parent)

    def handle_info(self, info, parent):
        if type(info) is tuple and info[0] == "swap_info":
            return ("swap_handler", "swap", parent, info[1], info[2])
        if info == "error_info":
            return ("return", "faulty")
        if info == "do_crash":
            raise ValueError("badmatch 4")
        pyotp.send(parent, ("dummy_h", info))
        return ("ok", parent)

    def terminate(self, arg, parent):
        if arg == "return_hej":
            return "return_hej"
        if arg == "swap":
            return ("ok", parent)
        if arg == ("error", ("return", "faulty")):
            pyotp.send(parent, ("dummy_h", "returned_error"))
        return "ok"


class Dummy1H(gen_event.Handler):
    """The suite's dummy1_h, with async callbacks."""

    async def init(self, args):
        if args == "make_error":
            return ("error", "my_error")
        if type(args) is tuple and len(args) == 2 and args[1] == "error":
            return "non_existing"  # swapped in for a handler that was not installed
        if type(args) is tuple and len(args) == 2 and args[0] == "swap":
            return ("ok", args[1][1])
        return ("ok", args)

    async def handle_event(self, event, parent):
        if event == "delete_event":
            return "remove_handler"
        if event == "do_crash":
            raise ValueError("badmatch 4")
        pyotp.send(parent, ("dummy1_h", event))
        return ("ok", parent)

    async def handle_call(self, query, parent):
        if query == "delete_call":
            return ("remove_handler", "ok")
        return ("ok", "ok", parent)

    async def handle_info(self, info, parent):
        if info == "delete_info":
            return "remove_handler"
        if info == "do_crash":
            raise ValueError("badmatch 4")
        pyotp.send(parent, ("dummy1_h", info))
        return ("ok", parent)

    async def terminate(self, arg, parent):
        if arg == "return_hej":
            return "return_hej"
        if arg == "remove_handler":
            pyotp.send(parent, ("dummy1_h", "removed"))
        return "ok"


class Reporter(gen_event.Handler):
    """Sends every callback it gets to the test process; state = (test pid, tag)."""

    def handle_event(self, event, state):
        pyotp.send(state[0], ("event", state[1], event))
        return ("ok", state)

    def handle_call(self, request, state):
        return ("ok", (state[1], request), state)

    def handle_info(self, info, state):
        pyotp.send(state[0], ("info", state[1], info))
        return ("ok", state)

    def terminate(self, arg, state):
        pyotp.send(state[0], ("terminate", state[1], arg))
        return ("terminated", state[1])


async def _sys(mgr, request):
    """Send a "$system" request (what sys_ will do) and wait for the reply."""
    pid = _resolve(mgr)
    ref = pyotp.monitor(pid)
    pyotp.send(pid, ("$system", (pyotp.self(), ref), request))
    reply = await pyotp.receive((ref, ANY), timeout=T)
    pyotp.demonitor(ref, flush=True)
    return reply[1]


async def _gen_event_exit(name, reason=ANY):
    """Receive `("gen_event_EXIT", name, reason)`, comparing with `==`.

    A bare class inside a receive pattern matches its instances, not the class itself, so
    handler names (classes) are matched by a predicate here.
    """
    reason_pat = reason if reason is ANY else (lambda r: r == reason)
    return await pyotp.receive(("gen_event_EXIT", lambda n: n == name, reason_pat), timeout=T)


@pytest.fixture
def quiet_handler_reports():
    """Handler crashes are logged on purpose in some tests; keep the output readable."""
    logger = logging.getLogger("pyotp.gen_event")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(old)


# --------------------------------------------------------------------- start / stop


def test_managers_start_anonymous_or_named_and_stop():
    """Ports gen_event_SUITE:start."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        pid0 = await gen_event.start()
        assert await gen_event.which_handlers(pid0) == []
        await gen_event.stop(pid0)

        pid1 = await gen_event.start_link()
        assert await gen_event.which_handlers(pid1) == []
        await gen_event.stop(pid1)

        pid2 = await gen_event.start("my_dummy_name")
        assert await gen_event.which_handlers("my_dummy_name") == []
        assert await gen_event.which_handlers(pid2) == []
        await gen_event.stop("my_dummy_name")

        pid3 = await gen_event.start_link(("local", "my_dummy_name"))
        assert await gen_event.which_handlers(("local", "my_dummy_name")) == []
        assert await gen_event.which_handlers(pid3) == []
        await gen_event.stop("my_dummy_name")

        pid4 = await gen_event.start_link("my_dummy_name")
        for starter in (gen_event.start_link, gen_event.start):
            with pytest.raises(pyotp.StartError) as info:
                await starter("my_dummy_name")
            assert info.value.reason == ("already_started", pid4)
        await gen_event.stop("my_dummy_name", "shutdown", 10)
        assert await pyotp.receive(("EXIT", pid4, ANY), timeout=T) == ("EXIT", pid4, "shutdown")

        pid5 = await gen_event.start_link("my_dummy_name")
        pyotp.exit(pid5, "shutdown")  # from the parent: the manager stops
        assert await pyotp.receive(("EXIT", pid5, ANY), timeout=T) == ("EXIT", pid5, "shutdown")
        assert pyotp.whereis("my_dummy_name") is None
        return True

    assert pyotp.run(main)


def test_stop_of_a_dead_or_unknown_manager_raises_call_exit_noproc():
    async def main():
        with pytest.raises(pyotp.CallExit) as info:
            await gen_event.stop("nobody_here")
        assert info.value.reason == "noproc"
        pid = await gen_event.start()
        await gen_event.stop(pid)
        with pytest.raises(pyotp.CallExit):
            await gen_event.which_handlers(pid)
        return True

    assert pyotp.run(main)


def test_stop_terminates_every_handler_with_stop():
    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Reporter, (me, "a"))
        await gen_event.add_handler(mgr, (Reporter, 2), (me, "b"))
        await gen_event.stop(mgr)
        got = {await pyotp.receive(("terminate", ANY, ANY), timeout=T) for _ in range(2)}
        assert got == {("terminate", "a", "stop"), ("terminate", "b", "stop")}
        return True

    assert pyotp.run(main)


def test_a_manager_started_unlinked_does_not_delay_node_shutdown():
    async def main():
        mgr = await gen_event.start("left_running")
        await gen_event.add_handler(mgr, Reporter, (pyotp.self(), "x"))
        return mgr

    t0 = time.monotonic()
    pyotp.run(main)
    assert time.monotonic() - t0 < 3  # the scheduler's grace before killing is 5 s


# --------------------------------------------------------------------- add / delete


def test_add_handler_installs_handlers_by_class_and_by_class_and_id():
    """Ports gen_event_SUITE:add_handler."""

    async def main():
        me = pyotp.self()
        await gen_event.start("my_dummy_handler")
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.add_handler("my_dummy_handler", DummyH, "make_error")
        assert info.value.reason == "my_error"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        assert await gen_event.which_handlers("my_dummy_handler") == [DummyH]

        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.add_handler("my_dummy_handler", (DummyH, me), "make_error")
        assert info.value.reason == "my_error"
        assert await gen_event.which_handlers("my_dummy_handler") == [DummyH]
        await gen_event.add_handler("my_dummy_handler", (DummyH, me), me)
        assert await gen_event.which_handlers("my_dummy_handler") == [(DummyH, me), DummyH]
        await gen_event.stop("my_dummy_handler")
        return True

    assert pyotp.run(main)


def test_add_handler_whose_init_raises_or_returns_garbage_raises_otp_error():
    class Raises(gen_event.Handler):
        def init(self, args):
            raise RuntimeError("no init today")

    class Garbage(gen_event.Handler):
        def init(self, args):
            return "ignore"

    async def main():
        mgr = await gen_event.start()
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.add_handler(mgr, Raises, None)
        tag, crash = info.value.reason
        assert tag == "EXIT" and isinstance(crash, pyotp.Crash)
        assert crash.type == "RuntimeError"
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.add_handler(mgr, Garbage, None)
        assert info.value.reason == "ignore"
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_handler_is_named_by_a_class_or_a_class_and_id_else_badarg():
    async def main():
        mgr = await gen_event.start()
        for bad in ("DummyH", DummyH(), (DummyH,), ("DummyH", 1), None):
            with pytest.raises(pyotp.BadArg):
                await gen_event.add_handler(mgr, bad, None)
            with pytest.raises(pyotp.BadArg):
                await gen_event.call(mgr, bad, "x")
        with pytest.raises(pyotp.BadArg):
            await gen_event.swap_handler(mgr, DummyH, (Dummy1H, None))
        with pytest.raises(pyotp.BadArg):
            gen_event.notify(42, "event")
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_the_api_outside_a_node_raises_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        gen_event.notify("mgr", "event")


def test_delete_handler_returns_what_terminate_returned():
    """Ports gen_event_SUITE:delete_handler."""

    class Nope(gen_event.Handler):
        pass

    async def main():
        me = pyotp.self()
        await gen_event.start("my_dummy_handler")
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.delete_handler("my_dummy_handler", Nope, [])
        assert info.value.reason == "module_not_found"
        r = await gen_event.delete_handler("my_dummy_handler", DummyH, "return_hej")
        assert r == "return_hej"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        assert await gen_event.delete_handler("my_dummy_handler", DummyH, []) == "ok"
        assert await gen_event.which_handlers("my_dummy_handler") == []

        await gen_event.add_handler("my_dummy_handler", (DummyH, 1), me)
        await gen_event.add_handler("my_dummy_handler", (DummyH, 2), me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.delete_handler("my_dummy_handler", (Nope, 1), [])
        assert info.value.reason == "module_not_found"
        with pytest.raises(pyotp.OtpError):
            await gen_event.delete_handler("my_dummy_handler", DummyH, [])  # only ids exist
        for hid in (1, 2):
            r = await gen_event.delete_handler("my_dummy_handler", (DummyH, hid), "return_hej")
            assert r == "return_hej"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_handler("my_dummy_handler", (DummyH, 2), me)
        assert await gen_event.delete_handler("my_dummy_handler", (DummyH, 2), []) == "ok"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.stop("my_dummy_handler")
        return True

    assert pyotp.run(main)


def test_delete_handler_returns_the_exit_of_a_raising_terminate(quiet_handler_reports):
    class BadTerminate(gen_event.Handler):
        def terminate(self, arg, state):
            raise KeyError("gone")

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, BadTerminate, None)
        tag, crash = await gen_event.delete_handler(mgr, BadTerminate, None)
        assert tag == "EXIT" and crash.type == "KeyError"
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- swaps


def test_swap_handler_replaces_one_handler_by_another():
    """Ports gen_event_SUITE:swap_handler."""

    class FaultyH(gen_event.Handler):
        pass

    async def main():
        me = pyotp.self()
        await gen_event.start("my_dummy_handler")
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.swap_handler("my_dummy_handler", (FaultyH, "swap"), (Dummy1H, []))
        assert info.value.reason == "non_existing"
        await gen_event.swap_handler("my_dummy_handler", (DummyH, "swap"), (Dummy1H, "swap"))
        assert await gen_event.which_handlers("my_dummy_handler") == [Dummy1H]
        assert await gen_event.delete_handler("my_dummy_handler", Dummy1H, []) == "ok"

        await gen_event.add_handler("my_dummy_handler", (DummyH, 3), me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.swap_handler("my_dummy_handler", (FaultyH, "swap"), (Dummy1H, []))
        assert info.value.reason == "non_existing"
        await gen_event.swap_handler(
            "my_dummy_handler", ((DummyH, 3), "swap"), ((Dummy1H, 4), "swap")
        )
        assert await gen_event.which_handlers("my_dummy_handler") == [(Dummy1H, 4)]
        assert await gen_event.delete_handler("my_dummy_handler", (Dummy1H, 4), []) == "ok"
        await gen_event.stop("my_dummy_handler")
        return True

    assert pyotp.run(main)


def test_swap_handler_passes_old_terminate_result_to_new_init():
    class Old(gen_event.Handler):
        def terminate(self, arg, state):
            return ("handover", arg, state)

    class New(gen_event.Handler):
        def init(self, args):
            return ("ok", args)

        def handle_call(self, request, state):
            return ("ok", state, state)

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Old, 41)
        await gen_event.swap_handler(mgr, (Old, "bye"), (New, "hello"))
        assert await gen_event.call(mgr, New, "state?") == ("hello", ("handover", "bye", 41))
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_swap_sup_handler_moves_the_supervision_to_the_new_handler():
    """Ports gen_event_SUITE:swap_sup_handler."""

    class FaultyH(gen_event.Handler):
        pass

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start("my_dummy_handler")
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.swap_handler("my_dummy_handler", (FaultyH, "swap"), (Dummy1H, []))
        assert info.value.reason == "non_existing"
        await gen_event.swap_handler("my_dummy_handler", (DummyH, "swap"), (Dummy1H, "swap"))
        swapped = await _gen_event_exit(DummyH, ANY)
        assert swapped == ("gen_event_EXIT", DummyH, ("swapped", Dummy1H, me))
        assert await gen_event.which_handlers("my_dummy_handler") == [Dummy1H]
        assert await gen_event.delete_handler("my_dummy_handler", Dummy1H, []) == "ok"
        got = await pyotp.receive(("gen_event_EXIT", ANY, ANY), timeout=T)
        assert got == ("gen_event_EXIT", Dummy1H, "normal")

        await gen_event.add_sup_handler("my_dummy_handler", (DummyH, 3), me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.swap_sup_handler("my_dummy_handler", (FaultyH, "swap"), (Dummy1H, []))
        assert info.value.reason == "non_existing"
        await gen_event.swap_sup_handler(
            "my_dummy_handler", ((DummyH, 3), "swap"), ((Dummy1H, 4), "swap")
        )
        assert await gen_event.which_handlers("my_dummy_handler") == [(Dummy1H, 4)]
        got = await _gen_event_exit((DummyH, 3), ANY)
        assert got[2] == ("swapped", (Dummy1H, 4), me)
        assert await gen_event.delete_handler("my_dummy_handler", (Dummy1H, 4), []) == "ok"
        got = await pyotp.receive(("gen_event_EXIT", ANY, ANY), timeout=T)
        assert got == ("gen_event_EXIT", (Dummy1H, 4), "normal")
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- notify / sync_notify


async def _event_cases(mgr, send_event):
    """The body shared by the notify and sync_notify cases of the suite."""
    me = pyotp.self()
    event = ("event", me)
    await gen_event.add_handler(mgr, DummyH, me)
    assert await gen_event.which_handlers(mgr) == [DummyH]
    await send_event(mgr, event)
    assert await pyotp.receive(("dummy_h", event), timeout=T)
    await send_event(mgr, ("swap_event", Dummy1H, "swap"))
    assert await gen_event.which_handlers(mgr) == [Dummy1H]
    await send_event(mgr, event)
    assert await pyotp.receive(("dummy1_h", event), timeout=T)
    await send_event(mgr, "delete_event")
    assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
    assert await gen_event.which_handlers(mgr) == []
    await gen_event.add_handler(mgr, DummyH, me)
    await send_event(mgr, "error_event")
    assert await pyotp.receive(("dummy_h", "returned_error"), timeout=T)
    assert await gen_event.which_handlers(mgr) == []

    # Handler with id, (cls, id)
    await gen_event.add_handler(mgr, (DummyH, 5), me)
    assert await gen_event.which_handlers(mgr) == [(DummyH, 5)]
    await send_event(mgr, event)
    assert await pyotp.receive(("dummy_h", event), timeout=T)
    await send_event(mgr, ("swap_event", (Dummy1H, 9), "swap"))
    assert await gen_event.which_handlers(mgr) == [(Dummy1H, 9)]
    await send_event(mgr, event)
    assert await pyotp.receive(("dummy1_h", event), timeout=T)
    await send_event(mgr, "delete_event")
    assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
    assert await gen_event.which_handlers(mgr) == []
    await gen_event.add_handler(mgr, (DummyH, "a"), me)
    await send_event(mgr, "error_event")
    assert await pyotp.receive(("dummy_h", "returned_error"), timeout=T)
    assert await gen_event.which_handlers(mgr) == []

    # Supervised handler.
    await gen_event.add_sup_handler(mgr, DummyH, me)
    assert await gen_event.which_handlers(mgr) == [DummyH]
    await send_event(mgr, event)
    assert await pyotp.receive(("dummy_h", event), timeout=T)
    await send_event(mgr, "do_crash")
    got = await _gen_event_exit(DummyH, ANY)
    assert got[2][0] == "EXIT" and got[2][1].type == "ValueError"

    await gen_event.add_sup_handler(mgr, DummyH, me)
    await send_event(mgr, ("swap_event", Dummy1H, "swap"))
    assert await gen_event.which_handlers(mgr) == [Dummy1H]
    assert await _gen_event_exit(DummyH, ("swapped", Dummy1H, me))
    await send_event(mgr, "do_crash")
    got = await _gen_event_exit(Dummy1H, ANY)
    assert got[2][0] == "EXIT"

    await gen_event.add_sup_handler(mgr, DummyH, me)
    await send_event(mgr, ("swap_event", Dummy1H, "swap"))
    assert await gen_event.which_handlers(mgr) == [Dummy1H]
    await send_event(mgr, "delete_event")
    assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
    assert await _gen_event_exit(Dummy1H, "normal")
    assert await gen_event.which_handlers(mgr) == []


def test_notify_delivers_events_swaps_removes_and_survives_failures(quiet_handler_reports):
    """Ports gen_event_SUITE:notify."""

    async def send_event(mgr, event):
        assert gen_event.notify(mgr, event) is None

    async def main():
        mgr = await gen_event.start("my_dummy_handler")
        await _event_cases("my_dummy_handler", send_event)
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_sync_notify_delivers_events_swaps_removes_and_survives_failures(quiet_handler_reports):
    """Ports gen_event_SUITE:sync_notify."""

    async def send_event(mgr, event):
        assert await gen_event.sync_notify(mgr, event) is None

    async def main():
        mgr = await gen_event.start("my_dummy_handler")
        await _event_cases("my_dummy_handler", send_event)
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_notify_to_an_unknown_or_dead_manager_returns_none():
    # OTP: notify is a plain send: badarg for a bare name nobody holds, nothing otherwise.
    async def main():
        with pytest.raises(pyotp.BadArg, match="no_such_manager"):
            gen_event.notify("no_such_manager", "event")
        assert gen_event.notify(("no_such_manager", pyotp.node()), "event") is None
        mgr = await gen_event.start()
        await gen_event.stop(mgr)
        assert gen_event.notify(mgr, "event") is None
        return True

    assert pyotp.run(main)


def test_sync_notify_returns_after_every_handler_has_handled_the_event():
    class Slow(gen_event.Handler):
        async def handle_event(self, event, state):
            # Wait on a message that never comes: yields to the loop, like real async work.
            try:
                await pyotp.receive("never", timeout=0.05)
            except pyotp.Timeout:
                pass
            pyotp.send(state, ("slow_done", event))
            return ("ok", state)

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Slow, 1), me)
        await gen_event.add_handler(mgr, (Slow, 2), me)
        await gen_event.sync_notify(mgr, "e")
        done = [await pyotp.receive(("slow_done", ANY), timeout=0) for _ in range(2)]
        assert done == [("slow_done", "e"), ("slow_done", "e")]
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_handlers_see_events_newest_first_and_in_sending_order():
    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Reporter, "old"), (me, "old"))
        await gen_event.add_handler(mgr, (Reporter, "new"), (me, "new"))
        for e in range(3):
            gen_event.notify(mgr, e)
        await gen_event.sync_notify(mgr, "end")
        seen = [await pyotp.receive(("event", ANY, ANY), timeout=0) for _ in range(8)]
        assert seen == [("event", tag, e) for e in (0, 1, 2, "end") for tag in ("new", "old")]
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- call


def test_call_reaches_one_handler_and_maps_failures():
    """Ports gen_event_SUITE:call."""

    class BadH(gen_event.Handler):
        pass

    async def main():
        me = pyotp.self()
        await gen_event.start("my_dummy_handler")
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        await gen_event.add_handler("my_dummy_handler", (DummyH, 1), me)
        assert await gen_event.which_handlers("my_dummy_handler") == [(DummyH, 1), DummyH]
        with pytest.raises(pyotp.CallExit):
            await gen_event.call("non_exist", DummyH, "hejsan")
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.call("my_dummy_handler", BadH, "hejsan")
        assert info.value.reason == "bad_module"
        assert await gen_event.call("my_dummy_handler", DummyH, "hejsan") == ("ok", "hejhopp")
        assert await gen_event.call("my_dummy_handler", (DummyH, 1), "hejsan") == (
            "ok",
            "hejhopp",
        )
        r = await gen_event.call("my_dummy_handler", DummyH, "hejsan", 10)
        assert r == ("ok", "hejhopp")
        with pytest.raises(pyotp.CallTimeout):
            await gen_event.call("my_dummy_handler", DummyH, "hejsan", 0)
        assert await gen_event.delete_handler("my_dummy_handler", (DummyH, 1), []) == "ok"
        r = await gen_event.call("my_dummy_handler", DummyH, ("swap_call", Dummy1H, "swap"))
        assert r == ("ok", "swapped")
        assert await gen_event.which_handlers("my_dummy_handler") == [Dummy1H]
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.call("my_dummy_handler", DummyH, "hejsan")
        assert info.value.reason == "bad_module"
        assert await gen_event.call("my_dummy_handler", Dummy1H, "delete_call") == "ok"
        assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
        assert await gen_event.which_handlers("my_dummy_handler") == []

        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.call("my_dummy_handler", DummyH, "error_call")
        assert info.value.reason == ("return", "faulty")
        assert await pyotp.receive(("dummy_h", "returned_error"), timeout=T)
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.call("my_dummy_handler", DummyH, "exit_call")
        assert info.value.reason[0] == "EXIT"
        assert await gen_event.which_handlers("my_dummy_handler") == []

        # Handler with id, (cls, id)
        await gen_event.add_handler("my_dummy_handler", (DummyH, 1), me)
        r = await gen_event.call(
            "my_dummy_handler", (DummyH, 1), ("swap_call", (Dummy1H, 2), "swap")
        )
        assert r == ("ok", "swapped")
        assert await gen_event.which_handlers("my_dummy_handler") == [(Dummy1H, 2)]
        assert await gen_event.call("my_dummy_handler", (Dummy1H, 2), "delete_call") == "ok"
        assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)

        # Supervised handler.
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        r = await gen_event.call("my_dummy_handler", DummyH, ("swap_call", Dummy1H, "swap"))
        assert r == ("ok", "swapped")
        assert await _gen_event_exit(DummyH, ("swapped", Dummy1H, me))
        assert await gen_event.call("my_dummy_handler", Dummy1H, "delete_call") == "ok"
        assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
        assert await _gen_event_exit(Dummy1H, "normal")
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError):
            await gen_event.call("my_dummy_handler", DummyH, "error_call")
        got = await _gen_event_exit(DummyH, ANY)
        assert got[2] == ("return", "faulty")
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        with pytest.raises(pyotp.OtpError):
            await gen_event.call("my_dummy_handler", DummyH, "exit_call")
        got = await _gen_event_exit(DummyH, ANY)
        assert got[2][0] == "EXIT"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.stop("my_dummy_handler")
        return True

    logging.getLogger("pyotp.gen_event").setLevel(logging.CRITICAL)
    try:
        assert pyotp.run(main)
    finally:
        logging.getLogger("pyotp.gen_event").setLevel(logging.NOTSET)


# --------------------------------------------------------------------- info


def test_other_messages_go_to_handle_info(quiet_handler_reports):
    """Ports gen_event_SUITE:info."""

    async def main():
        me = pyotp.self()
        await gen_event.start("my_dummy_handler")
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        info = ("info", me)
        pyotp.send("my_dummy_handler", info)
        assert await pyotp.receive(("dummy_h", info), timeout=T)
        pyotp.send("my_dummy_handler", ("swap_info", Dummy1H, "swap"))
        assert await gen_event.which_handlers("my_dummy_handler") == [Dummy1H]
        pyotp.send("my_dummy_handler", info)
        assert await pyotp.receive(("dummy1_h", info), timeout=T)
        pyotp.send("my_dummy_handler", "delete_info")
        assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_handler("my_dummy_handler", DummyH, me)
        pyotp.send("my_dummy_handler", "error_info")
        assert await pyotp.receive(("dummy_h", "returned_error"), timeout=T)
        assert await gen_event.which_handlers("my_dummy_handler") == []

        # Supervised handler
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        pyotp.send("my_dummy_handler", ("swap_info", Dummy1H, "swap"))
        assert await _gen_event_exit(DummyH, ("swapped", Dummy1H, me))
        pyotp.send("my_dummy_handler", "delete_info")
        assert await pyotp.receive(("dummy1_h", "removed"), timeout=T)
        assert await _gen_event_exit(Dummy1H, "normal")
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        pyotp.send("my_dummy_handler", "error_info")
        assert await pyotp.receive(("dummy_h", "returned_error"), timeout=T)
        assert await _gen_event_exit(DummyH, ("return", "faulty"))
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        pyotp.send("my_dummy_handler", "do_crash")
        got = await _gen_event_exit(DummyH, ANY)
        assert got[2][0] == "EXIT"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.stop("my_dummy_handler")
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- fault isolation


def test_a_crashing_handler_is_removed_logged_and_the_manager_lives_on(caplog):
    class Crashy(gen_event.Handler):
        def handle_event(self, event, state):
            if event == "boom":
                raise ZeroDivisionError("handler bug")
            return ("ok", state)

        def terminate(self, arg, state):
            pyotp.send(state, ("crashy_terminated", arg))

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Crashy, me)
        await gen_event.add_handler(mgr, Reporter, (me, "ok"))
        gen_event.notify(mgr, "boom")
        _, arg = await pyotp.receive(("crashy_terminated", ANY), timeout=T)
        assert arg[0] == "error" and arg[1][0] == "EXIT"
        assert arg[1][1].type == "ZeroDivisionError"
        assert await pyotp.receive(("event", "ok", "boom"), timeout=T)
        await gen_event.sync_notify(mgr, "after")
        assert await pyotp.receive(("event", "ok", "after"), timeout=T)
        assert await gen_event.which_handlers(mgr) == [Reporter]
        await gen_event.stop(mgr)
        return True

    with caplog.at_level(logging.ERROR, logger="pyotp.gen_event"):
        assert pyotp.run(main)
    records = [r for r in caplog.records if r.name == "pyotp.gen_event"]
    assert len(records) == 1
    assert "ZeroDivisionError" in records[0].getMessage()
    assert "Crashy" in records[0].getMessage()


def test_a_handler_returning_a_bad_value_is_removed_with_error_term(quiet_handler_reports):
    class Forgetful(gen_event.Handler):
        def handle_event(self, event, state):
            return None  # forgot the ("ok", state) tuple

        def terminate(self, arg, state):
            pyotp.send(state, ("terminated", arg))

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, Forgetful, me)
        await gen_event.sync_notify(mgr, "e")
        assert await pyotp.receive(("terminated", ANY), timeout=T) == (
            "terminated",
            ("error", None),
        )
        assert await pyotp.receive(("gen_event_EXIT", ANY, ANY), timeout=T) == (
            "gen_event_EXIT",
            Forgetful,
            None,
        )
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_handler_raising_exit_is_removed_and_the_manager_lives_on(quiet_handler_reports):
    class Quitter(gen_event.Handler):
        def handle_event(self, event, state):
            raise pyotp.Exit("had_enough")

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, Quitter, None)
        await gen_event.sync_notify(mgr, "e")
        got = await _gen_event_exit(Quitter, ANY)
        assert got[2] == ("EXIT", "had_enough")
        assert await gen_event.which_handlers(mgr) == []
        assert me != mgr
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- supervised handlers


def test_add_sup_handler_links_the_owner_and_reports_removals():
    """Ports gen_event_SUITE:add_sup_handler."""

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start("my_dummy_handler")
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.add_sup_handler("my_dummy_handler", DummyH, "make_error")
        assert info.value.reason == "my_error"
        assert await gen_event.which_handlers("my_dummy_handler") == []
        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        assert await gen_event.which_handlers("my_dummy_handler") == [DummyH]
        # An exit signal from us looks to the trapping manager like our death.
        pyotp.exit(mgr, "sup_died")
        assert await gen_event.which_handlers("my_dummy_handler") == []

        await gen_event.add_sup_handler("my_dummy_handler", DummyH, me)
        assert await gen_event.which_handlers("my_dummy_handler") == [DummyH]
        with pytest.raises(pyotp.OtpError):
            await gen_event.add_handler("my_dummy_handler", (DummyH, me), "make_error")
        assert await gen_event.which_handlers("my_dummy_handler") == [DummyH]
        await gen_event.add_sup_handler("my_dummy_handler", (DummyH, me), me)
        assert await gen_event.which_handlers("my_dummy_handler") == [(DummyH, me), DummyH]
        await gen_event.stop("my_dummy_handler")
        got = {await pyotp.receive(("gen_event_EXIT", ANY, ANY), timeout=T) for _ in range(2)}
        assert got == {
            ("gen_event_EXIT", DummyH, "shutdown"),
            ("gen_event_EXIT", (DummyH, me), "shutdown"),
        }
        return True

    assert pyotp.run(main)


def test_a_supervised_handler_is_removed_with_stop_when_its_owner_dies():
    async def owner(mgr, test):
        await gen_event.add_sup_handler(mgr, Reporter, (test, "sup"))
        pyotp.send(test, "added")
        await pyotp.receive("die", timeout=T)
        raise pyotp.Exit("owner_gone")

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Reporter, (me, "plain"))
        pid = pyotp.spawn(owner, mgr, me)
        await pyotp.receive("added", timeout=T)
        assert await gen_event.which_handlers(mgr) == [Reporter, Reporter]
        pyotp.send(pid, "die")
        got = await pyotp.receive(("terminate", "sup", ANY), timeout=T)
        assert got == ("terminate", "sup", ("stop", "owner_gone"))
        # The other handlers hear of the owner's exit through handle_info.
        assert await pyotp.receive(("info", "plain", ("EXIT", pid, "owner_gone")), timeout=T)
        assert await gen_event.which_handlers(mgr) == [Reporter]
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_supervised_handler_goes_when_its_owner_returns_normally():
    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()

        async def short_lived():
            await gen_event.add_sup_handler(mgr, Reporter, (me, "short"))

        _, ref = pyotp.spawn_monitor(short_lived)
        await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        got = await pyotp.receive(("terminate", "short", ANY), timeout=T)
        assert got == ("terminate", "short", ("stop", "normal"))
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_stopping_a_manager_with_an_error_reason_does_not_kill_the_handler_owners():
    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, DummyH, me)  # links us to the manager
        await gen_event.stop(mgr, "oops")
        assert await _gen_event_exit(DummyH, "shutdown")
        return "still alive"

    assert pyotp.run(main) == "still alive"


# --------------------------------------------------------------------- system messages


def test_get_state_and_replace_state_see_every_handler():
    """Ports gen_event_SUITE:get_state and gen_event_SUITE:replace_state."""

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Dummy1H, me)
        assert await _sys(mgr, "get_state") == [(Dummy1H, None, me)]
        await gen_event.add_handler(mgr, (Dummy1H, "id"), "s2")
        assert await _sys(mgr, "get_state") == [(Dummy1H, "id", "s2"), (Dummy1H, None, me)]

        def replace(entry):
            cls, hid, _ = entry
            if hid is None:
                raise ValueError("keep this one")
            return (cls, hid, "new")

        new = await _sys(mgr, ("replace_state", replace))
        assert new == [(Dummy1H, "id", "new"), (Dummy1H, None, me)]
        assert await _sys(mgr, "get_state") == new
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_suspended_manager_queues_events_until_resumed():
    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Reporter, (me, "r"))
        assert await _sys(mgr, "suspend") == "ok"
        gen_event.notify(mgr, "while_suspended")
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("event", ANY, ANY), timeout=0.05)
        assert await _sys(mgr, "resume") == "ok"
        assert await pyotp.receive(("event", "r", "while_suspended"), timeout=T)
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_code_change_runs_in_the_handlers_of_the_module():
    class Versioned(gen_event.Handler):
        def code_change(self, old_vsn, state, extra):
            return ("ok", (state, old_vsn, extra))

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Versioned, 1)
        await gen_event.add_handler(mgr, Reporter, (pyotp.self(), "r"))
        r = await _sys(mgr, ("code_change", __name__, "0.9", "x"))
        assert r == "ok"
        states = {cls: s for cls, _, s in await _sys(mgr, "get_state")}
        assert states[Versioned] == (1, "0.9", "x")
        assert states[Reporter] == (pyotp.self(), "r")  # its default code_change keeps it
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


# --------------------------------------------------------------------- odd handlers


def test_a_plain_class_works_as_a_handler_and_missing_callbacks_fail_softly(
    quiet_handler_reports,
):
    class Plain:  # not a Handler subclass: callbacks are looked up by name, like a module
        def init(self, args):
            return ("ok", args)

        def handle_event(self, event, state):
            pyotp.send(state, ("plain", event))
            return ("ok", state)

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, Plain, me)
        pyotp.send(mgr, "an info")  # no handle_info: dropped with a warning, handler kept
        await gen_event.sync_notify(mgr, "e")
        assert await pyotp.receive(("plain", "e"), timeout=T)
        assert await gen_event.which_handlers(mgr) == [Plain]
        with pytest.raises(pyotp.OtpError) as info:  # no handle_call: the handler goes
            await gen_event.call(mgr, Plain, "q")
        assert info.value.reason[0] == "EXIT"
        got = await _gen_event_exit(Plain)
        assert got[2][0] == "EXIT"
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_swap_whose_new_init_fails_removes_both_and_tells_the_owner(quiet_handler_reports):
    class Refuses(gen_event.Handler):
        def init(self, args):
            return ("error", "not_today")

    async def main():
        me = pyotp.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, DummyH, me)
        await gen_event.sync_notify(mgr, ("swap_event", Refuses, None))
        assert await _gen_event_exit(DummyH, ("swapped", Refuses, me))
        assert await _gen_event_exit(Refuses, ("error", "not_today"))
        assert await gen_event.which_handlers(mgr) == []
        with pytest.raises(pyotp.OtpError) as info:
            await gen_event.swap_handler(mgr, (DummyH, None), (Refuses, None))
        assert info.value.reason == "not_today"
        assert await gen_event.which_handlers(mgr) == []
        await gen_event.stop(mgr)
        return True

    assert pyotp.run(main)


def test_a_linked_manager_stops_when_its_parent_exits():
    async def parent(test):
        mgr = await gen_event.start_link()
        await gen_event.add_handler(mgr, Reporter, (test, "child"))
        pyotp.send(test, ("mgr", mgr))
        await pyotp.receive("die", timeout=T)
        raise pyotp.Exit("parent_gone")

    async def main():
        pid = pyotp.spawn(parent, pyotp.self())
        _, mgr = await pyotp.receive(("mgr", ANY), timeout=T)
        ref = pyotp.monitor(mgr)
        pyotp.send(pid, "die")
        assert await pyotp.receive(("terminate", "child", ANY), timeout=T) == (
            "terminate",
            "child",
            "stop",
        )
        down = await pyotp.receive(("DOWN", ref, ANY, ANY, ANY), timeout=T)
        assert down[4] == "parent_gone"
        return True

    assert pyotp.run(main)
