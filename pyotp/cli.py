"""The `pyotp` command line (also `python -m pyotp`): run, bench, top, ping.

Where it sits: the shell → **cli** → `pyotp.run` (a function as the node's first process) or
`pyotp.application` (an `App` started as a permanent application).

    pyotp run MODULE:FUNC   runs FUNC as the first process; exits when it returns
                            (0), or when it crashes (1, printing the reason)
    pyotp run MODULE:APP    starts the App (and its dependencies) as permanent applications;
                            runs until SIGTERM or Ctrl-C (stopped cleanly, 0) or until it
                            dies (1)
    pyotp ping NODE         boots a temporary node, connects: prints "pong" (0) or "pang" (1)
    pyotp top [NODE]        connects like ping and shows the node's schedulers and busiest
                            processes, refreshed every --interval s (or --once); without
                            NODE, every node registered with this host's port mapper (1
                            when there is none)
    a bad MODULE:ATTR, node name, option or config file exits with 2

Importing this module stays cheap: typer loads only when the command line is built.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import pyotp
from pyotp import application
from transport import Crash

__all__ = ["main"]

EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_PANG = 1


class _UsageError(Exception):
    """Internal: a bad command line; the message is printed and the exit code is 2."""


def _resolve_target(target: str) -> Any:
    """Import `MODULE:ATTR` (ATTR may be dotted) and return the object it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise _UsageError(
            f"expected a target like 'package.module:main' (MODULE:FUNC or MODULE:APP), "
            f"got {target!r}"
        )
    # As `python -m` does, let modules of the current directory be found.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            raise _UsageError(f"cannot import module {module_name!r}: {e}") from None
        raise  # the module exists but imports something missing: show the real error
    except (TypeError, ValueError) as e:  # not a module name at all, e.g. ".." or ".x"
        raise _UsageError(f"{module_name!r} is not a module name: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _parse_schedulers(value: str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise _UsageError(f"--schedulers expects an int >= 1 or 'auto', got {value!r}")
    return n


def _describe(reason: Any) -> str:
    if type(reason) is Crash:
        return f"{reason.type}: {reason.message}"
    return repr(reason)


async def _serve(app: Any) -> None:
    """First process of `pyotp run MODULE:APP`: start it, wait for a signal, stop it."""
    me = pyotp.self()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, pyotp.send, me, ("$signal", sig.name))
    try:
        try:
            await application.ensure_all_started(app, "permanent")
        except pyotp.OtpError as e:
            print(f"pyotp run: application {app.name!r} failed to start: {e}", file=sys.stderr)
            raise pyotp.Exit(("start_failed", app.name, e.reason)) from None
        print(f"pyotp: application {app.name!r} started; stop it with Ctrl-C or SIGTERM",
              file=sys.stderr, flush=True)
        msg = await pyotp.receive(("$signal", pyotp.ANY))
        print(f"pyotp: {msg[1]}: stopping {app.name!r}", file=sys.stderr, flush=True)
        # Returning ends the node: pyotp.run stops the started applications newest first
        # (nothing outlives an application it depends on) before it leaves the network, as
        # Erlang's init:stop. Not application.stop: that would tell the other nodes of a
        # distributed application that it is stopped, and none would fail over.
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _run_command(
    target: str, schedulers: str, name: str | None, cookie: str | None, config: str | None
) -> int:
    obj = _resolve_target(target)
    n = _parse_schedulers(schedulers)
    if isinstance(obj, application.App):
        main, args = _serve, (obj,)
    elif callable(obj):
        main, args = obj, ()
    else:
        raise _UsageError(
            f"{target!r} is a {type(obj).__name__}: expected a function or an application.App"
        )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        pyotp.run(main, *args, schedulers=n, name=name, cookie=cookie, config=config)
    except pyotp.BadArg as e:
        raise _UsageError(str(e)) from None
    except OSError as e:  # the node could not boot, e.g. a host or port it cannot listen on
        raise _UsageError(f"node {name} cannot start: {e.strerror or e}") from None
    except pyotp.ProcessCrash as e:
        print(f"pyotp run: {target} exited with reason: {_describe(e.reason)}",
              file=sys.stderr, flush=True)
        return EXIT_CRASH
    except KeyboardInterrupt:
        print("pyotp run: interrupted", file=sys.stderr)
        return 130
    return 0


# --------------------------------------------------------------------- ping, top


def _temp_node(target: str, prefix: str) -> str:
    """A unique name for a short-lived node on the host of `target` (with its own port, so
    it never registers with the port mapper)."""
    from schedulers._nodes import parse_node  # noqa: PLC0415 - only for ping/top

    try:
        host = parse_node(target)[1]
    except (ValueError, TypeError):
        raise _UsageError(
            f"expected a node name like 'n@host' or 'n@host:port', got {target!r}"
        ) from None
    with socket.socket() as s:
        try:
            s.bind((host, 0))
        except OSError:
            s.bind(("", 0))
        port = s.getsockname()[1]
    return f"{prefix}{os.getpid()}@{host}:{port}"


def _quiet_net_logs() -> None:
    # A refused or unreachable node is the answer here ("pang"), not an error to shout.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.CRITICAL)


async def _ping_main(node: str) -> bool:
    return await pyotp.net.connect(node)


def _ping_command(node: str, cookie: str | None) -> int:
    name = _temp_node(node, "ping")
    _quiet_net_logs()
    try:
        ok = pyotp.run(_ping_main, node, name=name, cookie=cookie)
    except pyotp.BadArg as e:
        raise _UsageError(str(e)) from None
    print("pong" if ok else "pang", flush=True)
    return 0 if ok else EXIT_PANG


async def _top_snapshot(limit: int = 10) -> dict[str, Any]:
    """Run on the watched node: its schedulers and busiest processes, as plain terms."""
    scheds = [
        (s.index, s.os_pid, s.processes, s.run_queue, s.long_steps, s.cpu, s.lag)
        for s in pyotp.scheduler_statistics()
    ]
    procs = []
    for pid in await pyotp.processes():
        info = await pyotp.process_info(pid)
        if info is None:
            continue
        fn = info.get("current_function")
        fn_name = ".".join(x for x in fn if x) if type(fn) is tuple else str(fn or "")
        procs.append((
            repr(pid), info.get("registered_name") or "", info["message_queue_len"],
            info["reductions"], info["scheduler"], info["status"], fn_name,
        ))
    procs.sort(key=lambda p: (-p[2], -p[3]))
    return {"node": pyotp.node(), "schedulers": scheds, "count": len(procs),
            "top": procs[:limit]}


def _render(snap: dict[str, Any]) -> str:
    lines = [f"node {snap['node']}: {snap['count']} processes", ""]
    lines.append(f"{'SCHED':>5} {'OS PID':>8} {'PROCS':>7} {'RUNQ':>6} {'LONG':>6} "
                 f"{'CPU%':>6} {'LAG ms':>8}")
    for index, os_pid, procs, runq, long_steps, cpu, lag in snap["schedulers"]:
        lines.append(f"{index:>5} {os_pid or '-':>8} {procs:>7} {runq:>6} {long_steps:>6} "
                     f"{cpu:>6.1f} {lag * 1000:>8.1f}")
    lines.append("")
    lines.append(f"{'PID':<34} {'NAME':<24} {'MSGQ':>6} {'REDS':>10} {'SCHED':>5} "
                 f"{'STATUS':<9} FUNCTION")
    for pid, name, qlen, reds, sched, status, fn in snap["top"]:
        lines.append(f"{pid:<34} {str(name)[:24]:<24} {qlen:>6} {reds:>10} {sched:>5} "
                     f"{status:<9} {fn}")
    return "\n".join(lines)


async def _top_main(nodes: list[str], interval: float | None, limit: int) -> int:
    """Watch `nodes`, one view each per refresh; a node that cannot be reached or stops
    answering is said on stderr and dropped. Exits 1 once no node is left."""
    watched = []
    for node in nodes:
        if await pyotp.net.connect(node):
            watched.append(node)
        else:
            print(f"pyotp top: cannot connect to {node} (pang)", file=sys.stderr, flush=True)
    if not watched:
        return EXIT_PANG
    clear = sys.stdout.isatty() and interval is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, pyotp.send, pyotp.self(), "$interrupted")
    try:
        while True:
            views = []
            for node in list(watched):
                try:
                    snap = await pyotp.rpc.call(node, _top_snapshot, limit, timeout=10.0)
                except pyotp.OtpError as e:
                    print(f"pyotp top: {node} did not answer: {e.reason!r}", file=sys.stderr,
                          flush=True)
                    watched.remove(node)
                    continue
                views.append(_render(snap))
            if not watched:
                return EXIT_PANG
            print(("\x1b[H\x1b[2J" if clear else "") + "\n\n".join(views), flush=True)
            if interval is None:
                return 0
            try:  # the pause between views; Ctrl-C ends it, and the command, cleanly
                await pyotp.receive("$interrupted", timeout=interval)
                return 0
            except pyotp.Timeout:
                pass
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _local_nodes() -> list[str]:
    """The nodes registered with this host's port mapper (`pyotp top` without a node), or
    [] after saying on stderr that there is none. Nodes named `n@host:port` skip the port
    mapper, so they are not found here: name them."""
    from transport import _epmd  # noqa: PLC0415 - only for top

    try:
        port = _epmd.epmd_port()
    except pyotp.BadArg as e:
        raise _UsageError(str(e)) from None
    try:
        nodes = _epmd.nodes(epmd_port=port)
        why = "no node is registered with this host's port mapper"
    except pyotp.OtpError:
        nodes = []
        why = "no port mapper answers on this host, so no node is registered here"
    if not nodes:
        print(f"pyotp top: no node to watch: {why} (port {port}, ${_epmd.EPMD_PORT_ENV}); "
              "give the node's name, like 'pyotp top n@host'", file=sys.stderr, flush=True)
    return nodes


def _top_command(
    node: str | None, cookie: str | None, interval: float, once: bool, limit: int
) -> int:
    if interval <= 0:
        raise _UsageError(f"--interval expects seconds > 0, got {interval!r}")
    if limit < 1:
        raise _UsageError(f"--limit expects an int >= 1, got {limit!r}")
    if node:
        nodes = [node]
    else:
        nodes = _local_nodes()
        if not nodes:
            return EXIT_PANG
    name = _temp_node(nodes[0], "top")
    _quiet_net_logs()
    try:
        return pyotp.run(_top_main, nodes, None if once else interval, limit, name=name,
                         cookie=cookie)
    except pyotp.BadArg as e:
        raise _UsageError(str(e)) from None
    except KeyboardInterrupt:
        return 0


def _bench_script() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(here, "scripts", "bench")


def _build() -> Any:
    import typer  # noqa: PLC0415 - ~100 ms: only when the command line runs

    cli = typer.Typer(
        name="pyotp",
        help="Erlang/OTP for Python: run applications and functions on a pyotp node.",
        add_completion=False,
        no_args_is_help=True,
    )

    @cli.command("run")
    def run_cmd(
        target: str = typer.Argument(..., help="MODULE:FUNC or MODULE:APP to run."),
        schedulers: str = typer.Option("1", "--schedulers", help="Schedulers: N or 'auto'."),
        name: str = typer.Option(None, "--name", help="Node name like n@host (distributed)."),
        cookie: str = typer.Option(None, "--cookie", help="Distribution cookie."),
        config: str = typer.Option(None, "--config", help="Node config TOML file."),
    ) -> None:
        """Run a function as the first process, or an App as a permanent application.

        A function: the command exits when it returns (exit 0) or crashes (exit 1).
        An App: it runs until SIGTERM or Ctrl-C (stopped cleanly, exit 0) or until it
        dies (exit 1).
        """
        try:
            code = _run_command(target, schedulers, name, cookie, config)
        except _UsageError as e:
            typer.echo(f"pyotp run: error: {e}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        raise typer.Exit(code)

    @cli.command(
        "bench",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
    )
    def bench_cmd(
        args: list[str] = typer.Argument(None, help="Arguments for scripts/bench."),  # noqa: B008 - typer idiom
    ) -> None:
        """Run scripts/bench with this Python, passing every argument through."""
        script = _bench_script()
        if not os.path.isfile(script):
            typer.echo(
                f"pyotp bench: error: {script} not found (it ships with the source checkout)",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)
        raise typer.Exit(subprocess.call([sys.executable, script, *(args or [])]))

    @cli.command("top")
    def top_cmd(
        node: str = typer.Argument(
            None,
            help="The node to watch, like n@host (default: every node registered with "
            "this host's port mapper).",
        ),
        cookie: str = typer.Option(None, "--cookie", help="Distribution cookie."),
        interval: float = typer.Option(2.0, "--interval", help="Seconds between views."),
        once: bool = typer.Option(False, "--once", help="Print one view and exit."),
        limit: int = typer.Option(10, "--limit", help="How many processes to list."),
    ) -> None:
        """Show a view of a running node: schedulers, load, busiest processes, queues.

        Connects like `pyotp ping` (a temporary node with the default cookie unless
        --cookie) and refreshes every --interval seconds until Ctrl-C, or once with --once.
        Without NODE it watches every node registered with this host's port mapper, one
        view each. Exits 1 when no node can be reached (or none is registered), 2 on a bad
        argument.
        """
        try:
            code = _top_command(node, cookie, interval, once, limit)
        except _UsageError as e:
            typer.echo(f"pyotp top: error: {e}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        raise typer.Exit(code)

    @cli.command("ping")
    def ping_cmd(
        node: str = typer.Argument(..., help="The node to ping, like n@host."),
        cookie: str = typer.Option(None, "--cookie", help="Distribution cookie."),
    ) -> None:
        """Ping a node: print "pong" and exit 0 when it answers, else "pang" and exit 1.

        A temporary node (`ping<os pid>@<host of NODE>`) connects with the cookie (the
        default one, PYOTP_COOKIE or ~/.pyotp.cookie, unless --cookie).
        """
        try:
            code = _ping_command(node, cookie)
        except _UsageError as e:
            typer.echo(f"pyotp ping: error: {e}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        raise typer.Exit(code)

    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the `pyotp` command line (the console script's entry point)."""
    cli = _build()
    cli(args=argv, prog_name="pyotp")
