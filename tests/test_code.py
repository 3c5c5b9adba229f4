"""pyotp.code.upgrade: reload a module and run code_change in its behaviour processes.

Each test writes a real callback module to a temporary directory on `sys.path`, starts
processes of it, rewrites the file and upgrades. Ports the spirit of OTP's
`lib/sasl/test/release_handler_SUITE.erl` (upgrade_gen_server cases) and
`lib/stdlib/test/gen_server_SUITE.erl:code_change`.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid

import pytest
from conftest import COOKIE, node_name

import pyotp
from pyotp import code, gen_server, gen_statem

WAIT = 10.0

SERVER = '''
from pyotp import gen_server
{vsn_line}

class Srv(gen_server.GenServer):
    def init(self, arg):
        return ("ok", {{"log": []}})

    def handle_call(self, req, from_, s):
        return ("reply", ({tag!r}, s), s)

    def handle_cast(self, msg, s):
        return ("noreply", {{**s, "log": s["log"] + [msg]}})

    def code_change(self, old_vsn, s, extra):
{code_change}


async def start_server():
    return await gen_server.start(Srv, None)
'''

STATEM = '''
from pyotp import gen_statem

class Door(gen_statem.GenStatem):
    callback_mode = "handle_event_function"

    def init(self, arg):
        return ("ok", "closed", 0)

    def handle_event(self, etype, content, state, data):
        if type(etype) is tuple and etype[0] == "call":
            return ("keep_state", data, [("reply", etype[1], ({tag!r}, state, data))])
        return "keep_state_and_data"

    def code_change(self, old_vsn, state, data, extra):
        return ("ok", "upgraded", (old_vsn, extra))
'''

KEEP = '        return ("ok", s)'
CHANGE = '        return ("ok", {**s, "old_vsn": old_vsn, "extra": extra})'
FAIL = '        raise RuntimeError("cannot upgrade")'


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Write module versions to a fresh directory on sys.path; return (name, write)."""
    name = f"upg_{uuid.uuid4().hex[:10]}"
    path = tmp_path / f"{name}.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(tag, code_change=KEEP, vsn="1", template=SERVER):
        vsn_line = "" if vsn is None else f"__vsn__ = {vsn!r}"
        src = template.format(tag=tag, vsn_line=vsn_line, code_change=code_change)
        path.write_text(textwrap.dedent(src))

    yield name, write
    sys.modules.pop(name, None)


async def feeder(server, n, parent):
    """Cast 0..n-1 to `server`, with a call every 25 casts (it waits out a suspension)."""
    pyotp.send(parent, "feeding")
    for i in range(n):
        gen_server.cast(server, i)
        if i % 25 == 0:
            await gen_server.call(server, "get", timeout=WAIT)
    pyotp.send(parent, "fed")


def test_upgrade_runs_code_change_without_losing_or_reordering_messages(module):
    """Ports release_handler_SUITE:upgrade_gen_server (running server, live traffic)."""
    name, write = module
    write("v1")
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_server.start_link(mod.Srv, None)
        pyotp.spawn(feeder, pid, 2000, pyotp.self())
        await pyotp.receive("feeding", timeout=WAIT)
        write("v2", CHANGE, vsn="2")
        result = await code.upgrade(name, extra="x")
        await pyotp.receive("fed", timeout=WAIT)
        tag, state = await gen_server.call(pid, "get")
        return pid, result, tag, state

    pid, result, tag, state = pyotp.run(main)
    assert result == {"upgraded": [pid], "failed": []}
    assert tag == "v2"
    assert state["log"] == list(range(2000))
    assert (state["old_vsn"], state["extra"]) == ("1", "x")


def test_a_failing_code_change_leaves_the_old_code_and_state(module):
    """Ports gen_server_SUITE:code_change (the failing half)."""
    name, write = module
    write("v1")
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_server.start_link(mod.Srv, None)
        gen_server.cast(pid, "before")
        write("v3", FAIL, vsn="3")
        result = await code.upgrade(name)
        gen_server.cast(pid, "after")
        return pid, result, await gen_server.call(pid, "get")

    pid, result, (tag, state) = pyotp.run(main)
    assert result["upgraded"] == []
    [(failed_pid, reason)] = result["failed"]
    assert failed_pid == pid
    assert "cannot upgrade" in str(reason)
    assert tag == "v1"
    assert state == {"log": ["before", "after"]}


def test_after_a_failed_code_change_old_vsn_is_the_version_the_process_still_runs(module):
    """The process stayed on version 1; the next upgrade's code_change gets old_vsn "1" (the
    module meanwhile loaded as "2" is code it never ran)."""
    name, write = module
    write("v1", vsn="1")
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_server.start_link(mod.Srv, None)
        write("v2", FAIL, vsn="2")
        failed = await code.upgrade(name)
        write("v3", CHANGE, vsn="3")
        upgraded = await code.upgrade(name, extra="x")
        return pid, failed, upgraded, await gen_server.call(pid, "get")

    pid, failed, upgraded, (tag, state) = pyotp.run(main)
    assert [p for p, _ in failed["failed"]] == [pid]
    assert upgraded == {"upgraded": [pid], "failed": []}
    assert tag == "v3"
    assert state["old_vsn"] == "1"


def test_a_version_that_drops_vsn_gives_old_vsn_none_at_the_next_upgrade(module):
    """A reload re-runs the source in the old module's namespace: a `__vsn__` the new source
    no longer sets must not survive as the new version's."""
    name, write = module
    write("v1", vsn="1")
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_server.start_link(mod.Srv, None)
        write("v2", vsn=None)
        await code.upgrade(name)
        write("v3", CHANGE, vsn="3")
        await code.upgrade(name)
        return await gen_server.call(pid, "get")

    tag, state = pyotp.run(main)
    assert tag == "v3" and state["old_vsn"] is None


def test_old_vsn_is_none_without_vsn_and_a_gen_statem_is_upgraded_too(module):
    name, write = module
    write("v1", template=STATEM)
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_statem.start_link(mod.Door, None)
        assert await gen_statem.call(pid, "hi") == ("v1", "closed", 0)
        write("v2", template=STATEM)
        result = await code.upgrade(name, extra={"k": 1})
        return pid, result, await gen_statem.call(pid, "hi")

    pid, result, reply = pyotp.run(main)
    assert result == {"upgraded": [pid], "failed": []}
    assert reply == ("v2", "upgraded", (None, {"k": 1}))


def test_processes_of_other_modules_are_left_alone(module):
    name, write = module
    write("v1")
    importlib.import_module(name)

    class Other(gen_server.GenServer):
        def init(self, arg):
            return ("ok", arg)

        def handle_call(self, req, from_, s):
            return ("reply", s, s)

    async def main():
        other = await gen_server.start_link(Other, "mine")
        write("v2")
        result = await code.upgrade(name)
        return other, result, await gen_server.call(other, "x")

    _other, result, reply = pyotp.run(main)
    assert result == {"upgraded": [], "failed": []}
    assert reply == "mine"


def test_a_module_that_does_not_load_changes_nothing(module):
    name, write = module
    write("v1")
    mod = importlib.import_module(name)

    async def main():
        pid = await gen_server.start_link(mod.Srv, None)
        write("v2", "        return (", vsn="2")  # a syntax error
        with pytest.raises(pyotp.OtpError) as err:
            await code.upgrade(name)
        assert err.value.reason[0] == "load_failed"
        gen_server.cast(pid, "still running")
        return await gen_server.call(pid, "get")

    assert pyotp.run(main) == ("v1", {"log": ["still running"]})


def test_upgrade_refuses_bad_arguments_and_unknown_modules():
    async def main():
        with pytest.raises(pyotp.BadArg):
            await code.upgrade(3)
        with pytest.raises(pyotp.BadArg):
            await code.upgrade("json", nodes="a@b")
        with pytest.raises(pyotp.OtpError) as err:
            await code.upgrade("no_such_module_" + uuid.uuid4().hex)
        return err.value.reason[0]

    assert pyotp.run(main) == "not_loaded"


@pytest.mark.slow
def test_upgrade_reaches_every_scheduler_of_the_node(module):
    name, write = module
    write("v1")
    mod = importlib.import_module(name)

    async def main():
        here = await gen_server.start_link(mod.Srv, None, scheduler=0)
        there = await gen_server.start_link(mod.Srv, None, scheduler=1)
        assert there.scheduler == 1
        gen_server.cast(there, "a")
        write("v2", CHANGE, vsn="2")
        result = await code.upgrade(name, extra="e")
        gen_server.cast(there, "b")
        return here, there, result, await gen_server.call(there, "get")

    here, there, result, (tag, state) = pyotp.run(main, schedulers=2)
    assert sorted(result["upgraded"], key=lambda p: p.scheduler) == [here, there]
    assert result["failed"] == []
    assert tag == "v2"
    assert state == {"log": ["a", "b"], "old_vsn": "1", "extra": "e"}


@pytest.mark.slow
def test_upgrade_reaches_the_given_nodes(module, peer):
    name, write = module
    write("v1")
    mod = importlib.import_module(name)
    b = peer("b")

    async def main():
        assert await pyotp.net.connect(b.name)
        remote = await pyotp.rpc.call(b.name, mod.start_server, timeout=WAIT)
        local = await gen_server.start_link(mod.Srv, None)
        write("v2", CHANGE, vsn="2")
        result = await code.upgrade(name, extra="n", nodes=[b.name])
        return local, remote, result, await gen_server.call(remote, "get")

    local, remote, result, (tag, state) = pyotp.run(
        main, name=node_name("a"), cookie=COOKIE, config={"kernel": {"net_ticktime": 1}}
    )
    assert set(result["upgraded"]) == {local, remote}
    assert result["failed"] == []
    assert tag == "v2" and state["old_vsn"] == "1"


SUP = '''
from pyotp import gen_server, supervisor

class Worker(gen_server.GenServer):
    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, s):
        return ("reply", s, s)

class Sup(supervisor.Supervisor):
    def init(self, arg):
        flags = {{"strategy": "one_for_one", "intensity": {tag}, "period": 5}}
        spec = {{"id": "w", "start": (gen_server.start_link, (Worker, "w"), {{}})}}
        return ("ok", (flags, [spec]))
'''


def test_a_supervisor_is_upgraded_and_keeps_its_running_children(module):
    name, write = module
    write(1, template=SUP)
    mod = importlib.import_module(name)
    from pyotp import supervisor

    async def main():
        sup = await supervisor.start_link(mod.Sup, None)
        [(_, child, _, _)] = await supervisor.which_children(sup)
        write(7, template=SUP)
        result = await code.upgrade(name)
        [(_, child_after, _, _)] = await supervisor.which_children(sup)
        return sup, child, result, child == child_after

    sup, child, result, same_child = pyotp.run(main)
    assert set(result["upgraded"]) == {sup, child}  # the worker's class lives there too
    assert result["failed"] == []
    assert same_child


HANDLER = '''
from pyotp import gen_event

class Log(gen_event.Handler):
    def init(self, arg):
        return ("ok", arg)

    def handle_event(self, event, s):
        return ("ok", s)

    def handle_call(self, req, s):
        return ("ok", ({tag!r}, s), s)

    def code_change(self, old_vsn, s, extra):
{code_change}
'''


def test_a_handler_left_on_old_code_is_still_named_by_its_reloaded_class(module):
    """As Erlang names a handler by its module: after a failed upgrade the module's class
    (a new object) still reaches the handler that kept the old one."""
    name, write = module
    write("v1", template=HANDLER)
    mod = importlib.import_module(name)
    from pyotp import gen_event

    async def main():
        mgr = await gen_event.start_link()
        await gen_event.add_handler(mgr, mod.Log, "s")
        write("v2", FAIL, template=HANDLER)
        result = await code.upgrade(name)
        reply = await gen_event.call(mgr, mod.Log, "hi")
        await gen_event.delete_handler(mgr, mod.Log, None)
        return mgr, result, reply, await gen_event.which_handlers(mgr)

    mgr, result, reply, left = pyotp.run(main)
    assert [p for p, _ in result["failed"]] == [mgr]
    assert reply == ("v1", "s")
    assert left == []
