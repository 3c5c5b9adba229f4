"""Applications and a node runner for the distributed-application tests.

Run as a script to boot a node:
    python tests/dist_app_helpers.py NAME COOKIE CONFIG_JSON START
It loads "shop" (distributed by the config) and "local" (not distributed), starts both when
START is "1", prints "ready", and runs until killed. The tests read what happened with
`status()` over rpc.
"""

from __future__ import annotations

import json
import sys
import time

import pyotp
from pyotp import application

EVENTS: list = []  # ("start", start_type, wall time) and ("stop", app, wall time), in order


async def _idle():
    await pyotp.receive(("never",))


class Shop(application.Application):
    def start(self, start_type, args):
        EVENTS.append(("start", start_type, time.time()))
        return pyotp.spawn(_idle)

    def stop(self, state):
        EVENTS.append(("stop", "shop", time.time()))


class Local(application.Application):
    def start(self, start_type, args):
        return pyotp.spawn(_idle)


SHOP = application.App("shop", mod=Shop, vsn="1.0")
LOCAL = application.App("local", mod=Local, vsn="1.0")


def status():
    """(this node, names of which_applications, EVENTS) of this node."""
    return pyotp.node(), [a[0] for a in application.which_applications()], list(EVENTS)


async def start_shop():
    await application.start(SHOP)


async def take_shop():
    await application.takeover(SHOP)


async def stop_shop():
    await application.stop("shop")


async def serve(start):
    application.load(SHOP)
    application.load(LOCAL)
    if start:
        await application.start("shop")
        await application.start("local")
    print("ready", flush=True)
    await pyotp.receive(("never",))


if __name__ == "__main__":
    import dist_app_helpers  # the importable copy, the one rpc.call reaches

    name, cookie, config, start = sys.argv[1:5]
    pyotp.run(dist_app_helpers.serve, start == "1", name=name, cookie=cookie,
              config=json.loads(config))
