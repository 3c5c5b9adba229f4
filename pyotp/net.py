"""Node connections (Erlang's `net_kernel`): connect, disconnect.

Where it sits: user code → **pyotp.net** → scheduler 0's node control (`schedulers._nodes`)
→ the cookie handshake with the other node → NodeUp on every scheduler of both nodes.
"""

from __future__ import annotations

from schedulers import current_process, get
from transport import BadArg

from ._api import _scheduler_call

__all__ = ["connect", "disconnect"]


def _check(node: object, what: str) -> None:
    if type(node) is not str or node.count("@") != 1:
        raise BadArg(f"{what} expects a node name like 'b@127.0.0.1', got {node!r}")


async def connect(node: str) -> bool:
    """Connect this node to `node`, cookie-authenticated; True when connected.

    Connections are transitive: the nodes `node` knows are connected to as well. A wrong
    cookie, an unknown node or one that does not answer gives False (and is logged).

    Raises:
        BadArg: `node` is not a node name.
        NotInProcess: called from plain code.
    """
    proc = current_process("pyotp.net.connect()")
    _check(node, "net.connect")
    sched = get()
    if node == sched.node:
        return True
    if sched.router is None or sched.router.ports is None:
        return False
    if node in sched.router.remote_nodes:
        return True
    result = await _scheduler_call(proc, 0, "connect", node, timeout=30.0)
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
