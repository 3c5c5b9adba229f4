"""The examples run as scripts, end to end, in a fresh OS process each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow


def _run_example(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


def test_cpu_pool_example_uses_every_scheduler():
    """examples/cpu_pool.py: the pool's jobs are done in at least two OS processes."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args = () if (usable or 1) >= 2 else ("2",)  # "auto" on a 1-CPU box would mean one
    p = _run_example("cpu_pool.py", *args)
    assert p.returncode == 0, p.stderr
    assert re.search(r"48 jobs on \d+ scheduler\(s\): [\d.]+ jobs/s", p.stdout), p.stdout
    done = {
        int(pid): int(n)
        for pid, n in re.findall(r"OS pid (\d+) \(scheduler \d+\): (\d+) jobs", p.stdout)
    }
    assert len(done) >= 2, p.stdout
    assert sum(done.values()) == 48 and all(done.values()), p.stdout
