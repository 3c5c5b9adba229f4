"""Processes and a node runner for the distribution tests (importable on every node).

Run as a script to boot a node that serves the tests:
    python tests/dist_helpers.py NAME COOKIE TICKTIME
It registers "echo" (replies ("echo", msg, node)), prints "ready", and runs until killed.
"""

from __future__ import annotations

import os
import sys

import pyotp
from pyotp import gen_server


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


async def serve(name, cookie, ticktime):
    pid = pyotp.spawn(echo)
    await pyotp.register("echo", pid)
    await gen_server.start(KV, None, name="kv")
    print("ready", flush=True)
    await pyotp.receive(("never",))


if __name__ == "__main__":
    node, cookie, ticktime = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pyotp.run(serve, node, cookie, ticktime, name=node, cookie=cookie,
              config={"kernel": {"net_ticktime": ticktime}})
