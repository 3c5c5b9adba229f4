"""The identity terms every layer shares: `Pid`, `Ref`, and the `Crash` exit reason.

They live at the bottom (transport) so the codec can carry them and nothing imports upward.
A `Pid` made by a local scheduler also holds a private reference to its live process, which
makes a local `send` one attribute read away from the mailbox; that slot is cleared when the
process dies and is never encoded.
"""

from __future__ import annotations

import traceback

__all__ = ["Crash", "Pid", "Ref"]


class Pid:
    """A process identifier `<node.scheduler.serial>`: hashable, comparable, a term.

    `creation` changes when a scheduler or node restarts, so a stale pid never reaches a new
    process. Users get pids from `spawn` and `self()`; they need not construct them.
    """

    __slots__ = ("node", "scheduler", "serial", "creation", "_proc", "_hash", "_wire")

    def __init__(self, node: str, scheduler: int, serial: int, creation: int = 0) -> None:
        self.node = node
        self.scheduler = scheduler
        self.serial = serial
        self.creation = creation
        self._proc = None
        # Pids key the links, monitors and name tables: hash once, not on every lookup.
        self._hash = hash((serial, scheduler, creation))
        self._wire = None  # its codec record, made on first encode (pids cross often)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not Pid:
            return NotImplemented
        return (
            self.serial == other.serial
            and self.scheduler == other.scheduler
            and self.creation == other.creation
            and self.node == other.node
        )

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Pid) -> bool:
        return self._key() < other._key()

    def _key(self) -> tuple:
        return (self.node, self.scheduler, self.serial, self.creation)

    def __repr__(self) -> str:
        return f"<{self.node}.{self.scheduler}.{self.serial}>"

    def __reduce__(self) -> tuple:
        return (Pid, (self.node, self.scheduler, self.serial, self.creation))


class Ref:
    """A reference unique across the cluster (`make_ref`); hashable, a term.

    A timer ref (`send_after`) also carries its timer's `deadline` on the `time.monotonic()`
    clock, which is system-wide on a host: `cancel_timer` on another scheduler of the node
    (another OS process) tells from it how much time was left. It is not part of the ref's
    identity (equality, hash).
    """

    __slots__ = ("node", "scheduler", "creation", "id", "deadline", "_hash")

    def __init__(
        self, node: str, scheduler: int, creation: int, id: int, deadline: float | None = None
    ) -> None:
        self.node = node
        self.scheduler = scheduler
        self.creation = creation
        self.id = id
        self.deadline = deadline
        self._hash = id ^ creation  # monitor tables: hash once (no tuple)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not Ref:
            return NotImplemented
        return (
            self.id == other.id
            and self.scheduler == other.scheduler
            and self.creation == other.creation
            and self.node == other.node
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.scheduler}.{self.creation}.{self.id}>"

    def __reduce__(self) -> tuple:
        if self.deadline is not None:
            return (Ref, (self.node, self.scheduler, self.creation, self.id, self.deadline))
        return (Ref, (self.node, self.scheduler, self.creation, self.id))


class Crash:
    """The exit reason of a process that raised an uncaught exception.

    Carries the exception type name, its message and the formatted traceback; `str()` reads
    like the Python traceback. It is a term: it crosses schedulers and nodes intact.
    """

    __slots__ = ("type", "message", "traceback")

    def __init__(self, type: str, message: str, traceback: str = "") -> None:
        self.type = type
        self.message = message
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException) -> Crash:
        """Build the crash reason of `exc`, with its formatted traceback."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), tb)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Crash:
            return NotImplemented
        return (self.type, self.message, self.traceback) == (
            other.type,
            other.message,
            other.traceback,
        )

    def __hash__(self) -> int:
        return hash((self.type, self.message))

    def __repr__(self) -> str:
        return f"Crash({self.type}: {self.message})"

    def __str__(self) -> str:
        return self.traceback or f"{self.type}: {self.message}"

    def __reduce__(self) -> tuple:
        return (Crash, (self.type, self.message, self.traceback))

