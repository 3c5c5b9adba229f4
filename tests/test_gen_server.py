"""gen_server: start, call, cast, info, timeouts, continue, stop, terminate, system messages.

Most tests port a case of OTP's `lib/stdlib/test/gen_server_SUITE.erl`; each names it.
"""

from __future__ import annotations

import logging

import pytest

import pyotp
from pyotp import ANY, gen_server

# ------------------------------------------------------------------ callback modules


class Echo(gen_server.GenServer):
    """Replies to calls, records casts and infos, reports terminate to a watcher pid."""

    def init(self, arg):
        if arg == "ignore":
            return "ignore"
        if arg == "stop":
            return ("stop", "stopped")
        if arg == "crash":
            raise ValueError("init blew up")
        if arg == "bad":
            return ("what", 1)
        if type(arg) is tuple and arg[0] == "timeout":
            return ("ok", {"watcher": arg[1]}, arg[2])
        if type(arg) is tuple and arg[0] == "continue":
            pyotp.send(arg[1], "init_done")
            return ("ok", {"watcher": arg[1]}, ("continue", "after_init"))
        if type(arg) is tuple and arg[0] == "trap":
            pyotp.process_flag("trap_exit", True)
            return ("ok", {"watcher": arg[1]})
        return ("ok", {"watcher": arg, "n": 0})

    def handle_call(self, req, from_, state):
        if req == "ping":
            return ("reply", "pong", state)
        if req == "state":
            return ("reply", state, state)
        if req == "slow":
            state["pending"] = from_
            return ("noreply", state)
        if req == "later":
            gen_server.reply(from_, "early reply")
            return ("noreply", state)
        if req == "stop_with_reply":
            return ("stop", "normal", "bye", state)
        if req == "stop_no_reply":
            return ("stop", "gone", state)
        if req == "die_later":
            pyotp.send(pyotp.self(), ("die", "oops"))
            return ("noreply", state)
        if req == "crash":
            raise RuntimeError("handle_call blew up")
        if req == "bad_return":
            return ("repyl", 1, state)
        if type(req) is tuple and req[0] == "reply_timeout":
            return ("reply", "ok", state, req[1])
        if req == "continue":
            return ("reply", "continuing", state, ("continue", "from_call"))
        if req == "hibernate":
            return ("reply", "zzz", state, "hibernate")
        if req == "exit":
            raise pyotp.Exit("exited_in_callback")
        return ("reply", ("unknown", req), state)

    def handle_cast(self, msg, state):
        if msg == "release":
            gen_server.reply(state.pop("pending"), "late")
            return ("noreply", state)
        if msg == "stop":
            return ("stop", "cast_stop", state)
        if msg == "crash":
            raise KeyError("cast blew up")
        pyotp.send(state["watcher"], ("cast", msg))
        return ("noreply", state)

    def handle_info(self, msg, state):
        if type(msg) is tuple and msg[0] == "die":
            return ("stop", msg[1], state)
        pyotp.send(state["watcher"], ("info", msg))
        return ("noreply", state)

    def handle_continue(self, cont, state):
        pyotp.send(state["watcher"], ("continued", cont))
        return ("noreply", state)

    def terminate(self, reason, state):
        watcher = state.get("watcher") if type(state) is dict else None
        if watcher is not None:
            pyotp.send(watcher, ("terminated", reason))


class AsyncEcho(gen_server.GenServer):
    """Every callback is `async def`."""

    async def init(self, arg):
        return ("ok", arg)

    async def handle_call(self, req, from_, state):
        return ("reply", ("async", req), state)

    async def handle_cast(self, msg, state):
        pyotp.send(state, ("async_cast", msg))
        return ("noreply", state)

    async def handle_info(self, msg, state):
        pyotp.send(state, ("async_info", msg))
        return ("noreply", state)

    async def terminate(self, reason, state):
        pyotp.send(state, ("async_terminated", reason))


class Minimal(gen_server.GenServer):
    """Only the defaults: init keeps the arg as state."""


async def _down(ref, timeout=5):
    msg = await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=timeout)
    return msg[4]


async def _system(pid, request):
    """Send a system request as sys_ would and return the reply."""
    ref = pyotp.monitor(pid)
    pyotp.send(pid, ("$system", (pyotp.self(), ref), request))
    msg = await pyotp.receive((ref, ANY), timeout=5)
    pyotp.demonitor(ref, flush=True)
    return msg[1]


# ------------------------------------------------------------------ start


def test_start_and_start_link_return_a_live_pid():
    """Ports gen_server_SUITE:start (unnamed, linked and unlinked)."""

    async def main():
        me = pyotp.self()
        a = await gen_server.start(Echo, me)
        b = await gen_server.start_link(Echo, me)
        assert await gen_server.call(a, "ping") == "pong"
        assert await gen_server.call(b, "ping") == "pong"
        info = await pyotp.process_info(b)
        assert me in info["links"]
        info = await pyotp.process_info(a)
        assert me not in info["links"]
        await gen_server.stop(a)
        await gen_server.stop(b)
        return await pyotp.process_info(a), await pyotp.process_info(b)

    assert pyotp.run(main) == (None, None)


def test_start_with_a_name_registers_it_and_a_second_start_is_already_started():
    """Ports gen_server_SUITE:start (registered, already_started)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self(), name="echo")
        assert pyotp.whereis("echo") == pid
        assert await gen_server.call("echo", "ping") == "pong"
        assert await gen_server.call(("echo", pyotp.node()), "ping") == "pong"
        with pytest.raises(pyotp.StartError) as info:
            await gen_server.start(Echo, pyotp.self(), name="echo")
        assert info.value.reason == ("already_started", pid)
        await gen_server.stop("echo")
        assert pyotp.whereis("echo") is None
        return True

    assert pyotp.run(main)


def test_init_returning_ignore_makes_start_return_none():
    """Ports gen_server_SUITE:start (init returns ignore)."""

    async def main():
        pyotp.process_flag("trap_exit", True)
        assert await gen_server.start_link(Echo, "ignore", name="ign") is None
        assert pyotp.whereis("ign") is None
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("EXIT", ANY, ANY), timeout=0.05)
        return True

    assert pyotp.run(main)


def test_init_returning_stop_raises_start_error_and_leaves_the_caller_alive():
    """Ports gen_server_SUITE:start (init returns {stop, Reason})."""

    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await gen_server.start_link(Echo, "stop", name="st")
        assert info.value.reason == "stopped"
        assert pyotp.whereis("st") is None
        return "alive"

    assert pyotp.run(main) == "alive"


def test_init_crash_raises_start_error_with_the_crash(caplog):
    """Ports gen_server_SUITE:crash_in_init_and_stop_in_init."""

    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await gen_server.start_link(Echo, "crash")
        return info.value.reason

    with caplog.at_level(logging.ERROR, logger="pyotp.crash"):
        reason = pyotp.run(main)
    assert isinstance(reason, pyotp.Crash)
    assert reason.type == "ValueError"
    assert "init blew up" in caplog.text


def test_init_with_a_bad_return_value_fails_the_start():
    """Ports gen_server_SUITE:start (bad return from init)."""

    async def main():
        with pytest.raises(pyotp.StartError) as info:
            await gen_server.start(Echo, "bad")
        return info.value.reason

    assert pyotp.run(main) == ("bad_return_value", ("what", 1))


def test_start_rejects_a_class_that_is_not_a_gen_server():
    async def main():
        with pytest.raises(pyotp.BadArg):
            await gen_server.start(dict, None)
        with pytest.raises(pyotp.BadArg):
            await gen_server.start(Echo, None, bogus=1)
        return True

    assert pyotp.run(main)


def test_start_refuses_a_local_or_global_name_that_is_not_a_str_in_the_caller():
    """It used to start the process, which then crashed registering the name: a StartError
    carrying a crash from deep inside instead of a BadArg naming the argument."""

    async def main():
        for bad in (("local", 5), ("global", None), ("local", ""), ("via", "x")):
            with pytest.raises(pyotp.BadArg, match="name must be"):
                await gen_server.start(Echo, None, name=bad)
        pid = await gen_server.start(Echo, None, name=("local", "fine"))
        return pyotp.whereis("fine") == pid

    assert pyotp.run(main)


def test_calls_outside_a_process_raise_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        gen_server.cast("x", "y")
    with pytest.raises(pyotp.NotInProcess):
        gen_server.abcast(["b@127.0.0.1"], "x", "y")


def test_a_gen_server_instance_may_be_started_and_defaults_apply(caplog):
    """Default callbacks: init keeps arg, handle_info logs, code_change keeps the state."""

    async def main():
        pid = await gen_server.start(Minimal(), 42)
        pyotp.send(pid, "stray")
        assert await _system(pid, "get_state") == 42
        await gen_server.stop(pid)
        return True

    with caplog.at_level(logging.WARNING, logger="pyotp.gen_server"):
        assert pyotp.run(main)
    assert "stray" in caplog.text


# ------------------------------------------------------------------ call


def test_call_gets_the_reply_and_async_callbacks_work():
    """Ports gen_server_SUITE:call_remote1 on one node (plain and async callbacks)."""

    async def main():
        pid = await gen_server.start_link(AsyncEcho, pyotp.self())
        assert await gen_server.call(pid, "hi") == ("async", "hi")
        gen_server.cast(pid, "c")
        assert await pyotp.receive(("async_cast", ANY), timeout=5) == ("async_cast", "c")
        pyotp.send(pid, "i")
        assert await pyotp.receive(("async_info", ANY), timeout=5) == ("async_info", "i")
        await gen_server.stop(pid, "normal")
        return await pyotp.receive(("async_terminated", ANY), timeout=5)

    assert pyotp.run(main) == ("async_terminated", "normal")


def test_a_noreply_call_can_be_answered_with_reply():
    """Ports gen_server_SUITE:call_with_huge_message / reply (deferred reply)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        return await gen_server.call(pid, "later")

    assert pyotp.run(main) == "early reply"


def test_call_to_a_dead_server_raises_call_exit_noproc():
    """Ports gen_server_SUITE:call_remote_n1 (noproc, on one node)."""

    async def main():
        pid = await gen_server.start(Echo, pyotp.self())
        await gen_server.stop(pid)
        with pytest.raises(pyotp.CallExit) as a:
            await gen_server.call(pid, "ping")
        with pytest.raises(pyotp.CallExit) as b:
            await gen_server.call("nobody_here", "ping")
        return a.value.reason, b.value.reason

    assert pyotp.run(main) == ("noproc", "noproc")


def test_call_to_a_server_that_dies_during_the_call_raises_its_reason():
    """Ports gen_server_SUITE:call (the server exits before replying)."""

    async def main():
        pid = await gen_server.start(Echo, pyotp.self())
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(pid, "die_later")
        assert await pyotp.receive(("terminated", ANY), timeout=5) == ("terminated", "oops")
        return info.value.reason

    assert pyotp.run(main) == "oops"


def test_call_timeout_raises_and_the_late_reply_never_reaches_the_mailbox():
    """Ports gen_server_SUITE:call (timeout, then no stray reply message)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        with pytest.raises(pyotp.CallTimeout):
            await gen_server.call(pid, "slow", timeout=0.05)
        gen_server.cast(pid, "release")  # the server now replies to the abandoned call
        assert await gen_server.call(pid, "ping") == "pong"  # ... and has done so
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(timeout=0)
        return True

    assert pyotp.run(main)


def test_a_crash_in_handle_call_runs_terminate_and_exits_with_the_crash(caplog):
    """Ports gen_server_SUITE:crash (terminate called with the crash reason, report logged)."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(pid, "crash")
        _, reason = await pyotp.receive(("terminated", ANY), timeout=5)
        assert await _down(ref) == reason
        return info.value.reason, reason

    with caplog.at_level(logging.ERROR, logger="pyotp.crash"):
        call_reason, term_reason = pyotp.run(main)
    assert isinstance(term_reason, pyotp.Crash)
    assert term_reason.type == "RuntimeError"
    assert call_reason == term_reason
    assert "handle_call blew up" in caplog.text
    assert caplog.text.count("handle_call blew up") >= 1


async def _start_monitored(mod, arg):
    pid = await gen_server.start(mod, arg)
    return pid, pyotp.monitor(pid)


def test_bad_return_value_reason_holds_the_returned_value():
    """Ports gen_server_SUITE:bad_return_value (the reason names the value)."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        with pytest.raises(pyotp.CallExit):
            await gen_server.call(pid, "bad_return")
        reason = await _down(ref)
        return reason[0], reason[1][:2]

    assert pyotp.run(main) == ("bad_return_value", ("repyl", 1))


def test_a_reply_return_with_a_bad_timeout_is_a_bad_return_value_and_sends_no_reply():
    """As OTP: ("reply", r, s, bogus) stops the server before replying; the call exits."""

    async def main():
        reasons = []
        for extra in ("bogus", -1, True, ("continue",)):
            pid, ref = await _start_monitored(Echo, pyotp.self())
            with pytest.raises(pyotp.CallExit) as info:
                await gen_server.call(pid, ("reply_timeout", extra))
            kind, value = info.value.reason
            reasons.append((kind, value[0], value[3]))
            await _down(ref)
        return reasons

    assert pyotp.run(main) == [
        ("bad_return_value", "reply", extra) for extra in ("bogus", -1, True, ("continue",))
    ]


def test_raising_exit_in_a_callback_terminates_with_that_reason():
    """Ports gen_server_SUITE:crash (exit/1 inside a callback)."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        with pytest.raises(pyotp.CallExit):
            await gen_server.call(pid, "exit")
        assert await pyotp.receive(("terminated", ANY), timeout=5) == (
            "terminated",
            "exited_in_callback",
        )
        return await _down(ref)

    assert pyotp.run(main) == "exited_in_callback"


# ------------------------------------------------------------------ cast and info


def test_cast_reaches_handle_cast_and_never_raises():
    """Ports gen_server_SUITE:cast (incl. casts to unknown names and bad destinations)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        assert gen_server.cast(pid, "hello") is None
        gen_server.cast("no_such_name", "x")
        gen_server.cast(("no_such_name", "other@host"), "x")
        gen_server.cast(12, "x")
        return await pyotp.receive(("cast", ANY), timeout=5)

    assert pyotp.run(main) == ("cast", "hello")


def test_a_crash_in_handle_cast_kills_the_server_with_the_crash():
    """Ports gen_server_SUITE:cast (a crashing cast)."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        gen_server.cast(pid, "crash")
        reason = await _down(ref)
        return reason.type

    assert pyotp.run(main) == "KeyError"


def test_stop_returned_from_handle_cast_runs_terminate():
    """Ports gen_server_SUITE:cast ({stop, Reason, State} from handle_cast)."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        gen_server.cast(pid, "stop")
        assert await pyotp.receive(("terminated", ANY), timeout=5) == ("terminated", "cast_stop")
        return await _down(ref)

    assert pyotp.run(main) == "cast_stop"


def test_plain_messages_go_to_handle_info():
    """Ports gen_server_SUITE:info."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        pyotp.send(pid, ("hello", 1))
        return await pyotp.receive(("info", ANY), timeout=5)

    assert pyotp.run(main) == ("info", ("hello", 1))


# ------------------------------------------------------------------ timeouts, continue, hibernate


def test_a_timeout_from_init_delivers_timeout_to_handle_info():
    """Ports gen_server_SUITE:call_timeout / info (timeout from init)."""

    async def main():
        await gen_server.start_link(Echo, ("timeout", pyotp.self(), 0.01))
        return await pyotp.receive(("info", ANY), timeout=5)

    assert pyotp.run(main) == ("info", "timeout")


def test_a_timeout_from_handle_call_is_cancelled_by_the_next_message():
    """Ports gen_server_SUITE:call (a reply with a timeout)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        assert await gen_server.call(pid, ("reply_timeout", 0.02)) == "ok"
        assert await pyotp.receive(("info", ANY), timeout=5) == ("info", "timeout")
        # A long timeout that a message interrupts never fires.
        assert await gen_server.call(pid, ("reply_timeout", 0.2)) == "ok"
        assert await gen_server.call(pid, "ping") == "pong"
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(("info", ANY), timeout=0.4)
        return True

    assert pyotp.run(main)


def test_continue_from_init_runs_before_the_first_message():
    """Ports gen_server_SUITE:continue (from init)."""

    async def main():
        pid = await gen_server.start_link(Echo, ("continue", pyotp.self()))
        assert await gen_server.call(pid, "ping") == "pong"
        first = await pyotp.receive(timeout=5)
        second = await pyotp.receive(timeout=5)
        return first, second

    assert pyotp.run(main) == ("init_done", ("continued", "after_init"))


def test_continue_from_handle_call_runs_after_the_reply():
    """Ports gen_server_SUITE:continue (from handle_call)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        assert await gen_server.call(pid, "continue") == "continuing"
        return await pyotp.receive(("continued", ANY), timeout=5)

    assert pyotp.run(main) == ("continued", "from_call")


def test_hibernate_keeps_serving():
    """Ports gen_server_SUITE:hibernate."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        assert await gen_server.call(pid, "hibernate") == "zzz"
        assert await gen_server.call(pid, "ping") == "pong"
        return True

    assert pyotp.run(main)


# ------------------------------------------------------------------ stop and terminate


def test_stop_runs_terminate_with_the_reason_and_waits():
    """Ports gen_server_SUITE:stop1..stop4 (stop with normal and other reasons)."""

    async def main():
        pid = await gen_server.start(Echo, pyotp.self())
        await gen_server.stop(pid)
        assert await pyotp.receive(("terminated", ANY), timeout=0) == ("terminated", "normal")
        pid = await gen_server.start(Echo, pyotp.self())
        await gen_server.stop(pid, ("shutdown", "why"), timeout=5)
        assert await pyotp.receive(("terminated", ANY), timeout=0) == (
            "terminated",
            ("shutdown", "why"),
        )
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.stop(pid)
        return info.value.reason

    assert pyotp.run(main) == "noproc"


class SelfCaller(gen_server.GenServer):
    """Calls or stops itself from handle_call and replies with what that raised."""

    async def handle_call(self, req, from_, state):
        try:
            if req == "call":
                await gen_server.call(pyotp.self(), "x", timeout=1)
            else:
                await gen_server.stop(req, "normal", timeout=None)
        except pyotp.CallExit as e:
            return ("reply", e.reason, state)
        return ("reply", "returned", state)


def test_a_call_or_stop_to_itself_raises_call_exit_calling_self_at_once():
    """As OTP's {calling_self, ...}: no deadlock, the server stays alive."""

    async def main():
        pid = await gen_server.start(SelfCaller, None, name="selfish")
        got = [await gen_server.call(pid, req, timeout=2) for req in ("call", pid, "selfish")]
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.stop(pyotp.self(), timeout=1)
        got.append(info.value.reason)
        got.append(await gen_server.call(pid, "call", timeout=2))
        return got

    assert pyotp.run(main) == ["calling_self"] * 5


def test_stop_returned_from_handle_call_replies_after_terminate():
    """Ports gen_server_SUITE:call ({stop, Reason, Reply, State})."""

    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        assert await gen_server.call(pid, "stop_with_reply") == "bye"
        assert await pyotp.receive(("terminated", ANY), timeout=5) == ("terminated", "normal")
        return await _down(ref)

    assert pyotp.run(main) == "normal"


def test_stop_without_reply_from_handle_call_fails_the_call_with_the_reason():
    """Ports gen_server_SUITE:call ({stop, Reason, State} from handle_call)."""

    async def main():
        pid = await gen_server.start(Echo, pyotp.self())
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(pid, "stop_no_reply")
        return info.value.reason

    assert pyotp.run(main) == "gone"


async def _middle(watcher):
    pid = await gen_server.start_link(Echo, ("trap", watcher))
    pyotp.send(watcher, ("server", pid))
    await pyotp.receive("go")
    raise pyotp.Exit("parent_gone")


def test_a_trapping_server_runs_terminate_when_its_parent_exits():
    """Ports gen_server_SUITE:terminate (EXIT from the parent while trapping exits)."""

    async def main():
        middle = pyotp.spawn(_middle, pyotp.self())
        _, pid = await pyotp.receive(("server", ANY), timeout=5)
        ref = pyotp.monitor(pid)
        pyotp.send(middle, "go")
        term = await pyotp.receive(("terminated", ANY), timeout=5)
        return term, await _down(ref)

    assert pyotp.run(main) == (("terminated", "parent_gone"), "parent_gone")


def test_an_exit_from_a_non_parent_goes_to_handle_info():
    """Ports gen_server_SUITE:info (EXIT from a linked non-parent)."""

    async def other(server):
        pyotp.link(server)
        raise pyotp.Exit("bye")

    async def main():
        pid = await gen_server.start_link(Echo, ("trap", pyotp.self()))
        o = pyotp.spawn(other, pid)
        msg = await pyotp.receive(("info", ANY), timeout=5)
        assert await gen_server.call(pid, "ping") == "pong"
        return msg == ("info", ("EXIT", o, "bye"))

    assert pyotp.run(main)


def test_node_shutdown_runs_terminate_of_a_trapping_server():
    """Ports gen_server_SUITE:terminate (shutdown of the whole node)."""
    seen = []

    class Recorder(gen_server.GenServer):
        def init(self, arg):
            pyotp.process_flag("trap_exit", True)
            return ("ok", arg)

        def terminate(self, reason, state):
            seen.append(reason)

    async def main():
        await gen_server.start(Recorder, None)  # unlinked: main's normal exit is no signal

    pyotp.run(main)
    assert seen == ["shutdown"]


def test_a_trapping_server_linked_to_its_parent_terminates_normal_when_it_returns():
    """Ports gen_server_SUITE:terminate (parent exits normally)."""
    seen = []

    class Recorder(gen_server.GenServer):
        def init(self, arg):
            pyotp.process_flag("trap_exit", True)
            return ("ok", arg)

        def terminate(self, reason, state):
            seen.append(reason)

    async def main():
        await gen_server.start_link(Recorder, None)

    pyotp.run(main)
    assert seen == ["normal"]


# ------------------------------------------------------------------ multi_call, abcast


def test_multi_call_on_one_node_answers_locally_and_lists_bad_nodes():
    """Ports gen_server_SUITE:multicall (one node) and multicall_down."""

    async def main():
        await gen_server.start_link(Echo, pyotp.self(), name="mc")
        here = pyotp.node()
        r1 = await gen_server.multi_call(None, "mc", "ping", timeout=5)
        r2 = await gen_server.multi_call([here, "down@nowhere"], "mc", "ping")
        r3 = await gen_server.multi_call([here], "nobody", "ping", timeout=1)
        return r1, r2, r3, here

    r1, r2, r3, here = pyotp.run(main)
    assert r1 == ([(here, "pong")], [])
    assert r2 == ([(here, "pong")], ["down@nowhere"])
    assert r3 == ([], [here])


def test_multi_call_timeout_puts_the_node_in_bad_nodes_without_a_stray_reply():
    """Ports gen_server_SUITE:multicall_timeout."""

    async def main():
        await gen_server.start_link(Echo, pyotp.self(), name="slowmc")
        r = await gen_server.multi_call(None, "slowmc", "slow", timeout=0.05)
        gen_server.cast("slowmc", "release")
        assert await gen_server.call("slowmc", "ping") == "pong"
        with pytest.raises(pyotp.Timeout):
            await pyotp.receive(timeout=0)
        return r

    assert pyotp.run(main) == ([], ["nonode@nohost"])


def test_abcast_casts_to_the_named_server_and_returns_none():
    """Ports gen_server_SUITE:abcast."""

    async def main():
        await gen_server.start_link(Echo, pyotp.self(), name="ab")
        assert gen_server.abcast(None, "ab", "x") is None
        assert gen_server.abcast([pyotp.node(), "gone@nowhere"], "nobody", "x") is None
        return await pyotp.receive(("cast", ANY), timeout=5)

    assert pyotp.run(main) == ("cast", "x")


def test_multi_call_and_abcast_reach_servers_on_other_nodes(peer):
    """Ports gen_server_SUITE:multicall_remote and abcast (with real nodes)."""
    import dist_helpers as h
    from conftest import COOKIE, T, free_port, node_name

    b, c = peer("b"), peer("c")  # c connected but without the server: a bad node

    async def main():
        for n in (b.name, c.name):
            assert await pyotp.net.connect(n)
        await gen_server.start(h.Casted, None, name="mcr")
        await pyotp.rpc.call(b.name, h.start_casted, "mcr", timeout=T)
        ghost = f"ghost@127.0.0.1:{free_port()}"  # refuses connections: a bad node
        here = pyotp.node()
        gen_server.abcast(None, "mcr", "hi")
        gen_server.abcast([ghost], "mcr", "lost")
        replies, bad = await gen_server.multi_call(
            [here, b.name, c.name, ghost], "mcr", "get", timeout=T)
        late, late_bad = await gen_server.multi_call(None, "mcr", ("sleep", 2), timeout=0.2)
        with pytest.raises(pyotp.Timeout):  # no late reply lands in the mailbox
            await pyotp.receive(timeout=2.5)
        return here, replies, sorted(bad), ghost, late, sorted(late_bad)

    here, replies, bad, ghost, late, late_bad = pyotp.run(
        main, name=node_name("a"), cookie=COOKIE, config={"kernel": {"net_ticktime": 1}})
    assert sorted(replies) == sorted([(here, (here, ["hi"])), (b.name, (b.name, ["hi"]))])
    assert bad == sorted([c.name, ghost])
    assert late == [] and late_bad == sorted([here, b.name, c.name])


# ------------------------------------------------------------------ system messages


def test_system_messages_get_and_replace_state_and_status():
    """Ports gen_server_SUITE:get_state, replace_state, call_format_status."""

    async def main():
        pid = await gen_server.start_link(Minimal, 1, name="sysd")
        assert await _system(pid, "get_state") == 1
        assert await _system(pid, ("replace_state", lambda s: s + 1)) == 2
        failed = await _system(pid, ("replace_state", lambda s: 1 / 0))
        assert failed[0] == "error"
        assert await _system(pid, "get_state") == 2
        status = await _system(pid, "get_status")
        assert status[0] == "status" and status[1] == pid
        assert status[3][1] == "running"
        return True

    assert pyotp.run(main)


def test_a_suspended_server_queues_calls_until_resumed():
    """Ports gen_server_SUITE:suspend (sys:suspend / sys:resume)."""

    async def main():
        pid = await gen_server.start_link(Echo, pyotp.self())
        assert await _system(pid, "suspend") == "ok"
        with pytest.raises(pyotp.CallTimeout):
            await gen_server.call(pid, "ping", timeout=0.05)
        gen_server.cast(pid, "queued")
        assert (await _system(pid, "get_status"))[3][1] == "suspended"
        assert await _system(pid, "resume") == "ok"
        assert await pyotp.receive(("cast", ANY), timeout=5) == ("cast", "queued")
        assert await gen_server.call(pid, "ping") == "pong"
        return True

    assert pyotp.run(main)


def test_code_change_system_message_runs_code_change():
    """Ports gen_server_SUITE:code_change."""

    class V2(gen_server.GenServer):
        def code_change(self, old_vsn, state, extra):
            return ("ok", (old_vsn, state, extra))

    async def main():
        pid = await gen_server.start_link(V2, "s")
        assert await _system(pid, ("code_change", __name__, "1", "x")) == "ok"
        return await _system(pid, "get_state")

    assert pyotp.run(main) == ("1", "s", "x")


def test_stop_via_system_message_in_suspended_state_still_terminates():
    async def main():
        pid, ref = await _start_monitored(Echo, pyotp.self())
        assert await _system(pid, "suspend") == "ok"
        await gen_server.stop(pid, "normal", timeout=5)
        return await _down(ref)

    assert pyotp.run(main) == "normal"


class _TrapReporter(gen_server.GenServer):
    """Traps exits; reports every info and its terminate to the pid it was started with."""

    def init(self, watcher):
        pyotp.process_flag("trap_exit", True)
        return ("ok", watcher)

    def handle_info(self, msg, watcher):
        pyotp.send(watcher, ("info", msg))
        return ("noreply", watcher)

    def terminate(self, reason, watcher):
        pyotp.send(watcher, ("terminate", reason))


def test_a_server_started_without_link_is_its_own_parent():
    """OTP: gen_server:start makes the server its own parent, so an EXIT from the starter is
    an ordinary message for handle_info; with start_link the same EXIT ends the server."""

    async def main():
        me = pyotp.self()
        pid = await gen_server.start(_TrapReporter, me)
        pyotp.exit(pid, "other")
        got = await pyotp.receive(timeout=5)
        alive = await pyotp.process_info(pid) is not None
        await gen_server.stop(pid)
        await pyotp.receive(("terminate", ANY), timeout=5)
        pyotp.process_flag("trap_exit", True)
        linked = await gen_server.start_link(_TrapReporter, me)
        pyotp.exit(linked, "other")
        ended = await pyotp.receive(("terminate", ANY), timeout=5)
        return got, alive, ended

    got, alive, ended = pyotp.run(main)
    assert got[0] == "info" and got[1][0] == "EXIT" and got[1][2] == "other"
    assert alive
    assert ended == ("terminate", "other")


_TERMINATED: list = []


class _RecordsTerminate(gen_server.GenServer):
    def init(self, arg):
        pyotp.process_flag("trap_exit", True)
        return ("ok", arg)

    def terminate(self, reason, state):
        _TERMINATED.append(reason)  # same OS process: one scheduler


def test_node_shutdown_still_runs_terminate_of_an_unlinked_trapping_server():
    """At node shutdown an unlinked server (its own parent) gets its "shutdown" EXIT from
    itself and runs terminate, as a linked one does."""
    _TERMINATED.clear()

    async def main():
        await gen_server.start(_RecordsTerminate, None)
        return "done"

    assert pyotp.run(main, schedulers=1) == "done"
    assert _TERMINATED == ["shutdown"]


def test_a_cast_of_a_non_term_to_another_scheduler_raises_not_serializable():
    """A cast never raises for its destination, but a message that cannot cross to the
    server's scheduler is the caller's error, named clearly."""

    async def main():
        pid = await gen_server.start(Echo, pyotp.self(), scheduler=1)
        with pytest.raises(pyotp.NotSerializable):
            gen_server.cast(pid, lambda: None)
        gen_server.cast("nobody_has_this_name", "dropped")  # still never raises
        await gen_server.stop(pid)
        return True

    assert pyotp.run(main, schedulers=2)


class _BadReply(gen_server.GenServer):
    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, state):
        return ("reply", {3}, state)  # a set is no term: it cannot cross to the caller


def test_a_reply_that_cannot_cross_crashes_the_server_and_the_caller_hears_at_once():
    """The server dies of NotSerializable; its caller (another scheduler) gets CallExit
    with that crash, not a CallTimeout (the server's side of the monitor was released
    before the reply failed to encode)."""

    async def main():
        pid = await gen_server.start(_BadReply, None, scheduler=1)
        with pytest.raises(pyotp.CallExit) as info:
            await gen_server.call(pid, "x", timeout=30)
        return info.value.reason

    reason = pyotp.run(main, schedulers=2)
    assert isinstance(reason, pyotp.Crash) and "NotSerializable" in str(reason)
