"""Distributed applications (the kernel `distributed` parameter) over real node OS processes.

Every node runs `tests/dist_app_helpers.py` in an OS process of its own on 127.0.0.1 with a
free port; the test itself is one more node (not in any priority list) that watches them over
rpc. Every test kills what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dist_app_helpers as h
import pytest
from conftest import COOKIE, T, free_port, node_name

import pyotp
from pyotp import application

pytestmark = pytest.mark.slow

HELPERS = os.path.join(os.path.dirname(__file__), "dist_app_helpers.py")
SETTLE = 30  # seconds: generous deadline for the cluster to reach a state


class Cluster:
    """Node OS processes started together (so their boot sync meets), killed at the end."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.old: list[subprocess.Popen] = []

    def launch(self, names: list[str], config: dict, start: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        for name in names:
            old = self.procs.pop(name, None)
            if old is not None:  # a new incarnation of a killed node
                self.old.append(old)
            self.procs[name] = subprocess.Popen(
                [sys.executable, HELPERS, name, COOKIE, json.dumps(config), "1" if start else "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            )
        for name in names:
            line = self.procs[name].stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"node {name} did not boot: {line!r}")

    def launch_cli(self, names: list[str], config: dict, tmp_path) -> dict[str, str]:
        """Run the nodes with `pyotp run dist_app_helpers:SHOP` (the App as a permanent
        application until SIGTERM/Ctrl-C); return each node's SHOP_EVENTS file."""
        cfg_file = tmp_path / "sys.toml"
        cfg_file.write_text(_toml(config))
        files, logs = {}, {}
        for name in names:
            files[name] = str(tmp_path / f"events_{len(files)}.jsonl")
            logs[name] = tmp_path / f"stderr_{len(logs)}.log"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                   "SHOP_EVENTS": files[name]}
            with open(logs[name], "w") as err:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "pyotp", "run", "dist_app_helpers:SHOP", "--name",
                     name, "--cookie", COOKIE, "--config", str(cfg_file)],
                    stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                )
        end = time.monotonic() + SETTLE
        for name in names:
            while "started" not in logs[name].read_text():
                if self.procs[name].poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"node {name} did not boot: {logs[name].read_text()}")
                time.sleep(0.05)
        return files

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.kill()
        p.wait()

    def close(self) -> None:
        for p in [*self.procs.values(), *self.old]:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.close()


def config(nodes, timeout_ms=1000):
    return {
        "kernel": {
            "distributed": [["shop", timeout_ms, nodes]],
            "sync_nodes_optional": _flat(nodes),
            "sync_nodes_timeout": 20000,
            "net_ticktime": 1,
        }
    }


def _toml(config):
    # The kernel table only, which is all `config()` makes (json lists are TOML arrays).
    return "[kernel]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config["kernel"].items())


def _flat(nodes):
    return [n for item in nodes for n in ([item] if isinstance(item, str) else item)]


def watch(main, *args):
    """Run `main` as the first process of the watching node (not in any priority list)."""
    return pyotp.run(main, *args, name=node_name("t"), cookie=COOKIE,
                     config={"kernel": {"net_ticktime": 1}})


async def status(node):
    return await pyotp.rpc.call(node, h.status, timeout=T)


async def wait_for(pred, nodes):
    """Poll the status of `nodes` until `pred({node: (apps, events)})` holds; return it."""
    end = time.monotonic() + SETTLE
    while True:
        seen = {}
        for n in nodes:
            try:
                _, apps, events = await status(n)
                seen[n] = (apps, events)
            except pyotp.OtpError:
                seen[n] = None  # down, or not answering yet
        if pred(seen):
            return seen
        if time.monotonic() > end:
            raise AssertionError(f"cluster never reached the expected state: {seen}")
        try:
            await pyotp.receive(("never",), timeout=0.1)
        except pyotp.Timeout:
            pass


def runs(seen, node):
    return seen[node] is not None and "shop" in seen[node][0]


async def connect_all(*nodes):
    for n in nodes:
        assert await pyotp.net.connect(n)


def start_events(seen, node):
    return [e for e in seen[node][1] if e[0] == "start"]


def starts(seen, node):
    return [e[1] for e in start_events(seen, node)]


def stops(seen, node):
    return [] if seen[node] is None else [e for e in seen[node][1] if e[0] == "stop"]


def only_runner(seen, node):
    return runs(seen, node) and all(not runs(seen, n) for n in seen if n != node)


def test_the_application_runs_only_on_the_highest_priority_node(cluster):
    n1, n2, n3 = node_name("p"), node_name("q"), node_name("r")
    # They boot together and all start it: n2 and n3 wait for n1 (up to max(2 s, the
    # failover timeout) = 5 s here) rather than run it first and be taken over.
    cluster.launch([n1, n2, n3], config([n1, [n2, n3]], timeout_ms=5000))

    async def main():
        await connect_all(n1, n2, n3)
        return await wait_for(lambda s: only_runner(s, n1), [n1, n2, n3])

    seen = watch(main)
    assert only_runner(seen, n1)
    # the application not in `distributed` runs on every node as a plain one
    assert all("local" in seen[n][0] for n in (n1, n2, n3)), seen
    assert starts(seen, n1) == ["normal"]
    assert starts(seen, n2) == [] and starts(seen, n3) == []


def test_a_worse_node_that_starts_it_first_waits_for_a_better_one_that_may_start_it(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cluster.launch([n1, n2], config([n1, n2], timeout_ms=5000), start=False)  # loaded only

    async def main():
        await connect_all(n1, n2)
        await pyotp.rpc.call(n2, h.start_shop, timeout=T)  # n1 may start it: n2 waits
        mid = await wait_for(lambda s: True, [n1, n2])
        await pyotp.rpc.call(n1, h.start_shop, timeout=T)
        return mid, await wait_for(lambda s: only_runner(s, n1), [n1, n2])

    mid, seen = watch(main)
    assert not runs(mid, n2)  # started there, not running anywhere yet
    assert starts(seen, n1) == ["normal"] and starts(seen, n2) == []


def test_the_wait_for_a_better_node_is_bounded(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cluster.launch([n1, n2], config([n1, n2], timeout_ms=300), start=False)  # loaded only

    async def main():
        await connect_all(n1, n2)
        await pyotp.rpc.call(n2, h.start_shop, timeout=T)
        return await wait_for(lambda s: only_runner(s, n2), [n1, n2])

    seen = watch(main)
    assert starts(seen, n2) == ["normal"]


def test_a_killed_runner_fails_over_to_the_next_node_after_the_timeout(cluster):
    n1, n2, n3 = node_name("p"), node_name("q"), node_name("r")
    cluster.launch([n1, n2, n3], config([n1, [n2, n3]], timeout_ms=1000))

    async def main():
        await connect_all(n1, n2, n3)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2, n3])
        killed_at = time.time()
        cluster.kill(n1)
        # equal priority, as many applications running on both: the lower node name
        seen = await wait_for(lambda s: only_runner(s, n2), [n2, n3])
        return killed_at, seen

    killed_at, seen = watch(main)
    start = start_events(seen, n2)[-1]
    assert start[1] == ("failover", n1)
    # Not before the failover timeout (1 s) has run from the kill (a lower bound only: a
    # loaded machine can only make it later). 0.1 s of slack for the two nodes' clocks.
    assert start[2] >= killed_at + 0.9
    assert [e for e in start_events(seen, n3) if e[2] > killed_at] == []


def test_a_returning_higher_priority_node_takes_the_application_over(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cfg = config([n1, n2], timeout_ms=300)
    cluster.launch([n1, n2], cfg)

    async def main():
        await connect_all(n1, n2)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        cluster.kill(n1)
        await wait_for(lambda s: runs(s, n2), [n2])
        cluster.launch([n1], cfg)  # a new incarnation of n1 starts the application
        assert await pyotp.net.connect(n1)
        return await wait_for(lambda s: only_runner(s, n1) and stops(s, n2), [n1, n2])

    seen = watch(main)
    # (at boot n2 may have run it for a moment before the first n1 took it over)
    assert starts(seen, n1) == [("takeover", n2)]
    assert starts(seen, n2)[-1] == ("failover", n1)
    assert stops(seen, n2)[-1][2] >= start_events(seen, n1)[-1][2]
    assert len(stops(seen, n2)) == len(starts(seen, n2))  # it stopped its instance ...
    assert "local" in seen[n2][0]  # ... and the node goes on


def test_application_takeover_moves_the_application_to_the_calling_node(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cluster.launch([n1, n2], config([n1, n2]))

    async def main():
        await connect_all(n1, n2)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        await pyotp.rpc.call(n2, h.take_shop, timeout=T)
        moved = await wait_for(lambda s: only_runner(s, n2) and stops(s, n1), [n1, n2])
        # n1 is still a participant: it does not take it back by itself, and a takeover
        # where it runs is refused
        with pytest.raises(pyotp.OtpError) as again:
            await pyotp.rpc.call(n2, h.take_shop, timeout=T)
        return moved, again.value.reason

    seen, again = watch(main)
    assert starts(seen, n2)[-1] == ("takeover", n1)
    assert len(stops(seen, n1)) == len(starts(seen, n1)) and "shop" not in seen[n1][0]
    assert again[0] == "badrpc"


def test_takeover_where_it_was_never_started_is_not_running_distributed(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cluster.launch([n1], config([n1, n2]))
    cluster.launch([n2], config([n1, n2]), start=False)  # loaded only

    async def main():
        await connect_all(n1, n2)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        loaded = await pyotp.rpc.call(n2, h.take_shop_unstarted, False, timeout=T)
        unloaded = await pyotp.rpc.call(n2, h.take_shop_unstarted, True, timeout=T)
        return loaded, unloaded, await wait_for(lambda s: True, [n1, n2])

    loaded, unloaded, seen = watch(main)
    assert loaded == (("not_running_distributed", "shop"), ["shop", "local"])
    assert unloaded == (("not_running_distributed", "shop"), ["local"])  # not loaded by it
    assert only_runner(seen, n1) and starts(seen, n2) == [] and stops(seen, n1) == []


def test_stopping_it_where_it_runs_stops_it_without_failover(cluster):
    n1, n2 = node_name("p"), node_name("q")
    cluster.launch([n1, n2], config([n1, n2], timeout_ms=300))

    async def main():
        await connect_all(n1, n2)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        await pyotp.rpc.call(n1, h.stop_shop, timeout=T)
        seen = await wait_for(lambda s: not runs(s, n1) and stops(s, n1), [n1, n2])
        cluster.kill(n1)
        try:
            await pyotp.receive(("never",), timeout=3.0)  # nodedown + 10 x the timeout
        except pyotp.Timeout:
            pass
        return seen, await status(n2)

    seen, (_, apps2, events2) = watch(main)
    stopped_at = stops(seen, n1)[-1][2]
    # n2 may have run it for a moment at boot (before n1 took it over), never after the stop
    assert "shop" not in apps2
    assert [e for e in events2 if e[0] == "start" and e[2] > stopped_at] == []


async def _exited(proc):
    """Wait (without blocking the node) for an OS process to end; return its exit code."""
    end = time.monotonic() + SETTLE
    while proc.poll() is None:
        assert time.monotonic() < end, "the node did not exit"
        try:
            await pyotp.receive(("never",), timeout=0.1)
        except pyotp.Timeout:
            pass
    return proc.returncode


def _check_failed_over(old_events, seen, new, old):
    """`old` ran prep_stop and stop, then `new` started it with ("failover", old)."""
    kinds = [e[0] for e in old_events]
    assert kinds[-2:] == ["prep_stop", "stop"], old_events
    start = start_events(seen, new)[-1]
    assert start[1] == ("failover", old)
    assert start[2] >= old_events[-1][2] - 0.1  # after the old stop (0.1 s of clock slack)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_pyotp_run_of_the_app_where_it_runs_lets_the_next_node_fail_over(
        cluster, tmp_path, sig):
    n1, n2 = node_name("p"), node_name("q")
    files = cluster.launch_cli([n1, n2], config([n1, n2], timeout_ms=500), tmp_path)

    async def main():
        await connect_all(n1, n2)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        cluster.procs[n1].send_signal(sig)
        rc = await _exited(cluster.procs[n1])
        return rc, await wait_for(lambda s: runs(s, n2), [n2])

    rc, seen = watch(main)
    assert rc == 0
    _check_failed_over(h.file_events(files[n1]), seen, n2, n1)


def test_a_node_whose_pyotp_run_ends_lets_the_next_node_fail_over(cluster, tmp_path,
                                                                  monkeypatch):
    n1, n2 = node_name("p"), node_name("q")
    monkeypatch.setenv("SHOP_EVENTS", str(tmp_path / "events_n1.jsonl"))
    cluster.launch([n1], config([n1, n2], timeout_ms=500), start=False)
    monkeypatch.delenv("SHOP_EVENTS")
    cluster.launch([n2], config([n1, n2], timeout_ms=500), start=False)

    async def main():
        await connect_all(n1, n2)
        for n in (n1, n2):
            await pyotp.rpc.call(n, h.start_shop, timeout=T)
        await wait_for(lambda s: only_runner(s, n1), [n1, n2])
        pyotp.rpc.cast(n1, h.quit_node)  # its main returns: the node shuts down
        rc = await _exited(cluster.procs[n1])
        return rc, await wait_for(lambda s: runs(s, n2), [n2])

    rc, seen = watch(main)
    assert rc == 0
    _check_failed_over(h.file_events(str(tmp_path / "events_n1.jsonl")), seen, n2, n1)


def test_a_node_of_the_runners_own_group_that_starts_it_stands_by(cluster):
    """Erlang never moves the application inside an equal-priority group."""
    na, nb = node_name("ga"), node_name("gb")  # na has the lower name
    cluster.launch([na, nb], config([[na, nb]]), start=False)

    async def main():
        await connect_all(na, nb)
        await pyotp.rpc.call(nb, h.start_shop, timeout=T)
        await wait_for(lambda s: only_runner(s, nb), [na, nb])
        await pyotp.rpc.call(na, h.start_shop, timeout=T)  # it decides before returning
        try:
            await pyotp.receive(("never",), timeout=2.0)  # room for a wrong takeover
        except pyotp.Timeout:
            pass
        return await wait_for(lambda s: True, [na, nb])

    seen = watch(main)
    assert only_runner(seen, nb) and starts(seen, na) == [] and stops(seen, nb) == []


@pytest.mark.parametrize("extra_on_lower", [False, True], ids=["by_name", "by_load"])
def test_failover_inside_a_group_picks_the_fewest_applications_then_the_lowest_name(
        cluster, extra_on_lower):
    n1, na, nb = node_name("p"), node_name("ga"), node_name("gb")  # na < nb by name
    # by name: nb is first in list order, na wins by its name; by load: na is first in list
    # order and has the lower name, nb wins by running fewer applications
    group = [na, nb] if extra_on_lower else [nb, na]
    cluster.launch([n1, na, nb], config([n1, group], timeout_ms=300))

    async def main():
        await connect_all(n1, na, nb)
        await wait_for(lambda s: only_runner(s, n1), [n1, na, nb])
        if extra_on_lower:
            await pyotp.rpc.call(na, h.start_extra, timeout=T)
        cluster.kill(n1)
        want = nb if extra_on_lower else na
        return want, await wait_for(lambda s: only_runner(s, want), [na, nb])

    want, seen = watch(main)
    assert starts(seen, want)[-1] == ("failover", n1)


def test_a_missing_mandatory_node_fails_the_boot_naming_it():
    ghost = f"ghost{os.getpid()}@127.0.0.1:{free_port()}"
    ran = []

    with pytest.raises(pyotp.OtpError) as info:
        pyotp.run(ran.append, 1, name=node_name("a"), cookie=COOKIE,
                  config={"kernel": {"sync_nodes_mandatory": [ghost],
                                     "sync_nodes_timeout": 300}})
    assert info.value.reason == ("sync_nodes_mandatory", [ghost])
    assert ghost in str(info.value) and ran == []


def test_a_missing_optional_node_does_not_stop_the_boot():
    ghost = f"ghost{os.getpid()}@127.0.0.1:{free_port()}"
    assert pyotp.run(lambda: "booted", name=node_name("a"), cookie=COOKIE,
                     config={"kernel": {"sync_nodes_optional": [ghost],
                                        "sync_nodes_timeout": 300}}) == "booted"


def test_a_node_not_in_the_list_runs_the_application_as_a_plain_one():
    other = node_name("z")

    async def main():
        await application.start(h.SHOP)
        return [a[0] for a in application.which_applications()], list(h.EVENTS)

    h.EVENTS.clear()
    apps, events = pyotp.run(main, name=node_name("a"), cookie=COOKIE,
                             config={"kernel": {"distributed": [["shop", [other]]]}})
    h.EVENTS.clear()
    assert apps == ["shop"] and [e[1] for e in events if e[0] == "start"] == ["normal"]


def test_a_malformed_distributed_parameter_is_refused_at_boot():
    with pytest.raises(pyotp.BadArg, match="distributed"):
        pyotp.run(lambda: None, config={"kernel": {"distributed": [["shop", -1, ["a@h"]]]}})
    with pytest.raises(pyotp.BadArg, match="sync_nodes_timeout"):
        pyotp.run(lambda: None, config={"kernel": {"sync_nodes_timeout": "soon"}})
