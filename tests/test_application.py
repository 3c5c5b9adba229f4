"""Applications: load, start, stop, dependencies, env from the node config, restart types."""

from __future__ import annotations

import logging

import pytest

import pyotp
from pyotp import application, gen_server, supervisor
from pyotp.application import App, Application

WAIT = 5.0


async def _top():
    """A stand-in top supervisor: dies with its parent's exit reason or on ("die", reason)."""
    pyotp.process_flag("trap_exit", True)
    while True:
        msg = await pyotp.receive()
        if msg[0] == "EXIT":
            raise pyotp.Exit(msg[2])
        if msg[0] == "die":
            raise pyotp.Exit(msg[1])


class Probe(Application):
    """Reports every callback to the process registered as "probe"; args = the app's name."""

    def start(self, start_type, args):
        top = pyotp.spawn_link(_top)
        pyotp.send("probe", ("start", args, start_type, top, pyotp.self()))
        return top, {"name": args, "top": top}

    def prep_stop(self, state):
        pyotp.send("probe", ("prep_stop", state["name"]))
        return {**state, "prepped": True}

    async def stop(self, state):
        alive = await pyotp.process_info(state["top"]) is not None
        pyotp.send("probe", ("stop", state["name"], state.get("prepped", False), alive))


def _app(name, deps=(), **kw):
    return App(name, mod=Probe, vsn="1.0", description=f"the {name} app",
               applications=list(deps), start_args=name, **kw)


async def _probe():
    await pyotp.register("probe", pyotp.self())


async def _started(name):
    """Wait for the start report of `name`; return (start_type, top, master)."""
    msg = await pyotp.receive(("start", name, pyotp.ANY, pyotp.ANY, pyotp.ANY), timeout=WAIT)
    return msg[2], msg[3], msg[4]


async def _wait_down(pid):
    ref = pyotp.monitor(pid)
    return (await pyotp.receive(("DOWN", ref, "process", pid, pyotp.ANY), timeout=WAIT))[4]


def _reason(coro_fn):
    """Run `coro_fn` in a node; return the OtpError reason it raised."""

    async def main():
        try:
            await coro_fn()
        except pyotp.OtpError as e:
            return e.reason
        return "no error"

    return pyotp.run(main)


# --------------------------------------------------------------------- load


def test_load_makes_an_application_known_exactly_once():
    """Ports application_SUITE:load (the local part: a second load is an error)."""

    async def main():
        app = _app("shop")
        application.load(app)
        assert application.loaded_applications() == [("shop", "the shop app", "1.0")]
        assert application.which_applications() == []
        try:
            application.load(_app("shop"))
        except pyotp.OtpError as e:
            return e.reason

    assert pyotp.run(main) == ("already_loaded", "shop")


def test_app_rejects_bad_arguments_with_badarg():
    with pytest.raises(pyotp.BadArg, match="non-empty str name"):
        App("")
    with pytest.raises(pyotp.BadArg, match="Application subclass"):
        App("x", mod=object)
    with pytest.raises(pyotp.BadArg, match="applications="):
        App("x", applications="y")
    with pytest.raises(pyotp.BadArg, match="depend on itself"):
        App("x", applications=["x"])
    with pytest.raises(pyotp.BadArg, match="env="):
        App("x", env={1: 2})
    with pytest.raises(pyotp.BadArg, match="vsn="):
        App("x", vsn=1)


def test_application_calls_outside_a_node_raise_not_in_process():
    with pytest.raises(pyotp.NotInProcess):
        application.which_applications()
    with pytest.raises(pyotp.NotInProcess):
        application.get_env("x", "k")


# --------------------------------------------------------------------- start, stop


def test_start_runs_the_start_callback_and_which_applications_lists_the_app():
    """Ports application_SUITE:ensure_started (start, then a second start is an error)."""

    async def main():
        await _probe()
        await application.start(_app("shop"))
        start_type, top, master = await _started("shop")
        assert start_type == "normal"
        assert top != master
        assert application.which_applications() == [("shop", "the shop app", "1.0")]
        try:
            await application.start("shop")
        except pyotp.OtpError as e:
            return e.reason

    assert pyotp.run(main) == ("already_started", "shop")


def test_stop_runs_prep_stop_then_stops_the_tree_then_calls_stop():
    """Ports application_SUITE:shutdown_func (prep_stop and stop around the tree's end)."""

    async def main():
        await _probe()
        await application.start(_app("shop"))
        _, top, _ = await _started("shop")
        await application.stop("shop")
        assert await pyotp.receive(timeout=0) == ("prep_stop", "shop")
        # stop/1 sees the state from prep_stop and runs once the top process is gone.
        assert await pyotp.receive(timeout=0) == ("stop", "shop", True, False)
        assert await pyotp.process_info(top) is None
        assert application.which_applications() == []
        assert [a[0] for a in application.loaded_applications()] == ["shop"]
        await application.start("shop")  # a stopped application can start again
        await _started("shop")
        return True

    assert pyotp.run(main)


class _SlowStart(Application):
    """Takes a moment to start; fails with ("error", args) when args is a str."""

    async def start(self, start_type, args):
        try:
            await pyotp.receive(("never",), timeout=0.3)
        except pyotp.Timeout:
            pass
        return ("error", args) if isinstance(args, str) else pyotp.spawn_link(_top)


async def _start_reporting(parent, name):
    try:
        await application.start(name)
        pyotp.send(parent, ("other", "ok"))
    except pyotp.OtpError as e:
        pyotp.send(parent, ("other", e.reason))


def test_a_start_while_the_same_application_is_starting_waits_and_shares_its_result():
    """As Erlang's application_controller: a second start of an application that is still
    starting is answered with the first start's result (not already_started)."""

    async def main():
        application.load(App("slow", mod=_SlowStart))
        application.load(App("bad", mod=_SlowStart, start_args="nope"))
        out = []
        for name in ("slow", "bad"):
            pyotp.spawn(_start_reporting, pyotp.self(), name)
            try:
                await pyotp.receive(("never",), timeout=0.05)
            except pyotp.Timeout:
                pass
            try:
                await application.start(name)
                mine = "ok"
            except pyotp.OtpError as e:
                mine = e.reason[0]
            other = (await pyotp.receive(("other", pyotp.ANY), timeout=WAIT))[1]
            out.append((mine, other if other == "ok" else other[0]))
        return out, [a[0] for a in application.which_applications()]

    assert pyotp.run(main) == ([("ok", "ok"), ("nope", "nope")], ["slow"])


def test_stop_of_an_application_that_is_not_started_is_an_error():
    """Ports application_SUITE:otp_1586 style stop errors: {error, {not_started, App}}."""

    async def not_running():
        application.load(_app("shop"))
        await application.stop("shop")

    async def unknown():
        await application.stop("nope")

    assert _reason(not_running) == ("not_started", "shop")
    assert _reason(unknown) == ("not_started", "nope")


def test_start_of_an_unknown_name_says_it_is_not_loaded():
    async def unknown():
        await application.start("nope")

    assert _reason(unknown) == ("not_loaded", "nope")


def test_start_with_a_dependency_not_started_is_an_error():
    """Ports application_SUITE:ensure_started (start with a missing dependency)."""

    async def go():
        application.load(_app("base"))
        await application.start(_app("shop", deps=["base"]))

    assert _reason(go) == ("not_started", "base")


def test_start_failures_carry_erlangs_reasons():
    class Refuses(Application):
        def start(self, start_type, args):
            return ("error", "no_db")

    class Returns42(Application):
        def start(self, start_type, args):
            return 42

    class Raises(Application):
        def start(self, start_type, args):
            raise ValueError("bad config")

    mod_name = f"{__name__}.test_start_failures_carry_erlangs_reasons.<locals>"

    async def refuses():
        await application.start(App("a", mod=Refuses, start_args=[1]))

    async def bad_return():
        await application.start(App("a", mod=Returns42))

    async def raises():
        await application.start(App("a", mod=Raises))

    assert _reason(refuses) == ("no_db", (f"{mod_name}.Refuses", "start", ["normal", [1]]))
    assert _reason(bad_return) == (
        "bad_return",
        ((f"{mod_name}.Returns42", "start", ["normal", []]), 42),
    )
    crash, mfa = _reason(raises)
    assert isinstance(crash, pyotp.Crash)
    assert "bad config" in str(crash)
    assert mfa[1:] == ("start", ["normal", []])


def test_a_failed_start_leaves_the_application_loaded_and_not_started():
    class Refuses(Application):
        def start(self, start_type, args):
            return ("error", "no")

    async def main():
        try:
            await application.start(App("a", mod=Refuses))
        except pyotp.OtpError:
            pass
        assert application.which_applications() == []
        assert [a[0] for a in application.loaded_applications()] == ["a"]
        return True

    assert pyotp.run(main)


def test_start_accepts_erlang_ok_tuples_and_async_start_callbacks():
    class OkTuple(Application):
        async def start(self, start_type, args):
            return ("ok", pyotp.spawn_link(_top), "st")

        def stop(self, state):
            pyotp.send("probe", ("stopped", state))

    async def main():
        await _probe()
        await application.start(App("a", mod=OkTuple))
        await application.stop("a")
        return await pyotp.receive(timeout=0)

    assert pyotp.run(main) == ("stopped", "st")


def test_a_library_application_without_mod_starts_and_stops():
    async def main():
        await application.start(App("lib", vsn="2"))
        assert application.which_applications() == [("lib", "", "2")]
        await application.stop("lib")
        return application.which_applications()

    assert pyotp.run(main) == []


def test_takeover_on_one_node_starts_with_a_takeover_start_type():
    async def main():
        await _probe()
        await application.takeover(_app("shop"), "permanent")
        start_type, _, _ = await _started("shop")
        return start_type

    assert pyotp.run(main) == ("takeover", "nonode@nohost")


def test_start_rejects_an_unknown_restart_type():
    async def main():
        await application.start(_app("shop"), "sometimes")

    with pytest.raises(pyotp.ProcessCrash) as ei:
        pyotp.run(main)
    assert "temporary" in str(ei.value.reason)


def test_an_unknown_restart_type_is_a_badarg_with_erlangs_reason():
    """Erlang: {error, {invalid_restart_type, T}}; here a BadArg carrying that reason."""

    async def main():
        out = []
        for call in (application.start, application.ensure_all_started):
            try:
                await call(_app("shop"), "sometimes")
            except pyotp.BadArg as e:
                out.append(e.reason)
        return out

    assert pyotp.run(main) == [("invalid_restart_type", "sometimes")] * 2


# --------------------------------------------------------------------- ensure_all_started


def test_ensure_all_started_starts_dependencies_first_in_order():
    """Ports application_SUITE:ensure_all_started."""

    async def main():
        await _probe()
        c = _app("c")
        b = _app("b", deps=["c"])
        application.load(c)
        application.load(b)
        a = _app("a", deps=["b", c])
        started = await application.ensure_all_started(a)
        order = [(await pyotp.receive(timeout=0))[1] for _ in range(3)]
        again = await application.ensure_all_started("a")
        return started, order, again, [x[0] for x in application.which_applications()]

    started, order, again, running = pyotp.run(main)
    assert started == ["c", "b", "a"]
    assert order == ["c", "b", "a"]
    assert again == []
    assert running == ["a", "b", "c"]  # newest first, as Erlang lists them


def test_ensure_all_started_skips_dependencies_that_run_already():
    """Ports application_SUITE:ensure_all_started (already started dependencies)."""

    async def main():
        await _probe()
        await application.start(_app("c"))
        return await application.ensure_all_started(_app("a", deps=[_app("c")]))

    assert pyotp.run(main) == ["a"]


def test_ensure_all_started_stops_what_it_started_when_a_start_fails():
    class Refuses(Application):
        def start(self, start_type, args):
            return ("error", "no")

    async def main():
        await _probe()
        bad = App("bad", mod=Refuses, applications=[_app("dep")])
        try:
            await application.ensure_all_started(bad)
        except pyotp.OtpError as e:
            assert e.reason[0] == "bad" and e.reason[1][0] == "no"
        assert application.which_applications() == []
        return [(await pyotp.receive(timeout=0))[0] for _ in range(3)]

    assert pyotp.run(main) == ["start", "prep_stop", "stop"]


def test_ensure_all_started_reports_circular_dependencies():
    async def go():
        application.load(_app("x", deps=["y"]))
        application.load(_app("y", deps=["x"]))
        await application.ensure_all_started("x")

    assert _reason(go) == ("circular_dependencies", ["x", "y", "x"])


def test_ensure_all_started_with_an_unloaded_dependency_names_it():
    async def go():
        await application.ensure_all_started(_app("a", deps=["ghost"]))

    assert _reason(go) == ("ghost", ("not_loaded", "ghost"))


def test_ensure_all_started_refuses_a_wrong_argument_with_badarg():
    """It raised OtpError(("a", "badarg")): the first letter of "badarg" as the app name."""

    async def main():
        for bad in (5, None, ""):
            with pytest.raises(pyotp.BadArg, match="application name") as info:
                await application.ensure_all_started(bad)
            assert info.value.reason == "badarg"
        return True

    assert pyotp.run(main)


def test_ensure_all_started_names_the_application_that_failed_to_start():
    """Follows application:ensure_all_started/2's doc: `{error, {AppName, Reason}}` when an
    application fails to start (checked in erl, OTP 25), unlike start/2's bare reason."""

    class Refuses(Application):
        def start(self, start_type, args):
            return ("error", "why")

    async def go():
        await application.ensure_all_started(App("top", applications=[App("dep", mod=Refuses)]))

    reason = _reason(go)
    assert reason[0] == "dep"
    assert reason[1][0] == "why"


# --------------------------------------------------------------------- env


def test_env_from_the_node_config_overrides_the_app_env():
    """Ports application_SUITE:get_env (env from the .app file overridden by sys.config)."""

    async def main():
        application.load(_app("shop", env={"port": 8080, "host": "localhost"}))
        got = (
            application.get_env("shop", "port"),
            application.get_env("shop", "host"),
            application.get_env("shop", "missing", "dflt"),
            application.get_env("other", "k"),  # config of an app that is not loaded
        )
        application.set_env("shop", "port", 1)
        return got, application.get_env("shop", "port"), application.get_all_env("shop")

    config = {"shop": {"port": 9090}, "other": {"k": "v"}, "kernel": {"net_ticktime": 60}}
    got, after, env = pyotp.run(main, config=config)
    assert got == (9090, "localhost", "dflt", "v")
    assert after == 1
    assert env == {"port": 1, "host": "localhost"}


def test_env_set_before_load_keeps_the_keys_the_app_and_config_do_not_set():
    """As Erlang: load overrides only the keys of the .app env and sys.config; the others
    set with set_env before the load stay."""

    async def main():
        application.set_env("shop", "extra", 3)
        application.set_env("shop", "port", 99)
        application.set_env("shop", "host", "h")
        application.load(_app("shop", env={"port": 8080}))
        return application.get_all_env("shop")

    env = pyotp.run(main, config={"shop": {"host": "cfg"}})
    assert env == {"extra": 3, "port": 8080, "host": "cfg"}


def test_env_reads_a_toml_config_file(tmp_path):
    path = tmp_path / "sys.toml"
    path.write_text('[kernel]\nnet_ticktime = 60\n[shop]\nport = 9090\nhosts = ["a", "b"]\n')

    async def main():
        application.load(_app("shop", env={"port": 1}))
        return application.get_all_env("shop")

    assert pyotp.run(main, config=str(path)) == {"port": 9090, "hosts": ["a", "b"]}
    assert pyotp.run(main, config=path) == {"port": 9090, "hosts": ["a", "b"]}


def test_a_bad_config_file_is_a_badarg_naming_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[shop\nport = ")
    not_a_table = tmp_path / "flat.toml"
    not_a_table.write_text("port = 1\n")

    async def main():
        return None

    with pytest.raises(pyotp.BadArg, match=r"bad\.toml"):
        pyotp.run(main, config=str(bad))
    with pytest.raises(pyotp.BadArg, match=r"missing\.toml"):
        pyotp.run(main, config=str(tmp_path / "missing.toml"))
    with pytest.raises(pyotp.BadArg, match="'port' must be a table"):
        pyotp.run(main, config=str(not_a_table))


def test_a_bad_net_ticktime_or_attributes_are_refused_before_the_node_boots(tmp_path):
    """net_ticktime "x" crashed a distributed boot with a raw ValueError; -1 or 0 was taken
    (a node ticking every 0 s); attributes that other nodes cannot read were taken too."""
    text = tmp_path / "tick.toml"
    text.write_text('[kernel]\nnet_ticktime = "x"\n')

    async def main():
        return None

    with pytest.raises(pyotp.BadArg, match="net_ticktime"):
        pyotp.run(main, config=str(text))
    for bad in ("x", -1, 0, True, float("nan")):
        with pytest.raises(pyotp.BadArg, match="net_ticktime"):
            pyotp.run(main, config={"kernel": {"net_ticktime": bad}})
    with pytest.raises(pyotp.BadArg, match="str keys"):
        pyotp.run(main, attributes={1: "x"})
    with pytest.raises(pyotp.BadArg, match="set"):
        pyotp.run(main, attributes={"zone": {"a"}})
    assert pyotp.run(main, config={"kernel": {"net_ticktime": 0.5}}, attributes={"z": 1}) is None


# --------------------------------------------------------------------- restart types


def test_a_temporary_app_whose_top_dies_is_only_reported_stopped(caplog):
    """Ports application_SUITE:otp_2012 style exits: a temporary app's death is reported."""

    async def main():
        await _probe()
        await application.start(_app("tmp"), "temporary")
        _, top, master = await _started("tmp")
        pyotp.send(top, ("die", "boom"))
        assert await _wait_down(master) == "boom"
        assert await pyotp.receive(timeout=0) == ("prep_stop", "tmp")
        assert (await pyotp.receive(timeout=0))[:2] == ("stop", "tmp")
        return application.which_applications()

    with caplog.at_level(logging.INFO, logger="pyotp.application"):
        assert pyotp.run(main) == []
    assert any("tmp" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)


def test_a_transient_app_that_exits_normally_does_not_stop_the_node():
    async def main():
        await _probe()
        await application.start(_app("tr"), "transient")
        _, top, master = await _started("tr")
        pyotp.send(top, ("die", "normal"))
        assert await _wait_down(master) == "normal"
        return "node still up"

    assert pyotp.run(main) == "node still up"


def _node_goes_down(type_, reason):
    seen = []

    async def bystander():
        pyotp.process_flag("trap_exit", True)
        msg = await pyotp.receive(("EXIT", pyotp.ANY, pyotp.ANY))
        seen.append(msg[2])

    async def main():
        await _probe()
        pyotp.spawn(bystander)
        await application.start(_app("core"), type_)
        _, top, _ = await _started("core")
        pyotp.send(top, ("die", reason))
        await pyotp.receive(("never",), timeout=WAIT)
        return "node survived"

    with pytest.raises(pyotp.ProcessCrash) as ei:
        pyotp.run(main)
    return ei.value.reason, seen


def test_a_permanent_app_whose_top_dies_takes_the_node_down():
    """Ports application_SUITE:otp_5606 style exits: a permanent app's death stops the node."""
    reason, seen = _node_goes_down("permanent", "boom")
    assert reason == ("application_terminated", "core", "boom")
    assert seen == ["shutdown"]


def test_a_permanent_app_takes_the_node_down_even_when_its_top_exits_normally():
    reason, _ = _node_goes_down("permanent", "normal")
    assert reason == ("application_terminated", "core", "normal")


def test_a_transient_app_that_dies_abnormally_takes_the_node_down():
    reason, seen = _node_goes_down("transient", "boom")
    assert reason == ("application_terminated", "core", "boom")
    assert seen == ["shutdown"]


def test_a_killed_application_master_ends_the_application_by_its_restart_type():
    """As Erlang's application_controller (linked to every master): a master killed from
    outside ends the application with reason killed; a temporary one can start again."""

    async def main():
        await _probe()
        await application.start(_app("tmp"))
        _, top, master = await _started("tmp")
        pyotp.exit(master, "kill")
        assert await _wait_down(top) == "killed"
        for _ in range(50):
            if not application.which_applications():
                break
            try:
                await pyotp.receive(("never",), timeout=0.02)
            except pyotp.Timeout:
                pass
        gone = application.which_applications()
        await application.start("tmp")
        return gone, [a[0] for a in application.which_applications()]

    assert pyotp.run(main) == ([], ["tmp"])

    async def permanent():
        await _probe()
        await application.start(_app("core"), "permanent")
        _, _, master = await _started("core")
        pyotp.exit(master, "kill")
        await pyotp.receive(("never",), timeout=WAIT)

    with pytest.raises(pyotp.ProcessCrash) as ei:
        pyotp.run(permanent)
    assert ei.value.reason == ("application_terminated", "core", "killed")


def test_stopping_a_permanent_app_does_not_take_the_node_down():
    async def main():
        await _probe()
        await application.start(_app("core"), "permanent")
        await application.stop("core")
        return application.which_applications()

    assert pyotp.run(main) == []


def test_a_running_app_is_stopped_with_the_node():
    stops = []

    class Recorder(Application):
        def start(self, start_type, args):
            return pyotp.spawn_link(_top)

        def stop(self, state):
            stops.append("stopped")

    async def main():
        await application.start(App("r", mod=Recorder), "permanent")
        return "done"

    assert pyotp.run(main) == "done"
    assert stops == ["stopped"]


# --------------------------------------------------------------------- with a real supervisor


class _Worker(gen_server.GenServer):
    def init(self, arg):
        pyotp.process_flag("trap_exit", True)  # so terminate runs on shutdown
        pyotp.send("probe", ("worker_up", pyotp.self()))
        return ("ok", arg)

    def handle_call(self, req, from_, s):
        return ("reply", s, s)

    def terminate(self, reason, s):
        pyotp.send("probe", ("worker_down", reason))


class _Sup(supervisor.Supervisor):
    def init(self, arg):
        flags = {"strategy": "one_for_one", "intensity": 1, "period": 5}
        child = {"id": "w", "start": (gen_server.start_link, (_Worker, arg), {"name": "w"}),
                 "restart": "permanent", "shutdown": 5.0, "type": "worker"}
        return ("ok", (flags, [child]))


class _SupApp(Application):
    async def start(self, start_type, args):
        return await supervisor.start_link(_Sup, args, name="top_sup")

    def stop(self, state):
        pyotp.send("probe", ("app_stop", pyotp.whereis("top_sup")))


def test_an_application_with_a_supervision_tree_starts_and_stops_it_whole():
    """Ports application_SUITE:shutdown_func with a real supervisor tree."""

    async def main():
        await _probe()
        await application.start(App("tree", mod=_SupApp, start_args="hi"))
        w1 = (await pyotp.receive(("worker_up", pyotp.ANY), timeout=WAIT))[1]
        assert await gen_server.call("w", "get") == "hi"
        pyotp.exit(w1, "kill")  # the supervisor heals it; the app keeps running
        await pyotp.receive(("worker_up", pyotp.ANY), timeout=WAIT)
        assert [a[0] for a in application.which_applications()] == ["tree"]
        await application.stop("tree")
        return [await pyotp.receive(timeout=0) for _ in range(2)]

    assert pyotp.run(main) == [("worker_down", "shutdown"), ("app_stop", None)]


def test_a_permanent_app_whose_supervisor_gives_up_takes_the_node_down():
    """Ports application_SUITE:otp_5606 style exits with a real supervisor (intensity hit)."""

    async def main():
        await _probe()
        await application.start(App("tree", mod=_SupApp, start_args=0), "permanent")
        for _ in range(2):  # intensity 1: the second crash within 5 s ends the supervisor
            pid = (await pyotp.receive(("worker_up", pyotp.ANY), timeout=WAIT))[1]
            pyotp.exit(pid, "kill")
        await pyotp.receive(("never",), timeout=WAIT)

    with pytest.raises(pyotp.ProcessCrash) as ei:
        pyotp.run(main)
    assert ei.value.reason == ("application_terminated", "tree", "shutdown")
