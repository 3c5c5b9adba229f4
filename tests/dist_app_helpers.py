"""Applications and a node runner for the distributed-application tests.

Run as a script to boot a node:
    python tests/dist_app_helpers.py NAME COOKIE CONFIG_JSON START
It loads "shop" (distributed by the config) and "local" (not distributed), starts both when
START is "1", prints "ready", and runs until killed or told to `quit_node()` (then `pyotp.run`
returns: the node shuts down). The tests read what happened with `status()` over rpc, and,
when the env SHOP_EVENTS names a file, from that file (one JSON event a line), which outlives
the node. `pyotp run dist_app_helpers:SHOP` runs a node with the CLI instead.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pyotp
from pyotp import application

EVENTS: list = []  # ("start", start_type, wall time), ("prep_stop", app, wall time) and
# ("stop", app, wall time), in order


def _event(ev):
    EVENTS.append(ev)
    path = os.environ.get("SHOP_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(ev) + "\n")


def file_events(path):
    """The events a node wrote to `path` (SHOP_EVENTS), JSON lists instead of tuples."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


async def _idle():
    await pyotp.receive(("never",))


class Shop(application.Application):
    def start(self, start_type, args):
        _event(("start", start_type, time.time()))
        return pyotp.spawn(_idle)

    def prep_stop(self, state):
        _event(("prep_stop", "shop", time.time()))
        return state

    def stop(self, state):
        _event(("stop", "shop", time.time()))


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


async def start_extra():
    """One more application running on this node (a library one: nothing to run)."""
    await application.start(application.App("extra", vsn="1.0"))


async def take_shop():
    await application.takeover(SHOP)


async def take_shop_unstarted(unload):
    """takeover of "shop" where it is not started: (error reason, loaded names after)."""
    if unload:
        application.unload("shop")
    try:
        await application.takeover(SHOP)
        reason = None
    except pyotp.OtpError as e:
        reason = e.reason
    return reason, [a[0] for a in application.loaded_applications()]


async def stop_shop():
    await application.stop("shop")


def quit_node():
    """End the node's first process: `pyotp.run` returns and the node shuts down."""
    pyotp.send("serve", ("quit",))


async def serve(start):
    await pyotp.register("serve", pyotp.self())
    application.load(SHOP)
    application.load(LOCAL)
    if start:
        await application.start("shop")
        await application.start("local")
    print("ready", flush=True)
    await pyotp.receive(("quit",))


if __name__ == "__main__":
    import dist_app_helpers  # the importable copy, the one rpc.call reaches

    name, cookie, config, start = sys.argv[1:5]
    pyotp.run(dist_app_helpers.serve, start == "1", name=name, cookie=cookie,
              config=json.loads(config))
