"""Schedulers: one OS process per core, each a uvloop event loop of green processes.

Flow: `pyotp` → **schedulers** (pid table, mailboxes, links, monitors, signals, timers) →
`transport` (frames to other schedulers and nodes). Nothing here imports `pyotp`.
"""

from ._load import SchedulerStatistics
from ._match import ANY, compile_patterns, match
from ._process import Process, current_process, deliver, receive, receive_matching, self_pid
from ._scheduler import Scheduler, get, set_current

__all__ = [
    "ANY",
    "Process",
    "Scheduler",
    "SchedulerStatistics",
    "compile_patterns",
    "current_process",
    "deliver",
    "get",
    "match",
    "receive",
    "receive_matching",
    "self_pid",
    "set_current",
]
