"""The benchmark script runs end to end in its quick mode and prints comparable rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench"

pytestmark = pytest.mark.slow


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def test_quick_pingpong_prints_a_row_for_pyotp_and_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = _bench("--quick", "--only", "pingpong", "--runtimes", "pyotp,baseline", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "machine:" in p.stdout
    header = next(line for line in p.stdout.splitlines() if line.startswith("workload"))
    assert "pyotp" in header
    assert "deque+Future" in header
    row = next(line for line in p.stdout.splitlines() if line.startswith("ping-pong"))
    # pyotp rate, baseline rate, ratio, target, verdict
    assert row.count("k") + row.count("M") >= 2, row
    assert "x" in row
    doc = json.loads(out.read_text())
    assert doc["results"]["pyotp"]["pingpong"]["rate"] > 0
    assert doc["results"]["baseline"]["pingpong"]["rate"] > 0
    assert doc["targets"][0]["workload"] == "pingpong"


def test_markdown_mode_prints_a_markdown_table() -> None:
    p = _bench("--quick", "--only", "call", "--runtimes", "pyotp,baseline", "--markdown")
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| workload | pyotp | deque+Future")
    assert lines[1].startswith("|---|")
    assert any(line.startswith("| call/reply median µs |") for line in lines)


def test_an_unknown_workload_is_rejected_with_the_choices() -> None:
    p = _bench("--only", "nosuch")
    assert p.returncode != 0
    assert "pingpong" in p.stderr
