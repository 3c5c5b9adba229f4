"""Processes and a node runner for the distribution tests (importable on every node).

Run as a script to boot a node that serves the tests:
    python tests/dist_helpers.py NAME COOKIE TICKTIME
It registers "echo" (replies ("echo", msg, node)), "kv" (a KV server) and "casted" (a Casted
server), prints "ready", and runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pyotp
from pyotp import gen_server, pg


async def echo():
    while True:
        msg = await pyotp.receive()
        if msg == "stop":
            return
        pyotp.send(msg[0], ("echo", msg[1], pyotp.node()))


async def idle():
    await pyotp.receive(("never",))


async def crash_on(word):
    await pyotp.receive(word)
    raise RuntimeError(f"told to crash by {word!r}")


def whoami():
    return (pyotp.node(), os.getpid())


async def async_add(a, b):
    return a + b


def boom():
    raise ValueError("remote failure")


class KV(gen_server.GenServer):
    def init(self, arg):
        return ("ok", {})

    def handle_call(self, req, from_, state):
        if req[0] == "put":
            state[req[1]] = req[2]
            return ("reply", "ok", state)
        return ("reply", state.get(req[1]), state)


async def global_register_idle(name):
    """Spawn an idle process here and register it globally as `name`; (pid, registered?)."""
    pid = pyotp.spawn(idle)
    return pid, await pyotp.global_.register_name(name, pid)


async def global_register(name, pid):
    return await pyotp.global_.register_name(name, pid)


def global_whereis(name):
    return pyotp.global_.whereis_name(name)


async def global_sync():
    await pyotp.global_.sync()


async def global_register_after_nodedown(name, other, parent):
    """Register self globally as `name` once `other` is lost (a partition); print it."""
    me = pyotp.self()
    pyotp.monitor_node(other, True)
    pyotp.send(parent, ("candidate", me))
    await pyotp.receive(("nodedown", other))
    ok = await pyotp.global_.register_name(name, me)
    print(f"registered {name} {ok}", flush=True)
    await pyotp.receive(("never",))


async def pg_join_idle(group, scope="pg", times=1):
    """Spawn an idle process here and make it join `group` `times` times; return its pid."""
    pid = pyotp.spawn(idle)
    for _ in range(times):
        await pyotp.pg.join(group, pid, scope=scope)
    return pid


def pg_members(group, scope="pg"):
    return sorted(pyotp.pg.get_members(group, scope=scope))


def pg_local_members(group, scope="pg"):
    return sorted(pyotp.pg.get_local_members(group, scope=scope))


def kill(pid):
    pyotp.exit(pid, "kill")


async def net_connect(node):
    return await pyotp.net.connect(node)


def connected_nodes():
    return sorted(pyotp.nodes())


async def s_group_new(name, nodes):
    return await pyotp.s_group.new_s_group(name, nodes)


async def s_group_whereis(group, name):
    return await pyotp.s_group.whereis_name(group, name)


async def s_group_own():
    return await pyotp.s_group.own_s_groups()


async def connect_at(other, when):
    """Drop any connection to `other`, then dial it at wall-clock `when` (the other side
    dials back at the same instant); return (connect result, whether a call went through)."""
    pyotp.net.disconnect(other)
    while other in pyotp.nodes():
        await asyncio.sleep(0.01)
    await asyncio.sleep(max(0.0, when - time.time()))
    ok = await pyotp.net.connect(other)
    try:
        through = await pyotp.rpc.call(other, pyotp.node, timeout=5) == other
    except Exception:
        through = False
    return ok, through


def watchers_of(name):
    """How many monitors watch the local process registered as `name` (white-box)."""
    proc = pyotp.whereis(name)._proc
    return len(proc.watchers or ())


async def spawn_idle():
    return pyotp.spawn(idle)


class Casted(gen_server.GenServer):
    """Keeps what it was cast; call "get" returns it; call ("sleep", s) answers late."""

    def init(self, arg):
        return ("ok", [])

    def handle_cast(self, msg, state):
        return ("noreply", [*state, msg])

    async def handle_call(self, req, from_, state):
        if type(req) is tuple and req[0] == "sleep":
            import asyncio

            await asyncio.sleep(req[1])
        return ("reply", (pyotp.node(), state), state)


async def start_casted(name):
    return await gen_server.start(Casted, None, name=name)


async def serve(name, cookie, ticktime):
    pid = pyotp.spawn(echo)
    await pyotp.register("echo", pid)
    await gen_server.start(KV, None, name="kv")
    await gen_server.start(Casted, None, name="casted")
    if os.environ.get("PEER_CONNECT"):  # a test wants this node linked to another first
        await pyotp.net.connect(os.environ["PEER_CONNECT"])
    print("ready", flush=True)
    await pyotp.receive(("never",))


async def members_reader():
    """Answer ("read", group, parent) with the members of pg `group` as this scheduler's
    copy has them."""
    while True:
        _, group, parent = await pyotp.receive(("read", str, pyotp.Pid))
        pyotp.send(parent, ("members", pyotp.self().scheduler, pg.get_members(group)))


if __name__ == "__main__":
    node, cookie, ticktime = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pyotp.run(serve, node, cookie, ticktime, name=node, cookie=cookie,
              schedulers=int(os.environ.get("PEER_SCHEDULERS", "1")),
              config={"kernel": {"net_ticktime": ticktime}})
