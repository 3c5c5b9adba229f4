"""Remote procedure calls (Erlang's `rpc`): run a function on another node.

Where it sits: user code → **pyotp.rpc** → `spawn(node=...)` of a small runner process on that
node → its result comes back as a message; a monitor turns a crash or a lost node into an
error.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from schedulers import current_process, get, receive_matching
from schedulers._nodes import parse_node
from transport import BadArg, Crash, OtpError, Pid, Timeout

from . import _api, net

__all__ = ["call", "cast"]


async def _run_call(caller: Pid, tag: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        answer: Any = ("ok", result)
    except Exception as exc:  # the caller gets it as ("badrpc", ("EXIT", crash))
        answer = ("error", ("EXIT", Crash.from_exception(exc)))
    try:
        _api.send(caller, (tag, answer))
    except BadArg as exc:  # a result that is not a term: say so instead of vanishing
        _api.send(caller, (tag, ("error", ("EXIT", Crash("NotSerializable", str(exc))))))


async def _run_cast(fn: Callable[..., Any], args: tuple) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


def _check(node: Any, fn: Any, timeout: Any = None) -> None:
    try:
        parse_node(node)
    except ValueError:
        raise BadArg(
            f"rpc expects a node name like 'b@127.0.0.1' or 'b@127.0.0.1:4400', got {node!r}"
        ) from None
    if not callable(fn):
        raise BadArg(f"rpc expects a function to call, got {fn!r}")
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        raise BadArg(f"rpc timeout must be None or seconds >= 0, got {timeout!r}")


async def call(node: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
    """Run `fn(*args)` on `node` and return its result (`fn` may be `async def`).

    Across nodes `fn` must be importable by its qualified name and `args` must be terms.

    Raises:
        OtpError: reason `("badrpc", why)`: `("EXIT", crash)` when `fn` raised,
            `"nodedown"` when the node is not reachable or is lost, `"timeout"` after
            `timeout` seconds.
        BadArg: a wrong argument (or a function that cannot cross to another node).
    """
    me = current_process("pyotp.rpc.call()")
    _check(node, fn, timeout)
    sched = get()
    if node != sched.node and node not in (sched.router.remote_nodes if sched.router else ()):
        # Not connected yet: connect first, within the call's timeout.
        start = sched.loop.time()
        connected = (await net._connect_within([node], timeout))[node]
        if connected is None:
            raise OtpError(("badrpc", "timeout"), f"rpc.call to {node!r} timed out")
        if not connected:
            raise OtpError(("badrpc", "nodedown"), f"rpc.call: node {node!r} is not reachable")
        if timeout is not None:
            timeout = max(0.0, timeout - (sched.loop.time() - start))
    tag = _api.make_ref()
    pid, mref = _api.spawn(_run_call, me.pid, tag, fn, args, node=node, monitor=True)

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and m[0] == tag) or (len(m) == 5 and m[0] == "DOWN" and m[1] == mref)
        )

    try:
        msg = await receive_matching(me, is_answer, timeout, (tag,))
    except Timeout:
        _api.demonitor(mref, flush=True)
        _api.exit(pid, "kill")
        raise OtpError(("badrpc", "timeout"), f"rpc.call to {node!r} timed out") from None
    if len(msg) == 5:
        reason = msg[4]
        why = "nodedown" if reason == "noconnection" else ("EXIT", reason)
        raise OtpError(("badrpc", why), f"rpc.call to {node!r} failed: {reason!r}")
    _api.demonitor(mref, flush=True)
    status, value = msg[1]
    if status == "ok":
        return value
    raise OtpError(("badrpc", value), f"rpc.call to {node!r} raised: {value[1]!r}")


def cast(node: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on `node` without waiting; errors there are only logged there."""
    current_process("pyotp.rpc.cast()")
    _check(node, fn)
    try:
        _api.spawn(_run_cast, fn, args, node=node)
    except BadArg:
        if node == get().node:
            raise
        # not connected yet: connect in the background and spawn then, like Erlang's cast
        _api.spawn(_cast_later, node, fn, args)


async def _cast_later(node: str, fn: Callable[..., Any], args: tuple) -> None:
    if await net.connect(node):
        _api.spawn(_run_cast, fn, args, node=node)
