"""Distributed applications (Erlang's `dist_ac`) and the boot-time node sync.

Where it sits: `application.start` / `stop` / `takeover` of an application named in the
kernel `distributed` parameter → **_dist_ac** (one coordinator process per node, registered
as "$dist_ac", started at boot) → the coordinators of the other nodes in that application's
priority list, over ordinary messages.

The kernel parameters keep Erlang's names and units:
    distributed = [[app, timeout_ms, [node | [node, ...], ...]], [app, [nodes]], ...]
    sync_nodes_mandatory, sync_nodes_optional = [node, ...]; sync_nodes_timeout (ms)

Model (Erlang's, with the differences named below):
1. A node takes part in a distributed application once `application.start(app)` is called
   on it ("participant"). The application runs on exactly one node: a live participant of
   the best group of the priority list; inside a group, as Erlang's dist_ac, the one with
   the fewest running applications (`which_applications`; the status answers carry that
   number), then the lowest node name (list order inside a group does not count).
   On the other participants `start` returns and the application is "started, running
   elsewhere": `which_applications` leaves it out there, as Erlang's does.
2. Deciding: the coordinator asks the coordinators of the connected nodes of the list for
   their status, answering their questions meanwhile (two nodes deciding at once never wait
   on each other), then applies the rule above. Erlang decides the same way (every node
   computes the same choice from the same answers) under a global lock; here two nodes that
   decide at the same instant may both start it, and when two run it the one of the worse
   group, or in one group the one with the higher node name, stops its instance again.
   Nodes booting together: a node whose turn it would be asks again (every 0.15 s) while
   a better-ranked connected node of the list has a coordinator but has not started the
   application yet ("may start soon"); if that node starts it meanwhile it runs there and
   this one stands by, so the application starts on the best node and is not taken over
   from a quicker worse one. Erlang waits for such nodes (there: nodes that loaded it)
   without bound; here the wait is bounded by max(2 s, the application's failover timeout),
   after which it runs on this node (and a node of a better group that starts it later
   takes it over).
   A failover never waits so.
3. Failover: when the node running it goes down, each participant waits the application's
   timeout; then, if no node runs it (the dead one may have come back meanwhile), the best
   live participant starts it with `("failover", dead_node)`.
4. Takeover: a participant of a strictly better group than the running node's that starts
   the application starts it with `("takeover", runner)` (one of the runner's own group
   stands by: the application never moves inside a group, as in Erlang); once that start
   has returned it tells everyone, and the old runner stops its instance (prep_stop, the
   tree, stop) and stays a participant.
   `application.takeover` does the same from any participant; on a node that never started
   the application it raises `("not_running_distributed", app)`, as Erlang's.
5. `application.stop` where it runs stops it there and tells the others, which stay
   participants but do not start it (Erlang's dist_ac_app_stopped); a tree that dies on its
   own is the same. Where it does not run, `stop` only ends this node's participation.
6. A node shutting down (the end of `pyotp.run`, which is how `pyotp run MODULE:APP` stops
   on SIGTERM or Ctrl-C) is Erlang's init:stop: the coordinator stops starting anything
   here, the node stops its applications newest first (prep_stop, the tree, stop) while
   still connected, telling no one, and then leaves the network. Until then this node still
   answers that it runs the application, so nobody starts it early; once it is gone the
   others fail over after the timeout, with `("failover", this_node)`.

Sync at boot (Erlang's kernel sync_nodes_*): with `sync_nodes_timeout` set, `pyotp.run`
connects to the mandatory and optional nodes for up to that long before `main` runs; a
mandatory node still missing then fails the boot with
`OtpError(("sync_nodes_mandatory", [missing]))`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from schedulers import receive
from transport import BadArg, OtpError, Pid, StartError, Timeout

from . import _api, _config, _gen, net

__all__ = ["NAME", "Spec", "boot", "coordinator_for", "parse", "shutting_down", "sync_settings"]

NAME = "$dist_ac"
_ASK_TIMEOUT = 3.0  # seconds a coordinator waits for the others' status
_RECHECK = 0.5  # seconds between looks while no node is known to run the application
# Waiting for a better node that may start the application soon (see the module doc, 2.):
_HOLD_STEP = 0.15  # seconds between looks
_HOLD_MIN = 2.0  # the bound is max(this, the application's failover timeout), in seconds

log = logging.getLogger("pyotp.application")


# --------------------------------------------------------------------- kernel parameters


class Spec:
    """Internal: one entry of the kernel `distributed` parameter."""

    __slots__ = ("group", "name", "nodes", "timeout")

    def __init__(self, name: str, timeout: float, groups: list[list[str]]) -> None:
        self.name = name
        self.timeout = timeout  # seconds
        self.nodes: list[str] = [n for g in groups for n in g]
        self.group = {n: gi for gi, g in enumerate(groups) for n in g}  # lower is better

    def key(self, node: str, running: int) -> tuple[int, int, str]:
        """Erlang's choice order: the group's place, then the fewest running applications,
        then the lowest node name (list order inside a group does not count)."""
        return self.group[node], running, node

    def best(self, nodes: Any, counts: dict[str, int]) -> str:
        """The node to run it on among `nodes` (`counts`: each one's running applications)."""
        return min(nodes, key=lambda n: self.key(n, counts.get(n, 0)))

    def better(self, a: str, b: str) -> bool:
        """True when node `a` is in a strictly better group than node `b` (only such a node
        takes the application over: it never moves inside a group)."""
        return self.group[a] < self.group[b]

    def senior(self, nodes: Any) -> str:
        """The runner that stays when several run it at once: by group, then node name (a
        rule both sides compute alike)."""
        return min(nodes, key=lambda n: (self.group[n], n))


def _node_name(x: Any) -> bool:
    return type(x) is str and x.count("@") == 1


def parse(cfg: dict) -> dict[str, Spec]:
    """Return the kernel `distributed` parameter as {app name: Spec}.

    Raises:
        BadArg: the parameter is malformed (the message names the bad entry).
    """
    raw = cfg.get("kernel", {}).get("distributed")
    if raw is None:
        return {}
    shape = ("kernel distributed must be a list of [app, timeout_ms, nodes] or [app, nodes] "
             "entries, nodes being node names or lists of equal-priority node names")
    if not isinstance(raw, (list, tuple)):
        raise BadArg(f"{shape}; got {raw!r}")
    out: dict[str, Spec] = {}
    for entry in raw:
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise BadArg(f"{shape}; got the entry {entry!r}")
        name, timeout, nodes = entry if len(entry) == 3 else (entry[0], 0, entry[1])
        if type(name) is not str or not name:
            raise BadArg(f"{shape}; the entry {entry!r} has no application name")
        if type(timeout) is not int or timeout < 0:
            raise BadArg(f"kernel distributed: the timeout of {name!r} must be an int >= 0 "
                         f"(milliseconds), got {timeout!r}")
        if not isinstance(nodes, (list, tuple)) or not nodes:
            raise BadArg(f"{shape}; {name!r} has the nodes {nodes!r}")
        groups: list[list[str]] = []
        for item in nodes:
            group = [item] if type(item) is str else item
            if not isinstance(group, (list, tuple)) or not group or \
                    not all(_node_name(n) for n in group):
                raise BadArg(f"{shape}; {name!r} has the bad node item {item!r}")
            groups.append(list(group))
        flat = [n for g in groups for n in g]
        if len(set(flat)) != len(flat):
            raise BadArg(f"kernel distributed: {name!r} lists a node twice: {flat!r}")
        if name in out:
            raise BadArg(f"kernel distributed: {name!r} is listed twice")
        out[name] = Spec(name, timeout / 1000, groups)
    return out


def sync_settings(cfg: dict) -> tuple[list[str], list[str], float | None]:
    """Return (mandatory, optional, timeout in seconds or None) of the kernel sync_nodes_*.

    Raises:
        BadArg: a malformed value.
    """
    kernel = cfg.get("kernel", {})
    lists = []
    for key in ("sync_nodes_mandatory", "sync_nodes_optional"):
        value = kernel.get(key, [])
        if not isinstance(value, (list, tuple)) or not all(_node_name(n) for n in value):
            raise BadArg(f"kernel {key} must be a list of node names, got {value!r}")
        lists.append(list(value))
    timeout = kernel.get("sync_nodes_timeout")
    if timeout is not None and timeout != "infinity" and (type(timeout) is not int or
                                                           timeout < 0):
        raise BadArg(f"kernel sync_nodes_timeout must be an int >= 0 (milliseconds) or "
                     f"'infinity', got {timeout!r}")
    seconds = None if timeout is None else (float("inf") if timeout == "infinity"
                                            else timeout / 1000)
    return lists[0], lists[1], seconds


# --------------------------------------------------------------------- boot


async def boot(specs: dict[str, Spec], mandatory: list[str], optional: list[str],
               timeout: float | None) -> list[str]:
    """Internal: the node's boot step (a process `pyotp.run` waits for before `main`).

    Starts and registers the coordinator when `specs` is not empty, then syncs with the
    sync_nodes_* nodes. Returns the mandatory nodes still missing (empty when all are up).
    """
    node = _config.current()
    if specs:
        pid = _api.spawn(_coordinator, specs)
        await _api.register(NAME, pid)
        node.dist_ac = pid
        node.dist_specs = specs
    if timeout is None:
        return []  # as in Erlang: without sync_nodes_timeout no sync is done
    me = _api.node()
    want = [n for n in dict.fromkeys(mandatory + optional) if n != me]
    if not want:
        return []
    deadline = time.monotonic() + timeout
    dialers = [_api.spawn(_dial, n, deadline) for n in want]
    try:
        while True:
            up = set(_api.nodes())
            missing = [n for n in want if n not in up]
            if not missing or time.monotonic() >= deadline:
                break
            try:
                await _api_receive(("$never",), 0.05)
            except Timeout:
                pass
    finally:
        for pid in dialers:
            _api.exit(pid, "kill")
    missing_optional = [n for n in missing if n not in mandatory]
    if missing_optional:
        log.warning("sync_nodes_optional: %s not up after sync_nodes_timeout; going on",
                    missing_optional)
    return [n for n in missing if n in mandatory]


async def _api_receive(pattern: Any, timeout: float) -> Any:
    return await receive(pattern, timeout=timeout)


async def _dial(node: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if node in _api.nodes() or await net.connect(node):
            return
        try:
            await _api_receive(("$never",), 0.2)
        except Timeout:
            pass


def _application() -> Any:
    # application imports this module for coordinator_for; the way back is looked up late.
    from . import application  # noqa: PLC0415 - circular: application imports _dist_ac

    return application


def coordinator_for(name: str) -> Pid | None:
    """Return this node's coordinator when application `name` is distributed over this node
    (named in `distributed` and this node in its list), else None (it runs as a plain one)."""
    node = _config.current()
    if node is None or node.dist_ac is None:
        return None
    spec = node.dist_specs.get(name)
    if spec is None or _api.node() not in spec.group:
        return None
    return node.dist_ac


async def shutting_down() -> None:
    """Internal: the node is shutting down; its coordinator starts nothing here any more but
    goes on answering (the applications it runs count as running here until the node has
    left the network, so no other node starts them before it fails over)."""
    node = _config.current()
    if node is not None and node.dist_ac is not None:
        try:
            await _gen.call(node.dist_ac, ("shutdown", None), 5.0, what="node shutdown")
        except (OtpError, TimeoutError):
            pass  # the coordinator is gone or stuck: stop the applications all the same


# --------------------------------------------------------------------- the coordinator


class _AppState:
    """Internal: what the coordinator knows of one distributed application."""

    __slots__ = ("dead", "epoch", "hold_until", "runner", "status")

    def __init__(self) -> None:
        # None: not a participant; "standby": started, runs elsewhere (runner, or unknown
        # yet); "waiting": its node went down, failover timer running; "idle": stopped by
        # its runner, not restarted anywhere; "running": runs on this node.
        self.status: str | None = None
        self.runner: str | None = None
        self.dead: str | None = None  # the node it ran on before a failover
        self.epoch = 0  # bumped to void pending timers
        self.hold_until: float | None = None  # end of the wait for a better node to start


async def _coordinator(specs: dict[str, Spec]) -> None:
    """Internal: the coordinator process, "$dist_ac" (this loop serves every message)."""
    await _Coordinator(specs).loop()


class _Coordinator:
    def __init__(self, specs: dict[str, Spec]) -> None:
        self.specs = specs
        self.me = _api.node()
        self.pid = _api._caller().pid  # type: ignore[union-attr]
        self.apps = {name: _AppState() for name in specs}
        self.watched: set[str] = set()
        self.stopping = False  # the node is shutting down: start nothing here any more

    # -- the loop

    async def loop(self) -> None:
        while True:
            msg = await receive()
            try:
                await self.handle(msg)
            except Exception:  # one bad message never takes the coordinator down
                log.exception("dist_ac: failed handling %r", msg)

    async def handle(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            return
        tag = msg[0]
        if tag == "$gen_call":
            from_, req = msg[1], msg[2]
            try:
                _gen.reply(from_, await self.request(*req))
            except OtpError as e:
                _gen.reply(from_, ("error", e.reason, str(e)))
        elif tag == "$dac_query":
            self.answer(msg)
        elif tag == "$dac_running":
            await self.on_running(msg[1], msg[2], msg[3])
        elif tag == "$dac_stopped":
            st = self.apps.get(msg[1])
            if st is not None and st.status in ("standby", "waiting") and \
                    st.runner in (msg[2], None):
                st.status, st.runner = "idle", None
                st.epoch += 1
        elif tag == "nodedown":
            self.on_nodedown(msg[1])
        elif tag == "$dac_timeout" and not self.stopping:
            st = self.apps.get(msg[1])
            if st is not None and st.epoch == msg[2] and st.status in ("waiting", "standby"):
                await self.settle(msg[1])
        elif tag == "$dac_local_down":
            st = self.apps.get(msg[1])
            if st is not None and st.status == "running":
                st.status, st.runner = None, None
                self.broadcast(msg[1], ("$dac_stopped", msg[1], self.me))

    # -- questions and answers between coordinators

    def answer(self, msg: tuple) -> None:
        _, name, asker, ref, node = msg
        st = self.apps.get(name)
        self.watch(node)
        _api.send(asker, ("$dac_status", ref, self.me, None if st is None else st.status,
                          self.running_count()))

    def running_count(self) -> int:
        """How many applications run on this node (Erlang's choice inside a group)."""
        return len(_application().which_applications())

    def watch(self, node: str) -> None:
        if node != self.me and node not in self.watched and node in _api.nodes():
            self.watched.add(node)
            _api.monitor_node(node, True)

    def peers(self, name: str) -> list[str]:
        up = set(_api.nodes())
        return [n for n in self.specs[name].nodes if n != self.me and n in up]

    def broadcast(self, name: str, msg: tuple) -> None:
        for n in self.peers(name):
            _api.send((NAME, n), msg)

    async def ask(self, name: str) -> dict[str, tuple[str | None, int]]:
        """Return (status of `name`, number of running applications) of every connected
        node of its list."""
        peers = self.peers(name)
        for n in peers:
            self.watch(n)
        ref = _api.make_ref()
        for n in peers:
            _api.send((NAME, n), ("$dac_query", name, self.pid, ref, self.me))
        got: dict[str, tuple[str | None, int]] = {}
        deadline = time.monotonic() + _ASK_TIMEOUT

        def wanted(m: Any) -> bool:
            return type(m) is tuple and len(m) == 5 and (
                (m[0] == "$dac_status" and m[1] == ref) or m[0] == "$dac_query")

        while len(got) < len(peers):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                msg = await receive(wanted, timeout=min(left, 0.1))
            except Timeout:
                up = set(_api.nodes())
                peers = [n for n in peers if n in up or n in got]  # lost ones answer nothing
                continue
            if msg[0] == "$dac_query":
                self.answer(msg)  # another node deciding meanwhile: never make it wait
            else:
                got[msg[2]] = (msg[3], msg[4])
        for n in peers:
            if n not in got:
                log.warning("dist_ac: %s did not answer about %r; counted as not taking part",
                            n, name)
        return got

    # -- requests from this node's application calls

    async def request(self, op: str, name: str) -> Any:
        if op == "shutdown":
            self.stopping = True
            return "ok"
        if self.stopping:
            raise OtpError("shutting_down", f"application.{op}: the node is shutting down")
        st = self.apps[name]
        if op == "start":
            st.status, st.runner, st.hold_until = "standby", None, None  # a participant now
            st.epoch += 1
            try:
                await self.settle(name, joining=True)
            except BaseException:
                st.status = None
                raise
            return "ok"
        if op == "takeover":
            return await self.takeover(name, st)
        if op == "stop":
            await self.stop(name, st)
            return "ok"
        raise OtpError(("unknown_request", op), f"dist_ac: unknown request {op!r}")

    async def settle(self, name: str, joining: bool = False) -> None:
        """Decide where `name` runs now and act on it if this node is concerned."""
        spec, st = self.specs[name], self.apps[name]
        answers = await self.ask(name)
        if st.status not in ("standby", "waiting"):
            return  # a message handled while asking changed the picture (we run it already)
        running = [n for n, (s, _) in answers.items() if s == "running"]
        if running:
            runner = spec.senior(running)
            if spec.better(self.me, runner) and joining:
                await self.run_here(name, ("takeover", runner), takeover_from=runner)
            else:
                self.standby(name, runner)
            return
        counts = {n: c for n, (_, c) in answers.items()}
        counts[self.me] = self.running_count()
        candidates = [self.me] + [n for n, (s, _) in answers.items()
                                  if s in ("standby", "waiting")]
        if spec.best(candidates, counts) == self.me:
            if st.status == "standby" and self.hold(name, answers, counts):
                return
            start_type: Any = "normal"
            if st.status == "waiting" and st.dead is not None:
                start_type = ("failover", st.dead)
            await self.run_here(name, start_type)
        else:
            # A better participant decides; look again later in case it never does (it
            # could be going down too).
            self.look_again(name, _RECHECK)

    def hold(self, name: str, answers: dict, counts: dict[str, int]) -> bool:
        """True (and look again soon) while a better-ranked connected node of the list has
        a coordinator but has not started the application: it may start it soon (nodes
        booting together), so this worse node waits, within the bound, before running it."""
        spec, st = self.specs[name], self.apps[name]
        mine = spec.key(self.me, counts[self.me])
        maybe = [n for n, (s, c) in answers.items() if s is None and spec.key(n, c) < mine]
        if not maybe:
            return False
        now = time.monotonic()
        if st.hold_until is None:
            st.hold_until = now + max(_HOLD_MIN, spec.timeout)
        if now >= st.hold_until:
            log.info("application %r: %s did not start it in time; it runs here", name, maybe)
            return False
        self.look_again(name, _HOLD_STEP)
        return True

    def look_again(self, name: str, after: float) -> None:
        """Stand by, runner unknown yet, and decide again in `after` seconds."""
        st = self.apps[name]
        st.runner = None
        st.epoch += 1
        _application()._dist_mark_standby(name)  # not running here: not in which_applications
        _api.send_after(after, self.pid, ("$dac_timeout", name, st.epoch))

    async def takeover(self, name: str, st: _AppState) -> str:
        if st.status is None:  # never started here (or stopped): Erlang's answer too
            raise OtpError(("not_running_distributed", name),
                           f"application.takeover: {name!r} is not started on this node")
        if st.status == "running":
            raise OtpError(("already_running_locally", name),
                           f"application.takeover: {name!r} already runs on this node")
        answers = await self.ask(name)
        running = [n for n, (s, _) in answers.items() if s == "running"]
        if not running:
            raise OtpError(("not_running_distributed", name),
                           f"application.takeover: {name!r} runs on no other node")
        runner = self.specs[name].senior(running)
        await self.run_here(name, ("takeover", runner), takeover_from=runner)
        return "ok"

    async def stop(self, name: str, st: _AppState) -> None:
        application = _application()
        was_running = st.status == "running"
        st.status, st.runner = None, None
        st.epoch += 1
        await application._dist_stop(name)
        if was_running:
            self.broadcast(name, ("$dac_stopped", name, self.me))

    # -- running and not running here

    async def run_here(self, name: str, start_type: Any, takeover_from: str | None = None
                       ) -> None:
        application = _application()
        st = self.apps[name]
        st.epoch += 1
        try:
            await application._dist_run(name, start_type)
        except StartError as e:
            st.status, st.runner = None, None
            raise OtpError(e.reason, f"{name!r} failed to start: {e.reason!r}") from None
        st.status, st.runner, st.dead, st.hold_until = "running", self.me, None, None
        self.broadcast(name, ("$dac_running", name, self.me, takeover_from))

    def standby(self, name: str, runner: str) -> None:
        application = _application()
        st = self.apps[name]
        st.status, st.runner, st.dead, st.hold_until = "standby", runner, None, None
        st.epoch += 1
        self.watch(runner)
        application._dist_mark_standby(name)

    async def on_running(self, name: str, node: str, takeover_from: str | None) -> None:
        application = _application()
        st = self.apps.get(name)
        if st is None or st.status is None:
            return
        self.watch(node)
        if st.status == "running":
            spec = self.specs[name]
            if takeover_from == self.me or spec.senior((node, self.me)) == node:
                log.info("application %r moves to %s: stopping its instance here", name, node)
                await application._dist_move_away(name)
                self.standby(name, node)
            else:
                # Two runners (they decided at the same time, or one failed over from a
                # node it only lost touch with): the worse one stops when it hears of us.
                _api.send((NAME, node), ("$dac_running", name, self.me, None))
            return
        self.standby(name, node)

    def on_nodedown(self, node: str) -> None:
        self.watched.discard(node)
        for name, st in self.apps.items():
            if st.runner == node and st.status == "standby":
                st.status, st.runner, st.dead = "waiting", None, node
                st.epoch += 1
                _api.send_after(self.specs[name].timeout, self.pid,
                                ("$dac_timeout", name, st.epoch))
                log.info("application %r: its node %s went down; failover in %s s",
                         name, node, self.specs[name].timeout)
