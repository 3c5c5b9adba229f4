"""Applications: named, versioned units with a supervision tree, started and stopped as one.

Where it sits: user code → **application** (the node's table of loaded and started
applications, one application master process per started application) → the application's
top supervisor → its workers.

Erlang keeps this table in the `application_controller` process. Here every application call
runs in the calling process and the table lives with the node's scheduler, so load/start/stop
are plain reads and writes on one event loop; what needs a process of its own is the
application master:

    caller ── start ──▶ master (traps exits) ── Application.start(start_type, args) ──▶ top
                         │  linked to the top supervisor; on its EXIT: prep_stop, stop,
                         │  then the restart type decides: temporary → reported,
                         │  transient (abnormal) / permanent → the node goes down
    caller ── stop ───▶ master: prep_stop → exit(top, "shutdown") → wait → stop(state)

Distributed applications: an application named in the kernel `distributed` parameter whose
priority list names this node is placed by the node's coordinator (`pyotp._dist_ac`,
Erlang's dist_ac): it runs on one node of the list at a time, fails over after its timeout
when that node goes down, and is taken over by a better node that starts it; on the other
nodes it is started but not running (left out of `which_applications`, as in Erlang).

The env of an application is its `App.env` overridden by the node config
(`pyotp.run(config=...)`: one table per application, as in Erlang's sys.config).
Reports go to the logger `pyotp.application`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from schedulers import current_process, get, receive_matching
from transport import BadArg, CallExit, Crash, Exit, NotInProcess, OtpError, Pid, StartError

from . import _api, _config, _dist_ac, _gen

__all__ = [
    "App",
    "Application",
    "ensure_all_started",
    "get_all_env",
    "get_env",
    "load",
    "loaded_applications",
    "set_env",
    "start",
    "stop",
    "takeover",
    "unload",
    "which_applications",
]

log = logging.getLogger("pyotp.application")

_TYPES = ("temporary", "transient", "permanent")


class Application:
    """Base class of an application callback module (`App(..., mod=MyApp)`).

    The framework instantiates the class once per start, inside the application master.

    Client call → callback it triggers:
        `start(name)`, `ensure_all_started(name)` → `start("normal", app.start_args)`
        `takeover(name, type)` → `start(("takeover", node), app.start_args)`
        `stop(name)` → `prep_stop(state)`, the tree is shut down, then `stop(state)`
        the top supervisor dies → `prep_stop(state)`, then `stop(state)`

    `start` returns the top supervisor's pid, or `(pid, state)` (Erlang's `{ok, Pid}` and
    `{ok, Pid, State}` as `("ok", pid[, state])` are accepted too); `("error", reason)` or
    an exception fails the start. Callbacks may be `def` or `async def`.
    """

    def start(self, start_type: Any, args: Any) -> Any:
        """Start the application's supervision tree; return its top pid or `(pid, state)`."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement start()")

    def prep_stop(self, state: Any) -> Any:
        """Run before the tree is stopped; return the state passed on to `stop`."""
        return state

    def stop(self, state: Any) -> None:
        """Run after the tree has stopped (its return value is ignored)."""
        return None


class App:
    """An application resource (Erlang's `.app` file): name, callback module, deps, env.

    Args:
        name: the application's name (a non-empty str).
        mod: an `Application` subclass, or None for a library application (nothing to run:
            starting it only marks it started).
        vsn: the version string.
        description: a one-line description (shown by `which_applications`).
        applications: the applications that must be started before this one: names, or
            `App` objects (which `ensure_all_started` loads when needed).
        env: the default env, a dict with str keys (overridden by the node config).
        start_args: the `args` passed to `mod.start(start_type, args)` (default `[]`).

    Raises:
        BadArg: an argument has the wrong type or value.
    """

    __slots__ = ("_deps", "applications", "description", "env", "mod", "name", "start_args",
                 "vsn")

    def __init__(
        self,
        name: str,
        mod: type[Application] | None = None,
        vsn: str = "",
        description: str = "",
        applications: list[str | App] | tuple[str | App, ...] = (),
        env: dict[str, Any] | None = None,
        start_args: Any = None,
    ) -> None:
        if type(name) is not str or not name:
            raise BadArg(f"App expects a non-empty str name, got {name!r}")
        if mod is not None and not (isinstance(mod, type) and issubclass(mod, Application)):
            raise BadArg(
                f"App {name!r}: mod= expects an application.Application subclass or None, "
                f"got {mod!r}"
            )
        if type(vsn) is not str:
            raise BadArg(f"App {name!r}: vsn= expects a str, got {vsn!r}")
        if type(description) is not str:
            raise BadArg(f"App {name!r}: description= expects a str, got {description!r}")
        if not isinstance(applications, (list, tuple)):
            raise BadArg(
                f"App {name!r}: applications= expects a list of names or App objects, "
                f"got {applications!r}"
            )
        names: list[str] = []
        deps: dict[str, App] = {}
        for dep in applications:
            if isinstance(dep, App):
                deps[dep.name] = dep
                dep_name = dep.name
            elif type(dep) is str and dep:
                dep_name = dep
            else:
                raise BadArg(
                    f"App {name!r}: applications= expects names or App objects, got {dep!r}"
                )
            if dep_name == name:
                raise BadArg(f"App {name!r}: an application cannot depend on itself")
            names.append(dep_name)
        if env is None:
            env = {}
        if not isinstance(env, dict) or not all(type(k) is str for k in env):
            raise BadArg(f"App {name!r}: env= expects a dict with str keys, got {env!r}")
        self.name = name
        self.mod = mod
        self.vsn = vsn
        self.description = description
        self.applications = tuple(names)
        self.env = dict(env)
        self.start_args = [] if start_args is None else start_args
        self._deps = deps

    def __repr__(self) -> str:
        return f"App({self.name!r}, vsn={self.vsn!r})"


# --------------------------------------------------------------------- the node's table


class _Running:
    """Internal: a started (or starting) application."""

    __slots__ = ("dist", "master", "ready", "standby", "type", "waiters")

    def __init__(self, type_: str) -> None:
        self.master: Pid | None = None  # None for a library application
        self.type = type_
        self.ready = False  # False while its master is still in Application.start
        self.waiters: list[Pid] = []  # ensure_all_started callers waiting for the start
        self.dist = False  # a distributed application: "$dist_ac" decides where it runs
        self.standby = False  # distributed, started here but running on another node


class _Table:
    """Internal: loaded and started applications of one node (Erlang's ac_tab)."""

    def __init__(self, sched: Any) -> None:
        self.sched = sched
        self.loaded: dict[str, App] = {}
        self.env: dict[str, dict[str, Any]] = {}
        self.running: dict[str, _Running] = {}  # insertion order = start order


_table: _Table | None = None


def _tab(what: str) -> _Table:
    global _table
    sched = get()
    if sched is None:
        raise NotInProcess(what)
    if _table is None or _table.sched is not sched:
        _table = _Table(sched)  # a new node in this OS process starts with an empty table
    return _table


def _check_app_name(name: Any, what: str) -> None:
    if type(name) is not str or not name:
        raise BadArg(f"{what} expects an application name (a non-empty str), got {name!r}")


def _check_type(type_: Any, what: str) -> None:
    if type_ not in _TYPES:
        raise BadArg(
            f"{what}: type must be 'temporary', 'transient' or 'permanent', got {type_!r}",
            ("invalid_restart_type", type_),  # Erlang's reason
        )


# --------------------------------------------------------------------- load, env


def load(app: App) -> None:
    """Load `app`: make it known to the node and compute its env.

    The env is `app.env` overridden by the node config's table for `app.name`.

    Raises:
        BadArg: `app` is not an `App`.
        OtpError: `("already_loaded", name)` when an application of that name is loaded.
    """
    tab = _tab("application.load()")
    if not isinstance(app, App):
        raise BadArg(f"application.load expects an application.App, got {app!r}")
    if app.name in tab.loaded:
        raise OtpError(("already_loaded", app.name), f"application {app.name!r} is already loaded")
    _load(tab, app)


def _load(tab: _Table, app: App) -> None:
    # As Erlang: keys set with set_env before the load stay unless the App or the config
    # sets them.
    env = tab.env.get(app.name, {})
    env.update(app.env)
    env.update(_config.app_env(app.name))
    tab.loaded[app.name] = app
    tab.env[app.name] = env


def unload(name: str) -> None:
    """Unload a loaded application that is not running (its env is dropped).

    Raises:
        OtpError: `("not_loaded", name)`, or `("running", name)` while it is started.
    """
    tab = _tab("application.unload()")
    _check_app_name(name, "application.unload")
    if name not in tab.loaded:
        raise OtpError(("not_loaded", name), f"application {name!r} is not loaded")
    if name in tab.running:
        raise OtpError(("running", name), f"application {name!r} is running: stop it first")
    del tab.loaded[name]
    tab.env.pop(name, None)


def loaded_applications() -> list[tuple[str, str, str]]:
    """Return `(name, description, vsn)` of every loaded application."""
    tab = _tab("application.loaded_applications()")
    return [(a.name, a.description, a.vsn) for a in tab.loaded.values()]


def get_env(app: str, key: str, default: Any = None) -> Any:
    """Return the env value `key` of application `app`, or `default` when unset.

    An application that is not loaded yet still sees its table of the node config.
    """
    tab = _tab("application.get_env()")
    _check_app_name(app, "application.get_env")
    env = tab.env.get(app)
    if env is None:
        env = _config.app_env(app)
    return env.get(key, default)


def get_all_env(app: str) -> dict[str, Any]:
    """Return a copy of the whole env of application `app` (empty when it has none)."""
    tab = _tab("application.get_all_env()")
    _check_app_name(app, "application.get_all_env")
    env = tab.env.get(app)
    return dict(env) if env is not None else _config.app_env(app)


def set_env(app: str, key: str, value: Any) -> None:
    """Set the env value `key` of application `app`.

    Set before `app` is loaded, the value stays unless its `App.env` or the node config
    sets `key` (as in Erlang).

    Raises:
        BadArg: `app` or `key` is not a non-empty str.
    """
    tab = _tab("application.set_env()")
    _check_app_name(app, "application.set_env")
    if type(key) is not str:
        raise BadArg(f"application.set_env expects a str key, got {key!r}")
    env = tab.env.get(app)
    if env is None:
        env = tab.env[app] = _config.app_env(app)
    env[key] = value


def which_applications() -> list[tuple[str, str, str]]:
    """Return `(name, description, vsn)` of every started application, newest first."""
    tab = _tab("application.which_applications()")
    out = []
    for name, r in tab.running.items():
        if r.ready and not r.standby:  # as Erlang: not one that runs on another node
            a = tab.loaded[name]
            out.append((a.name, a.description, a.vsn))
    out.reverse()
    return out


# --------------------------------------------------------------------- start, stop


def _resolve(tab: _Table, name_or_app: Any, what: str) -> App:
    if isinstance(name_or_app, App):
        have = tab.loaded.get(name_or_app.name)
        if have is None:
            _load(tab, name_or_app)
            return name_or_app
        return have  # already loaded (Erlang's start ignores already_loaded)
    _check_app_name(name_or_app, what)
    app = tab.loaded.get(name_or_app)
    if app is None:
        raise OtpError(
            ("not_loaded", name_or_app),
            f"{what}: application {name_or_app!r} is not loaded "
            "(pass its App object or call application.load(app) first)",
        )
    return app


async def start(name_or_app: str | App, type: str = "temporary") -> None:
    """Start an application whose dependencies are started (loading an `App` if needed).

    Behind the scenes:
    1. Every name in `app.applications` must be started already.
    2. An application master process is spawned; it instantiates `app.mod` and runs
       `start("normal", app.start_args)`, then links to the returned top pid.
    3. `start` returns once the callback has returned.

    Args:
        name_or_app: a loaded application's name, or an `App` (loaded if it is not).
        type: "temporary" (its death is only reported), "transient" (an abnormal death
            takes the node down) or "permanent" (any death takes the node down).

    A start while another process is starting the same application waits for that start
    and gets its result, as in Erlang.

    Raises:
        OtpError: `("already_started", name)`; `("not_started", dep)` when a dependency is
            not started; `("not_loaded", name)` for an unknown name; the start failure,
            as in Erlang `(reason, (mod, "start", [start_type, args]))` or
            `("bad_return", ((mod, "start", [start_type, args]), returned))`.
        BadArg: a wrong argument; an unknown `type` carries Erlang's reason
            `("invalid_restart_type", type)`.
    """
    await _start(name_or_app, type, "normal", "application.start")


async def takeover(name_or_app: str | App, type: str = "temporary") -> None:
    """Move a distributed application to this node.

    Behind the scenes (an application of the kernel `distributed` parameter whose list
    names this node, started on this node, so running here or elsewhere):
    1. This node asks the other nodes of the list which one runs the application.
    2. It starts the application here with start type `("takeover", old_node)`.
    3. Once that start has returned, the old node stops its instance (prep_stop, the tree,
       stop) and stays a participant.

    Any other application (or a node that is not distributed) is started here as by
    `start`, with start type `("takeover", node())`, so `Application.start` can tell a
    takeover apart.

    Raises:
        OtpError: as for `start`; `("already_running_locally", name)` when the distributed
            application runs on this node already; `("not_running_distributed", name)`
            when it runs on no other node, or was never started on this one (only loaded,
            or not even that), as Erlang's.
    """
    tab = _tab("application.takeover()")
    current_process("application.takeover()")
    name = name_or_app.name if isinstance(name_or_app, App) else name_or_app
    _check_app_name(name, "application.takeover")
    coord = _dist_ac.coordinator_for(name)
    if coord is not None:
        _check_type(type, "application.takeover")
        entry = tab.running.get(name)
        if entry is None or not entry.dist or not entry.ready:
            raise OtpError(("not_running_distributed", name),
                           f"application.takeover: {name!r} is not started on this node "
                           "(a distributed application is taken over by a node that started "
                           "it: call application.start first)")
        entry.type = type
        reply = await _gen.call(coord, ("takeover", name), None, what="application.takeover")
        _raise_if_error(reply)
        return
    await _start(name_or_app, type, ("takeover", _api.node()), "application.takeover")


def _raise_if_error(reply: Any) -> None:
    if type(reply) is tuple and len(reply) == 3 and reply[0] == "error":
        raise OtpError(reply[1], reply[2])


async def _start(name_or_app: Any, type_: Any, start_type: Any, what: str) -> None:
    tab = _tab(f"{what}()")
    me = current_process(f"{what}()")
    _check_type(type_, what)
    app = _resolve(tab, name_or_app, what)
    name = app.name
    running = tab.running.get(name)
    if running is not None and running.ready:
        raise OtpError(("already_started", name), f"{what}: {name!r} is already started")
    if running is not None:
        # Being started by another process: as Erlang, this start gets the same result.
        await _wait_started(me, running, name)
        return
    for dep in app.applications:
        r = tab.running.get(dep)
        if r is None or not r.ready:
            raise OtpError(
                ("not_started", dep),
                f"{what}: {name!r} needs {dep!r}, which is not started "
                "(start it first, or use application.ensure_all_started)",
            )
    entry = tab.running[name] = _Running(type_)
    coord = _dist_ac.coordinator_for(name) if app.mod is not None else None
    try:
        if coord is not None:
            # Distributed: the coordinator decides where it runs (here, or elsewhere and
            # this node stands by) and starts it here itself when it is this node.
            entry.dist = True
            _raise_if_error(await _gen.call(coord, ("start", name), None, what=what))
        elif app.mod is not None:
            try:
                await _start_master(app, start_type, tab, entry, what)
            except StartError as e:
                raise OtpError(
                    e.reason, f"{what}: {name!r} failed to start: {e.reason!r}"
                ) from None
    except OtpError as e:
        _abort(tab, name, entry, e.reason)
        raise
    except BaseException:
        _abort(tab, name, entry, ("not_started", name))
        raise
    entry.ready = True
    _wake(entry, None)
    log.info("application %r started (type %s)", name, type_)


def _abort(tab: _Table, name: str, entry: _Running, reason: Any) -> None:
    if tab.running.get(name) is entry:
        del tab.running[name]
    _wake(entry, reason)


def _wake(entry: _Running, error: Any) -> None:
    """Tell the processes waiting for `entry`'s start its result (None: started)."""
    for pid in entry.waiters:
        _api.send(pid, ("$app_ready", entry, error))
    entry.waiters.clear()


async def ensure_all_started(name_or_app: str | App, type: str = "temporary") -> list[str]:
    """Start an application and, first, every dependency that is not started, in order.

    Dependencies given as `App` objects are loaded when needed; names must be loaded.
    If a start fails, the applications this call started are stopped again.

    Returns:
        The names this call started, in start order (empty if all were running).

    Raises:
        OtpError: `(name, reason)` naming the application that failed to start, `reason`
            as for `start` (e.g. `("ghost", ("not_loaded", "ghost"))`), as OTP's
            `{error, {AppName, Reason}}`; or `("circular_dependencies", [names])`.
    """
    tab = _tab("application.ensure_all_started()")
    me = current_process("application.ensure_all_started()")
    _check_type(type, "application.ensure_all_started")
    order: list[App] = []
    _plan(tab, name_or_app, order, [], set())
    started: list[str] = []
    try:
        for app in order:
            entry = tab.running.get(app.name)
            if entry is not None and entry.ready:
                continue
            try:
                if entry is not None:  # being started by another process
                    await _wait_started(me, entry, app.name)
                    continue
                await _start(app, type, "normal", "application.ensure_all_started")
            except OtpError as e:
                # As OTP's ensure_all_started: {error, {AppName, Reason}}.
                raise OtpError((app.name, e.reason), str(e)) from None
            started.append(app.name)
    except BaseException:
        for name in reversed(started):
            try:
                await stop(name)
            except OtpError:
                pass
        raise
    return started


def _plan(tab: _Table, name_or_app: Any, order: list[App], path: list[str], seen: set) -> None:
    # Depth-first over dependencies; `order` gets each application after all it needs.
    what = "application.ensure_all_started"
    try:
        app = _resolve(tab, name_or_app, what)
    except BadArg:
        raise  # not a name or an App at all: the caller's wrong argument, as is
    except OtpError as e:
        # The application that cannot be started is named, as OTP's {error, {App, Reason}}.
        raise OtpError((e.reason[1], e.reason), str(e)) from None
    if app.name in path:
        cycle = [*path[path.index(app.name):], app.name]
        raise OtpError(("circular_dependencies", cycle), f"{what}: circular dependencies {cycle}")
    if app.name in seen:
        return
    path.append(app.name)
    for dep in app.applications:
        r = tab.running.get(dep)
        if r is not None and r.ready:
            continue
        _plan(tab, app._deps.get(dep, dep), order, path, seen)
    path.pop()
    seen.add(app.name)
    order.append(app)


async def _wait_started(me: Any, entry: _Running, name: str) -> None:
    entry.waiters.append(me.pid)

    def is_ready(m: Any) -> bool:
        return type(m) is tuple and len(m) == 3 and m[0] == "$app_ready" and m[1] is entry

    error = (await receive_matching(me, is_ready, None, ()))[2]
    if error is not None:
        raise OtpError(error, f"{name!r} failed to start in another process: {error!r}")


async def stop(name: str) -> None:
    """Stop a started application: `prep_stop`, shut its tree down, then `stop(state)`.

    Stopping is never a crash: a permanent application stopped this way does not take the
    node down. The application stays loaded.

    Raises:
        OtpError: `("not_started", name)` when it is not started (Erlang gives this also
            for a name that is not loaded).
    """
    tab = _tab("application.stop()")
    current_process("application.stop()")
    _check_app_name(name, "application.stop")
    entry = tab.running.get(name)
    if entry is None or not entry.ready:
        raise OtpError(("not_started", name), f"application.stop: {name!r} is not started")
    if entry.dist:
        coord = _dist_ac.coordinator_for(name)
        if coord is not None:
            # Where it runs, the others hear it is stopped (and do not fail over); where
            # it stands by, this node only stops taking part.
            await _gen.call(coord, ("stop", name), None, what="application.stop")
            return
    await _stop_here(tab, name, entry)


async def _stop_here(tab: _Table, name: str, entry: _Running) -> None:
    if entry.master is None:
        if tab.running.get(name) is entry:
            del tab.running[name]
        _report(name, "stopped", entry.type)
        return
    try:
        await _gen.call(entry.master, "$app_stop", None, what="application.stop")
    except CallExit:
        pass  # its tree died just before the request: it is stopped all the same


async def _stop_all() -> None:
    """Internal: the node is shutting down (the end of `pyotp.run`): stop every started
    application, newest first, as Erlang's init:stop does, while the node is still connected.

    A distributed application is stopped here without telling the other nodes (unlike
    `stop`): they see the node go down and fail over, as in Erlang. The coordinator is told
    first so it no longer starts anything on this node.
    """
    tab = _tab("application")
    await _dist_ac.shutting_down()
    for name in reversed(list(tab.running)):
        entry = tab.running.get(name)
        if entry is None or not entry.ready:
            continue  # still starting: the node's shutdown ends it with its processes
        try:
            await _stop_here(tab, name, entry)
        except Exception:  # one failing stop never keeps the others running
            log.exception("application %r: failed to stop at node shutdown", name)


# --------------------------------------------------------------------- for _dist_ac
# The coordinator of distributed applications ("$dist_ac") runs these on this node.


async def _dist_run(name: str, start_type: Any) -> None:
    """Internal: start the (standing-by or starting) distributed `name` on this node."""
    tab = _tab("application")
    app, entry = tab.loaded[name], tab.running[name]
    if entry.master is not None:
        return
    await _start_master(app, start_type, tab, entry, "application.start")
    entry.standby = False
    log.info("application %r runs here (start type %r)", name, start_type)


def _dist_mark_standby(name: str) -> None:
    """Internal: `name` is started here but runs on another node."""
    entry = _tab("application").running.get(name)
    if entry is not None:
        entry.standby = True


async def _dist_move_away(name: str) -> None:
    """Internal: stop the local instance of `name` (it runs elsewhere now); keep it started."""
    entry = _tab("application").running.get(name)
    if entry is None or entry.master is None:
        return
    master, entry.master = entry.master, None
    entry.standby = True
    try:
        await _gen.call(master, "$app_move", None, what="application takeover")
    except CallExit:
        pass  # its tree died just before: stopped all the same


async def _dist_stop(name: str) -> None:
    """Internal: `application.stop` of a distributed application, on this node."""
    tab = _tab("application")
    entry = tab.running.get(name)
    if entry is not None:
        await _stop_here(tab, name, entry)


# --------------------------------------------------------------------- the application master


async def _call_back(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _parse_start(ret: Any) -> tuple[Pid, Any] | None:
    if type(ret) is Pid:
        return ret, None
    if type(ret) is tuple:
        if len(ret) == 2 and type(ret[0]) is Pid:
            return ret[0], ret[1]
        if len(ret) in (2, 3) and ret[0] == "ok" and type(ret[1]) is Pid:
            return ret[1], ret[2] if len(ret) == 3 else None
    return None


async def _start_master(app: App, start_type: Any, tab: _Table, entry: _Running,
                        what: str) -> None:
    """Start the application master of `entry`, and a process that watches it.

    Raises:
        StartError: the start callback failed.
    """
    me = current_process(what)
    master = entry.master = await _gen.start(
        _master, (app, start_type, tab, entry),
        link=False, spawn_opts={"trap_exit": True}, what=what,
    )
    watcher = _api.spawn(_watch_master, me.pid, master, tab, entry, app.name)

    def is_watching(m: Any) -> bool:
        return type(m) is tuple and len(m) == 2 and m[0] == "$app_watching" and m[1] == watcher

    await receive_matching(me, is_watching, None, ())  # so its monitor sees the real reason


async def _watch_master(starter: Pid, master: Pid, tab: _Table, entry: _Running,
                        name: str) -> None:
    """Internal: end the application when its master dies without ending it itself.

    Erlang's application_controller is linked to every master: one killed from outside
    (`exit(master, "kill")`) ends its application by its restart type. A master that
    stops or ends its application itself leaves nothing to do here.
    """
    me = current_process("application master watcher")
    ref = _api.monitor(master)
    _api.send(starter, ("$app_watching", me.pid))

    def is_down(m: Any) -> bool:
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref

    reason = (await receive_matching(me, is_down, None, ()))[4]
    if entry.master == master and tab.running.get(name) is entry:
        _terminated(tab, entry, name, reason)


async def _master(starter: Any, app: App, start_type: Any, tab: _Table, entry: _Running) -> None:
    """Internal: the application master; traps exits and is linked to the top process."""
    me = current_process("application master")
    mfa = (f"{app.mod.__module__}.{app.mod.__qualname__}", "start", [start_type, app.start_args])
    try:
        inst = app.mod()
        ret = await _call_back(inst.start, start_type, app.start_args)
    except Exception as e:  # a failing start callback is a start error
        starter.fail((Crash.from_exception(e), mfa))
        return
    if type(ret) is tuple and len(ret) == 2 and ret[0] == "error":
        starter.fail((ret[1], mfa))
        return
    parsed = _parse_start(ret)
    if parsed is None:
        starter.fail(("bad_return", (mfa, ret)))
        return
    top, state = parsed
    _api.link(top)  # a dead top arrives as ("EXIT", top, "noproc"): we trap exits
    starter.ok()

    while True:
        msg = await receive_matching(me, None, None, ())
        if type(msg) is not tuple or len(msg) != 3:
            continue  # stray messages are dropped, as by Erlang's master
        if msg[0] == "EXIT" and msg[1] == top:
            # The tree died on its own: stop callbacks, then its restart type decides.
            reason = msg[2]
            await _stop_callbacks(app, inst, state)
            if entry.dist and entry.master == me.pid:
                coord = _dist_ac.coordinator_for(app.name)
                if coord is not None:  # it is stopped on every node, as in Erlang
                    _api.send(coord, ("$dac_local_down", app.name))
            _terminated(tab, entry, app.name, reason)
            raise Exit(reason)
        if msg[0] == "EXIT":
            # Someone else (the node shutting down, or exit/2) ends the master: shut the
            # tree down with that reason first, as Erlang's master does for its parent.
            reason = msg[2]
            state = await _prep_stop(app, inst, state)
            await _shutdown_top(me, top, reason)
            await _stop_callbacks(app, inst, state, prep=False)
            _terminated(tab, entry, app.name, reason)
            raise Exit(reason)
        if msg[0] == "$gen_call" and msg[2] in ("$app_stop", "$app_move"):
            state = await _prep_stop(app, inst, state)
            await _shutdown_top(me, top, "shutdown")
            await _stop_callbacks(app, inst, state, prep=False)
            if msg[2] == "$app_stop":
                if tab.running.get(app.name) is entry:
                    del tab.running[app.name]
                _report(app.name, "stopped", entry.type)
            else:  # taken over by another node: still started here, standing by
                log.info("application %r stopped here: it runs on another node now", app.name)
            _gen.reply(msg[1], None)
            return
        if msg[0] == "$gen_call":
            _gen.reply(msg[1], ("error", "unknown_request"))
        elif msg[0] == "$system" and msg[2] == "get_state":
            _gen.reply(msg[1], state)
        elif msg[0] == "$system":
            _gen.reply(msg[1], ("error", "unsupported"))


async def _shutdown_top(me: Any, top: Pid, reason: Any) -> None:
    _api.exit(top, reason)

    def is_top_exit(m: Any) -> bool:
        return type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == top

    # No timeout, as in Erlang: the top supervisor bounds its children's shutdown itself.
    await receive_matching(me, is_top_exit, None, ())


async def _prep_stop(app: App, inst: Application, state: Any) -> Any:
    try:
        return await _call_back(inst.prep_stop, state)
    except Exception:  # reported, the stop goes on (Erlang's shutdown_error)
        log.exception("application %r: prep_stop failed", app.name)
        return state


async def _stop_callbacks(app: App, inst: Application, state: Any, prep: bool = True) -> None:
    if prep:
        state = await _prep_stop(app, inst, state)
    try:
        await _call_back(inst.stop, state)
    except Exception:  # Erlang's master ignores a failing stop/1 too
        log.exception("application %r: stop failed", app.name)


def _report(name: str, reason: Any, type_: str) -> None:
    log.info("application: %s, exited: %r, type: %s", name, reason, type_)


def _terminated(tab: _Table, entry: _Running, name: str, reason: Any) -> None:
    # Drop the entry before anything else so which_applications no longer lists it.
    if tab.running.get(name) is entry:
        del tab.running[name]
    type_ = entry.type
    fatal = type_ == "permanent" or (type_ == "transient" and reason != "normal")
    if fatal and _config.halt(("application_terminated", name, reason)):
        log.error(
            "application: %s, exited: %r, type: %s; taking the node down", name, reason, type_
        )
    else:
        _report(name, reason, type_)
