"""Transport: the wire under pyotp — ids, the msgspec term codec, frames, ZeroMQ sockets.

Flow: `pyotp` → `schedulers` → **transport** → peer scheduler or node. Transport moves frames
and knows pids, never processes.
"""

from ._codec import CodecError, decode, encode
from ._errors import (
    BadArg,
    CallExit,
    CallTimeout,
    Exit,
    NotInProcess,
    NotSerializable,
    OtpError,
    ProcessCrash,
    StartError,
    Timeout,
)
from ._terms import Crash, Pid, Ref

__all__ = [
    "BadArg",
    "CallExit",
    "CallTimeout",
    "CodecError",
    "Crash",
    "Exit",
    "NotInProcess",
    "NotSerializable",
    "OtpError",
    "Pid",
    "ProcessCrash",
    "Ref",
    "StartError",
    "Timeout",
    "decode",
    "encode",
]
