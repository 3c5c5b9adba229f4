"""Node connections (Erlang's `net_kernel`): connect, disconnect.

Where it sits: user code → **pyotp.net** → scheduler 0's node control (`schedulers._nodes`)
→ the cookie handshake with the other node → NodeUp on every scheduler of both nodes.
"""

from __future__ import annotations

from typing import Any

from schedulers import current_process, get, receive_matching
from schedulers._nodes import parse_node
from transport import BadArg, Exit, Timeout

from . import _api
from ._api import _scheduler_call

__all__ = ["connect", "disconnect"]


def _check(node: object, what: str) -> None:
    try:
        parse_node(node)  # type: ignore[arg-type]
    except ValueError:
        raise BadArg(
            f"{what} expects a node name like 'b@127.0.0.1' or 'b@127.0.0.1:4400', got {node!r}"
        ) from None


async def connect(node: str, timeout: float | None = 30.0) -> bool:
    """Connect this node to `node`, cookie-authenticated; True when connected.

    Connections are transitive: the nodes `node` knows are connected to as well. A wrong
    cookie, an unknown node, one that does not answer, or no connection within `timeout`
    seconds gives False (and is logged); the attempt itself may still complete later.

    Raises:
        BadArg: `node` is not a node name, or a bad `timeout`.
        NotInProcess: called from plain code.
    """
    proc = current_process("pyotp.net.connect()")
    _check(node, "net.connect")
    _api.check_timeout(timeout, "net.connect")
    sched = get()
    if node == sched.node:
        return True
    if sched.router is None or sched.router.ports is None:
        return False
    if node in sched.router.remote_nodes:
        return True
    result = await _scheduler_call(proc, 0, "connect", node, timeout)
    return result[0] == "ok" and bool(result[1])


def disconnect(node: str) -> bool:
    """Drop the connection to `node`; links and monitors across it fire "noconnection".

    Returns:
        True if it was connected.
    """
    current_process("pyotp.net.disconnect()")
    _check(node, "net.disconnect")
    sched = get()
    router = sched.router
    if router is None or node not in router.remote_nodes:
        return False
    if sched.index == 0 and router.net_disconnect is not None:
        return router.net_disconnect(node)
    router.request_disconnect(node)
    return True


# --------------------------------------------------------------------- internal


async def _connect_and_exit(node: str) -> None:
    raise Exit(("$connected", await connect(node)))


async def _connect_within(nodes: list[str], timeout: float | None) -> dict[str, bool | None]:
    """Internal: connect to every node of `nodes` at once, waiting at most `timeout` s.

    Returns each node's outcome: True (connected), False (refused, unknown, no answer) or
    None (still connecting when `timeout` passed; it goes on in the background).

    Behind the scenes: one helper process per node runs `connect` and exits with the
    outcome as its reason; the caller waits for their DOWNs. A helper still running at the
    deadline is demonitored (flushed) and killed, so no late answer reaches the caller's
    mailbox.
    """
    me = current_process("pyotp.net.connect()")
    sched = get()
    outcome: dict[str, bool | None] = {}
    helpers: dict[Any, tuple[str, Any]] = {}
    for node in nodes:
        if node == sched.node or (sched.router is not None and node in sched.router.remote_nodes):
            outcome[node] = True
        elif sched.router is None or sched.router.ports is None:
            outcome[node] = False
        elif node not in outcome:
            outcome[node] = None
            pid, ref = _api.spawn(_connect_and_exit, node, monitor=True)
            helpers[ref] = (node, pid)

    def is_down(m: Any) -> bool:
        return type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] in helpers

    loop = sched.loop
    deadline = None if timeout is None else loop.time() + timeout
    while helpers:
        left = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            msg = await receive_matching(me, is_down, left)
        except Timeout:
            break
        node, _ = helpers.pop(msg[1])
        reason = msg[4]
        outcome[node] = type(reason) is tuple and reason[0] == "$connected" and reason[1] is True
    for ref, (_, pid) in helpers.items():
        _api.demonitor(ref, flush=True)
        _api.exit(pid, "kill")
    return outcome
