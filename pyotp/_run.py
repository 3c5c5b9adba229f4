"""`pyotp.run`: boot a node, run `main` as its first process, shut everything down.

Behind the scenes:
1. A uvloop event loop is made and a `Scheduler` installed as this OS process's scheduler.
2. `main(*args)` is spawned as the first process; `run` waits for it to end.
3. When it has ended, the started applications are stopped, newest first (prep_stop, the
   tree, stop), while the node is still connected: Erlang's init:stop order. A distributed
   application stopped this way is not announced as stopped, so once the node has left the
   network the other nodes of its list fail over (see `pyotp._dist_ac`).
4. The node leaves the network; every remaining process gets exit reason "shutdown"
   (trapping ones as an EXIT message from their parent, so behaviours run `terminate`);
   stragglers are killed after a grace period.
5. The loop closes; `run` returns main's value or raises `ProcessCrash`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
from typing import Any, Callable

import uvloop

from schedulers import Scheduler, get, set_current
from schedulers._load import LoadMonitor
from schedulers._nodes import NodeControl, parse_node
from schedulers._pool import Pool
from transport import BadArg, OtpError, ProcessCrash
from transport._codec import to_wire
from transport._cookie import resolve_cookie, validate_cookie

from . import _config, _dist_ac, application, s_group

__all__ = ["run"]


def run(
    main: Callable[..., Any],
    *args: Any,
    schedulers: int | str = 1,
    name: str | None = None,
    cookie: str | None = None,
    attributes: dict[str, Any] | None = None,
    config: str | dict[str, Any] | None = None,
) -> Any:
    """Boot a node, run `main(*args)` as its first process, return its value, shut down.

    Args:
        main: an `async def` or plain function; the node's first process.
        schedulers: number of scheduler OS processes, or "auto" (one per usable CPU).
        name: a node name like "a@127.0.0.1" to make the node distributed.
        cookie: the distribution cookie.
        attributes: node attributes for placement.
        config: application env and kernel settings, a dict or a TOML file path.

    SIGTERM stops the node cleanly (main ends with "shutdown"; `run` returns None), and so
    does Ctrl-C (SIGINT), which then raises KeyboardInterrupt.

    Returns:
        What `main` returned.

    Raises:
        KeyboardInterrupt: Ctrl-C, after the node stopped cleanly.
        ProcessCrash: `main` ended with a reason other than "normal"; `.reason` is it.
        BadArg: an argument has the wrong type or value.
        OtpError: a runtime is already running in this OS process.
    """
    if not callable(main):
        raise BadArg(f"run expects a callable main, got {type(main).__name__}: {main!r}")
    if schedulers == "auto":
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        schedulers = max(1, n or 1)
    if type(schedulers) is not int or schedulers < 1:
        raise BadArg(f"run schedulers= expects an int >= 1 or 'auto', got {schedulers!r}")
    if name is not None:
        try:
            parse_node(name)
        except (ValueError, TypeError):
            raise BadArg(
                f"run name= expects a node name like 'a@127.0.0.1' or 'a@127.0.0.1:4400', "
                f"got {name!r}"
            ) from None
    if cookie is not None:
        validate_cookie(cookie, "run cookie=")
    if attributes is not None and (
        type(attributes) is not dict or not all(type(k) is str for k in attributes)
    ):
        raise BadArg(f"run attributes= expects a dict with str keys, got {attributes!r}")
    if attributes:
        try:
            to_wire(attributes)  # other nodes read them for placement
        except BadArg as e:
            raise BadArg(f"run attributes=: {e}") from None
    if config is not None and not isinstance(config, (dict, str, os.PathLike)):
        raise BadArg(f"run config= expects a dict or a TOML file path, got {config!r}")
    cfg = _config.load(config)
    _max_message_size(cfg)  # kernel settings refused by name before anything boots
    _net_ticktime(cfg)
    _busy_wait(cfg)
    _dist_ac.parse(cfg)
    _dist_ac.sync_settings(cfg)
    s_group.parse_config(cfg)
    if get() is not None:
        raise OtpError("already_running", "pyotp.run: a node is already running in this process")
    # Green processes allocate many small long-lived objects (process, pid, task, mailbox);
    # with CPython's default young-generation threshold (700) the collector would walk them
    # over and over. A node raises it for its lifetime and restores it on return.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], 10_000), *thresholds[1:])
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(
                _boot(main, args, name, cookie, cfg, schedulers, dict(attributes or {}))
            )
    finally:
        gc.set_threshold(*thresholds)


async def _boot(
    main: Callable[..., Any],
    args: tuple,
    name: str | None,
    cookie: str | None,
    cfg: dict,
    schedulers: int,
    attributes: dict[str, Any],
) -> Any:
    loop = asyncio.get_running_loop()
    # A creation unique to this incarnation of the node: pids of an earlier run of a node
    # with the same name never reach this one's processes.
    creation = secrets.randbelow(2**30) + 1
    sched = Scheduler(loop, node=name or "nonode@nohost", creation=creation)
    set_current(sched)
    node = _config.boot(cfg)
    node.attributes = attributes
    monitor = LoadMonitor(sched)
    monitor.start()
    sched.load = monitor
    control = None
    pool = None
    max_size = _max_message_size(cfg)
    busy_wait = _busy_wait(cfg)
    stopped_by_signal = False
    interrupted = False

    def on_sigint() -> None:
        # Ctrl-C: the same clean stop, then KeyboardInterrupt to the caller (not a crash).
        nonlocal interrupted
        interrupted = True
        on_sigterm()

    def on_sigterm() -> None:
        # SIGTERM stops the node cleanly, like Ctrl-C (and Erlang's init:stop on SIGTERM).
        nonlocal stopped_by_signal
        stopped_by_signal = True
        main_proc = sched.procs.get(main_serial) if main_serial is not None else None
        if main_proc is not None:
            sched.terminate(main_proc, "shutdown")

    main_serial = None
    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (ValueError, RuntimeError, NotImplementedError):
        pass  # not the main thread: the signals keep their default meaning
    try:
        # Inside the try: a node that fails to boot (e.g. a host it cannot listen on) still
        # leaves this OS process clean, so a later `run` works.
        if name is not None:
            host = parse_node(name)[1]
            pool = Pool(
                sched, schedulers, host=host, max_message_size=max_size, busy_wait=busy_wait
            )
            ticktime = _net_ticktime(cfg)
            control = NodeControl(pool, name, resolve_cookie(cookie), ticktime)
            sched.router.net_connect = control.connect
            sched.router.net_disconnect = control.disconnect
            sched.router.node_control = control
        elif schedulers > 1:
            pool = Pool(sched, schedulers, max_message_size=max_size, busy_wait=busy_wait)
        if pool is not None:
            await pool.start()
        if control is not None:
            await control.start()
            await _kernel_boot(sched, cfg)
        pid = sched.spawn(main, args, None)
        main_serial = pid.serial
        node.main = pid
        proc = pid._proc
        result = await _outcome(proc)
        reason = proc.reason
        if interrupted:
            raise KeyboardInterrupt  # after the clean stop below
        if stopped_by_signal:
            return result
        if node.halted is not None:  # an application took the node down (see _config.halt)
            raise ProcessCrash(node.halted, f"node stopped: {node.halted!r}")
        if reason != "normal":
            raise ProcessCrash(reason, f"main process exited with reason: {reason}")
        return result
    finally:
        try:
            if main_serial is not None:
                await _stop_applications(sched)
            if control is not None:
                await control.stop()
            if pool is not None:
                await pool.stop()
            else:
                await sched.shutdown()
        finally:
            if pool is not None:
                pool.kill_all()
            monitor.stop()
            _config.stop()
            set_current(None)


async def _outcome(proc: Any) -> Any:
    """Wait for a process this module spawned; return what it returned (None if killed)."""
    try:
        return await proc.task
    except asyncio.CancelledError:
        if proc.reason is None:
            raise  # run itself is being cancelled, not the process
        return None


async def _stop_applications(sched: Scheduler) -> None:
    """Stop the started applications before the node leaves the network (a process of its
    own: stopping one is a call to its application master)."""
    await _outcome(sched.spawn(application._stop_all, (), None)._proc)


async def _kernel_boot(sched: Scheduler, cfg: dict) -> None:
    """Take the s_groups of the config, start the distributed-applications coordinator and
    sync with the sync_nodes_* nodes (each a process of its own, as they talk to other
    nodes) before `main` runs."""
    groups = s_group.parse_config(cfg)
    if groups:
        proc = sched.spawn(s_group.boot, (groups,), None)._proc
        await _outcome(proc)
        if proc.reason != "normal":
            raise OtpError(("kernel_boot_failed", proc.reason),
                           f"pyotp.run: taking the kernel s_groups failed: {proc.reason}")
    specs = _dist_ac.parse(cfg)
    mandatory, optional, timeout = _dist_ac.sync_settings(cfg)
    if not specs and timeout is None:
        return
    proc = sched.spawn(_dist_ac.boot, (specs, mandatory, optional, timeout), None)._proc
    missing = await _outcome(proc)
    if proc.reason != "normal":
        raise OtpError(("kernel_boot_failed", proc.reason),
                       f"pyotp.run: the node's kernel boot step failed: {proc.reason}")
    if missing:
        raise OtpError(
            ("sync_nodes_mandatory", missing),
            f"pyotp.run: the mandatory nodes {missing} (kernel sync_nodes_mandatory) were "
            f"not up within sync_nodes_timeout; the node does not boot",
        )


def _busy_wait(cfg: dict) -> float | None:
    """kernel scheduler_busy_wait_us: how long a process that just sent to another scheduler
    or node may poll for the answer before its scheduler sleeps (like erl +sbwt); 0 never."""
    value = cfg.get("kernel", {}).get("scheduler_busy_wait_us")
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 1_000_000:
        raise BadArg(
            f"kernel scheduler_busy_wait_us must be an int in 0..1000000 (microseconds), "
            f"got {value!r}"
        )
    return value / 1e6


def _net_ticktime(cfg: dict) -> float:
    """kernel net_ticktime: seconds a silent peer has before it is taken as down."""
    value = cfg.get("kernel", {}).get("net_ticktime", 60)
    if type(value) not in (int, float) or not value > 0 or value == float("inf"):
        raise BadArg(f"kernel net_ticktime must be a number of seconds > 0, got {value!r}")
    return float(value)


def _max_message_size(cfg: dict) -> int | None:
    value = cfg.get("kernel", {}).get("max_message_size")
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise BadArg(f"kernel max_message_size must be a positive int (bytes), got {value!r}")
    return value
