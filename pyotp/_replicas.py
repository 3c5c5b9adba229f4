"""The replica processes a table server (global_, pg) keeps on the other schedulers.

A server runs on scheduler 0 and keeps one replica process on every other scheduler of its
node, so plain reads answer from any scheduler. A replica lost with its scheduler (a killed
scheduler OS process, which the pool replaces) is dropped at once, so that no change waits
on it, and started again on the scheduler that replaces it; the server then hands the new one
its whole table.
"""

from __future__ import annotations

from typing import Any, Callable

from schedulers import get, self_pid
from transport import Pid, Ref

from . import _api

_RESPAWN = "$replica_respawn"
_RETRY = 0.2  # seconds between attempts to start a replica on a scheduler being replaced


class Replicas:
    """The replicas of the calling server process, one per other scheduler of the node.

    `start(k)` spawns a replica on scheduler `k` and returns its pid; `on_lost(pid)` runs
    when one is lost with its scheduler; `on_new(pid)` runs when a replacement is started
    (it should send the replica the whole table). The server passes every message of its
    `handle_info` to `handle_info` first.
    """

    def __init__(
        self,
        start: Callable[[int], Pid],
        on_lost: Callable[[Pid], None],
        on_new: Callable[[Pid], None],
    ) -> None:
        self._start, self._on_lost, self._on_new = start, on_lost, on_new
        self.pids: dict[int, Pid] = {}
        self._refs: dict[Ref, int] = {}
        sched = get()
        if sched.router is not None:
            for k in sorted(set(sched.router.creations) - {sched.index}):
                self._spawn(k)

    def __iter__(self) -> Any:
        return iter(list(self.pids.values()))

    def __len__(self) -> int:
        return len(self.pids)

    def list(self) -> list[Pid]:
        return list(self.pids.values())

    def _spawn(self, k: int) -> Pid:
        pid = self._start(k)
        self._refs[_api.monitor(pid)] = k
        self.pids[k] = pid
        return pid

    def handle_info(self, msg: Any) -> bool:
        """Handle a replica's DOWN or a restart timer; False for any other message."""
        if type(msg) is not tuple:
            return False
        if len(msg) == 5 and msg[0] == "DOWN" and msg[1] in self._refs:
            k = self._refs.pop(msg[1])
            pid = self.pids.pop(k)
            self._on_lost(pid)
            if msg[4] == "noconnection":  # its scheduler went down: it is being replaced
                _api.send_after(_RETRY, self_pid(), (_RESPAWN, k))
            return True
        if len(msg) == 2 and msg[0] == _RESPAWN:
            k = msg[1]
            if k not in self.pids:
                if k in get().router.creations:
                    self._on_new(self._spawn(k))
                else:  # not back yet
                    _api.send_after(_RETRY, self_pid(), (_RESPAWN, k))
            return True
        return False
