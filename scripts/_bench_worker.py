"""One `scripts/bench` measurement in a fresh OS process.

Usage: python scripts/_bench_worker.py RUNTIME WORKLOAD N REPS
RUNTIME is pyotp, baseline, pykka or multi (the multi-scheduler pairs). Prints one `RESULT {json}` line per repetition; the
driver keeps the best. Log output is silenced (as in the Erlang run) so that supervisor and
crash reports do not cost time inside a measurement.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from _bench_common import emit

__all__ = ["main"]

_MODULES = {
    "pyotp": "_bench_pyotp",
    "baseline": "_bench_baseline_workloads",
    "pykka": "_bench_pykka",
    "multi": "_bench_multi",
}


def main(argv: list[str]) -> None:
    runtime, workload, n, reps = argv[0], argv[1], int(argv[2]), int(argv[3])
    logging.disable(logging.CRITICAL)
    fn = importlib.import_module(_MODULES[runtime]).WORKLOADS[workload]
    for _ in range(reps):
        emit(fn(n))
    sys.stdout.flush()
    # Pykka leaves idle daemon threads behind; nothing else needs tearing down.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
