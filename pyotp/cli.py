"""The `pyotp` command line (also `python -m pyotp`): run, bench, top, ping.

Where it sits: the shell → **cli** → `pyotp.run` (a function as the node's first process) or
`pyotp.application` (an `App` started as a permanent application).

    pyotp run MODULE:FUNC   runs FUNC as the first process; exits when it returns
                            (0), or when it crashes (1, printing the reason)
    pyotp run MODULE:APP    starts the App (and its dependencies) as permanent applications;
                            runs until SIGTERM or Ctrl-C (stopped cleanly, 0) or until it
                            dies (1)
    a bad MODULE:ATTR, option or config file exits with 2

Importing this module stays cheap: typer loads only when the command line is built.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import pyotp
from pyotp import application
from transport import Crash

__all__ = ["main"]

EXIT_CRASH = 1
EXIT_USAGE = 2

_NO_DIST = "distribution not available yet"


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
            started = await application.ensure_all_started(app, "permanent")
        except pyotp.OtpError as e:
            print(f"pyotp run: application {app.name!r} failed to start: {e}", file=sys.stderr)
            raise pyotp.Exit(("start_failed", app.name, e.reason)) from None
        print(f"pyotp: application {app.name!r} started; stop it with Ctrl-C or SIGTERM",
              file=sys.stderr, flush=True)
        msg = await pyotp.receive(("$signal", pyotp.ANY))
        print(f"pyotp: {msg[1]}: stopping {app.name!r}", file=sys.stderr, flush=True)
        # Stop in reverse start order, so nothing outlives an application it depends on.
        for name in reversed(started):
            await application.stop(name)
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
    except pyotp.ProcessCrash as e:
        print(f"pyotp run: {target} exited with reason: {_describe(e.reason)}",
              file=sys.stderr, flush=True)
        return EXIT_CRASH
    except KeyboardInterrupt:
        print("pyotp run: interrupted", file=sys.stderr)
        return 130
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
        node: str = typer.Argument(None, help="The node to watch, like n@host."),
    ) -> None:
        """Show a live view of a node: schedulers, load, processes, queues.

        A live view watches a running node from outside, so it needs distribution, which
        this build does not have yet: the command says so and exits with 2.
        """
        what = f"node {node!r}" if node else "a running node"
        typer.echo(
            f"pyotp top: a live view of {what} needs distribution, which is coming; "
            f"{_NO_DIST}",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE)

    @cli.command("ping")
    def ping_cmd(
        node: str = typer.Argument(..., help="The node to ping, like n@host."),
        cookie: str = typer.Option(None, "--cookie", help="Distribution cookie."),
    ) -> None:
        """Ping a node: exit 0 on pong.

        Pinging needs distribution, which this build does not have yet: the command says
        so and exits with 2.
        """
        typer.echo(f"pyotp ping {node}: {_NO_DIST}", err=True)
        raise typer.Exit(EXIT_USAGE)

    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the `pyotp` command line (the console script's entry point)."""
    cli = _build()
    cli(args=argv, prog_name="pyotp")
