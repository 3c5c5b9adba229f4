"""Receive timeouts on a timer wheel: one loop timer per millisecond bucket, not per receive.

Where it sits: `receive(timeout=...)` and every behaviour call arm a timeout here; almost all
are cancelled long before they fire (the reply came). A loop timer handle per receive costs
more than the call it guards, so timeouts are grouped in 1 ms buckets: arming is a set add,
cancelling a set discard, and each bucket that holds anything has one loop timer.
A timeout fires at most one bucket (1 ms) late, never early.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["TimerWheel"]

_RESOLUTION = 0.001
_PER_SECOND = 1000  # buckets per second (1 / _RESOLUTION)


class TimerWheel:
    """Internal: the receive timeouts of one scheduler."""

    __slots__ = ("loop", "buckets")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, set] = {}

    def arm(self, timeout: float, fut: Any) -> int | None:
        """Resolve `fut` with `expired` after `timeout` seconds unless cancelled; return key.

        `timeout` = float("inf") never expires (key None)."""
        # int() + 1 >= ceil(): never early, at most one bucket late (as documented above).
        try:
            key = int((self.loop.time() + timeout) * _PER_SECOND) + 1
        except OverflowError:  # infinity: nothing to arm
            return None
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = set()
            self.loop.call_at(key * _RESOLUTION, self._fire, key)
        bucket.add(fut)
        return key

    def cancel(self, key: int | None, fut: Any) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.discard(fut)

    def _fire(self, key: int) -> None:
        bucket = self.buckets.pop(key, None)
        if bucket:
            for fut in bucket:
                if not fut.done():
                    fut.set_result(EXPIRED)


EXPIRED = object()
