"""Shared test helpers: run a coroutine function as a node's main process."""

from __future__ import annotations

import os
import pathlib
import random
import socket
import subprocess
import sys

import pytest

import pyotp


@pytest.fixture
def run():
    """Run `main(*args)` as the first process of a fresh one-scheduler node."""

    def _run(main, *args, **opts):
        return pyotp.run(main, *args, **opts)

    return _run


# --------------------------------------------------------------------- peer nodes

T = 10
COOKIE = "testcookie"
HELPERS = pathlib.Path(__file__).with_name("dist_helpers.py")


# Ports for test nodes come from below the kernel's ephemeral range (32768-60999 here), so no
# outgoing connection's local port can take one between the pick and the node's bind; each
# xdist worker draws from its own slice, and a port is handed out once per test process.
_PORT_BASE, _PORT_SLICE = 20_000, 1_000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_slice = int(_worker[2:]) % 12 if _worker[2:].isdigit() else 0
_handed: set[int] = set()
_next = [random.randrange(_PORT_SLICE)]


def free_port() -> int:
    """A port on 127.0.0.1 free right now, outside the ephemeral range, not handed out before."""
    for _ in range(_PORT_SLICE):
        port = _PORT_BASE + _slice * _PORT_SLICE + _next[0] % _PORT_SLICE
        _next[0] += 1
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError("no free test port left in this worker's slice")


def node_name(short: str) -> str:
    return f"{short}{os.getpid()}@127.0.0.1:{free_port()}"


class Peer:
    """A node OS process running dist_helpers.serve."""

    def __init__(self, short: str, cookie: str = COOKIE, ticktime: float = 1.0) -> None:
        self.name = node_name(short)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS), self.name, cookie, str(ticktime)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            err = self.stop()
            raise RuntimeError(f"peer {self.name} did not start: {line!r}\n{err[-2000:]}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> str:
        """Stop the node cleanly (SIGTERM), or kill it if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=T)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=T)
        return err


@pytest.fixture
def peer():
    """Start peer node OS processes (tests/dist_helpers.py); all are killed afterwards."""
    started = []

    def start(short: str = "b", **kw) -> Peer:
        p = Peer(short, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


