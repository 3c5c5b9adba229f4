"""Shared helpers of the `scripts/bench` workers: RSS, percentiles, the result line."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import psutil

__all__ = ["emit", "percentiles", "rss_after_gc"]


def rss_after_gc() -> int:
    """Return this OS process's resident set size in bytes, after a full collection."""
    gc.collect()
    return psutil.Process().memory_info().rss


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """Return the median and p99 of `samples_ns` in microseconds."""
    s = sorted(samples_ns)
    n = len(s)
    return {"median_us": s[n // 2] / 1000, "p99_us": s[min(n - 1, (n * 99) // 100)] / 1000}


def emit(result: dict[str, Any]) -> None:
    """Print the one result line the driver parses."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
