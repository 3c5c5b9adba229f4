"""Shared test helpers: run a coroutine function as a node's main process."""

from __future__ import annotations

import pytest

import pyotp


@pytest.fixture
def run():
    """Run `main(*args)` as the first process of a fresh one-scheduler node."""

    def _run(main, *args, **opts):
        return pyotp.run(main, *args, **opts)

    return _run
