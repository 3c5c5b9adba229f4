"""The running node's boot settings: the node config and the halt request.

Where it sits: `pyotp.run(config=...)` → **_config** (load and keep the config; remember the
first process) ← `pyotp.application` (app env, "take the node down").

The config has the shape of Erlang's sys.config: one table per application holding its env,
and `kernel` for the kernel parameters (Erlang's names and units). It comes as a dict or as a
TOML file path and is loaded before the node boots, so a bad file fails `run` at once.

Halting: when a permanent application dies (or a transient one abnormally) the node goes
down. `halt(reason)` records the reason and ends the first process with "shutdown"; `run`
then shuts every other process down as usual and raises `ProcessCrash(reason)`. Once the
first process has ended the node is already stopping, so a later halt request is ignored:
applications that die during the shutdown are not crashes.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from schedulers import get
from transport import BadArg, Pid

__all__ = ["Node", "app_env", "boot", "current", "halt", "load", "stop"]


def load(config: str | os.PathLike | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Return the node config as a dict of tables, read from a dict or a TOML file path.

    Raises:
        BadArg: the file cannot be read or is not valid TOML, or the config is not a
            mapping of application names to tables.
    """
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise BadArg(f"run config=: cannot read the TOML file {path!r}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise BadArg(f"run config=: {path!r} is not valid TOML: {e}") from None
        where = repr(path)
    elif isinstance(config, dict):
        data = config
        where = "the config dict"
    else:
        raise BadArg(f"run config= expects a dict or a TOML file path, got {config!r}")
    out: dict[str, dict[str, Any]] = {}
    for app, env in data.items():
        if type(app) is not str or not app:
            raise BadArg(f"run config=: application names must be non-empty str, got {app!r}")
        if not isinstance(env, dict) or not all(type(k) is str for k in env):
            raise BadArg(
                f"run config=: in {where}, {app!r} must be a table of str keys "
                f"(its env, like [{app}] in TOML), got {env!r}"
            )
        out[app] = dict(env)
    return out


class Node:
    """Internal: what the running node was booted with."""

    __slots__ = ("attributes", "config", "dist_ac", "dist_specs", "halted", "main")

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        self.config = config
        self.attributes: dict[str, Any] = {}  # run(attributes=...), for placement
        self.main: Pid | None = None  # the first process; its end means "node stopping"
        self.halted: Any = None  # the reason the node was taken down, if it was
        self.dist_ac: Pid | None = None  # the distributed-applications coordinator
        self.dist_specs: dict[str, Any] = {}  # kernel `distributed`, by application name


_node: Node | None = None


def boot(config: dict[str, dict[str, Any]]) -> Node:
    """Install the settings of the node that is booting in this OS process."""
    global _node
    _node = Node(config)
    return _node


def stop() -> None:
    """Forget the settings once the node is down."""
    global _node
    _node = None


def current() -> Node | None:
    """Return the running node's settings, or None outside `pyotp.run`."""
    return _node


def app_env(app: str) -> dict[str, Any]:
    """Return a copy of the env that the node config gives `app` (empty when none)."""
    node = _node
    if node is None:
        return {}
    return dict(node.config.get(app, ()))


def halt(reason: Any) -> bool:
    """Take the node down: `run` ends its processes and raises `ProcessCrash(reason)`.

    Returns:
        False when the node is already stopping (its first process has ended), else True.
    """
    node = _node
    sched = get()
    if node is None or node.main is None or sched is None:
        return False
    proc = node.main._proc
    if proc is None:
        return False
    if node.halted is None:
        node.halted = reason
    sched.terminate(proc, "shutdown")
    return True
