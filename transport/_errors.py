"""Exceptions of pyotp, defined at the bottom layer so every layer can raise them.

`pyotp` re-exports them; users catch them as `pyotp.OtpError`, `pyotp.BadArg`, and so on.
Every exception carries `.reason`, the Erlang-style term that says what went wrong.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadArg",
    "CallExit",
    "CallTimeout",
    "Exit",
    "NotInProcess",
    "NotSerializable",
    "OtpError",
    "ProcessCrash",
    "StartError",
    "Timeout",
]


class OtpError(Exception):
    """An Erlang `{error, Reason}` raised as an exception; `.reason` is the reason term."""

    def __init__(self, reason: Any = None, message: str | None = None) -> None:
        self.reason = reason
        super().__init__(message if message is not None else repr(reason))


class BadArg(OtpError):
    """A wrong argument: the message says what was expected."""

    def __init__(self, message: str, reason: Any = "badarg") -> None:
        super().__init__(reason, message)


class NotSerializable(BadArg):
    """A term that cannot cross a scheduler or node; the message names the offending type."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "not_serializable")


class CallExit(OtpError):
    """A call whose server was dead, died during the call, or sits on a node that is down."""


class StartError(OtpError):
    """A behaviour `start`/`start_link` whose `init` failed; `.reason` is the failure."""


class ProcessCrash(OtpError):
    """`pyotp.run`'s main process crashed; `.reason` is its exit reason."""


class Timeout(TimeoutError):
    """`receive` found no matching message in time."""

    def __init__(self, reason: Any = "timeout", message: str = "receive timed out") -> None:
        self.reason = reason
        super().__init__(message)


class CallTimeout(TimeoutError):
    """A call got no reply in time."""

    def __init__(self, reason: Any = "timeout", message: str = "call timed out") -> None:
        self.reason = reason
        super().__init__(message)


class NotInProcess(RuntimeError):
    """A pyotp call that needs a process was made from plain code outside `pyotp.run`."""

    def __init__(self, what: str = "this call") -> None:
        self.reason = "not_in_process"
        super().__init__(
            f"{what} must be made from inside a pyotp process (start one with pyotp.run(main))"
        )


class Exit(BaseException):
    """Raise to end the current process with `reason` (Erlang's `exit(Reason)`).

    A `BaseException`, so `except Exception` in user code does not swallow it.
    """

    def __init__(self, reason: Any = "normal") -> None:
        self.reason = reason
        super().__init__(reason)
