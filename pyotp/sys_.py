"""System messages to behaviour processes (Erlang's `sys`; trailing underscore so it never
shadows the stdlib `sys`).

Where it sits: user code → **sys_** → `("$system", from_, request)` (`pyotp._gen.system_call`,
a call with a monitor) → the loop of gen_server / gen_statem / gen_event / supervisor, which
answers between two messages.

Every function is `async`, takes the process as a pid, a registered name or `(name, node)`,
and waits at most `timeout` seconds. A dead process (or an unregistered name) raises
`CallExit("noproc")`; a process that is not a behaviour never answers, so the call raises
`CallTimeout` after `timeout`, as in Erlang.

A suspended process handles only system messages; every other message stays queued, in
order, until `resume`.
"""

from __future__ import annotations

from typing import Any, Callable

from transport import BadArg, OtpError

from . import _gen

__all__ = [
    "get_state",
    "get_status",
    "replace_state",
    "resume",
    "statistics",
    "suspend",
    "trace",
]


def _check_error(answer: Any, what: str) -> Any:
    if type(answer) is tuple and len(answer) == 2 and answer[0] == "error":
        raise OtpError(answer[1], f"sys_.{what}: {answer[1]!r}")
    return answer


async def get_state(dest: Any, timeout: float | None = 5) -> Any:
    """Return the state of the behaviour process at `dest`.

    A gen_server (and a supervisor) gives its state, a gen_statem `(state, data)`, a
    gen_event manager a list of `(handler_class, id, state)`.

    Raises:
        CallExit: "noproc" for a dead process, or the reason it exited with meanwhile.
        CallTimeout: no answer in `timeout` seconds (e.g. not a behaviour process).
    """
    return await _gen.system_call(dest, "get_state", timeout, "sys_.get_state")


async def replace_state(dest: Any, fn: Callable[[Any], Any], timeout: float | None = 5) -> Any:
    """Replace the state of the process at `dest` with `fn(state)` and return the new state.

    `fn` runs inside the process (so across schedulers or nodes it must be importable by its
    qualified name); it gets what `get_state` returns (for a gen_statem `(state, data)`, and
    it must return such a pair). When `fn` raises, the state stays as it was.

    Raises:
        OtpError: reason ("callback_failed", crash) when `fn` raised.
        BadArg: `fn` is not callable.
        CallExit, CallTimeout: as for `get_state`.
    """
    if not callable(fn):
        raise BadArg(f"sys_.replace_state expects a function of the state, got {fn!r}")
    answer = await _gen.system_call(dest, ("replace_state", fn), timeout, "sys_.replace_state")
    return _check_error(answer, "replace_state")


async def suspend(dest: Any, timeout: float | None = 5) -> None:
    """Suspend the process at `dest`: until `resume` it handles only system messages.

    Raises:
        CallExit, CallTimeout: as for `get_state`.
    """
    _check_error(await _gen.system_call(dest, "suspend", timeout, "sys_.suspend"), "suspend")


async def resume(dest: Any, timeout: float | None = 5) -> None:
    """Resume a suspended process; the messages queued meanwhile are handled in order.

    Raises:
        CallExit, CallTimeout: as for `get_state`.
    """
    _check_error(await _gen.system_call(dest, "resume", timeout, "sys_.resume"), "resume")


async def get_status(dest: Any, timeout: float | None = 5) -> Any:
    """Return the status of the process at `dest`, in the shape of Erlang's sys:get_status.

    `("status", pid, ("module", "gen_server" | "gen_statem" | "gen_event"),
    [pdict, "running" | "suspended", parent, debug, misc])`; a process started without a
    link is its own parent. A supervisor reads as a gen_server.

    Raises:
        CallExit, CallTimeout: as for `get_state`.
    """
    return await _gen.system_call(dest, "get_status", timeout, "sys_.get_status")


async def statistics(dest: Any, flag: bool | str, timeout: float | None = 5) -> Any:
    """Turn statistics of the process at `dest` on (`True`) or off (`False`), or read them.

    Counting starts (again) from zero when turned on. It costs the process one counter
    update per message while on and nothing while off.

    Args:
        flag: True, False, or "get".

    Returns:
        None for True/False. For "get": a dict with `start_time` and `current_time`
        (`time.time()` seconds), `reductions` (messages the process took from its mailbox
        since the start), `messages_in` (calls, casts and other messages received, system
        messages excluded) and `messages_out` (replies sent); None when statistics are off.

    Raises:
        BadArg: `flag` is not True, False or "get".
        CallExit, CallTimeout: as for `get_state`.
    """
    if flag is not True and flag is not False and flag != "get":
        raise BadArg(f"sys_.statistics expects True, False or 'get', got {flag!r}")
    answer = await _gen.system_call(
        dest, ("debug", ("statistics", flag)), timeout, "sys_.statistics"
    )
    _check_error(answer, "statistics")
    if flag == "get":
        return answer[1] if type(answer) is tuple else None
    return None


async def trace(dest: Any, flag: bool, timeout: float | None = 5) -> None:
    """Turn tracing of the process at `dest` on or off.

    While on, every event of the process is logged at INFO on the logger `pyotp.sys` (in the
    OS process of the scheduler it runs on), as Erlang's `*DBG*` lines: each message it
    takes ("got call R from P", "got cast M", "got M"), each reply it sends ("sent R to P")
    and each change of its state ("new state S").

    Raises:
        BadArg: `flag` is not a bool.
        CallExit, CallTimeout: as for `get_state`.
    """
    if type(flag) is not bool:
        raise BadArg(f"sys_.trace expects True or False, got {flag!r}")
    _check_error(
        await _gen.system_call(dest, ("debug", ("trace", flag)), timeout, "sys_.trace"),
        "trace",
    )
