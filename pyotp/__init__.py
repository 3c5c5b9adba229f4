"""pyotp: Erlang/OTP for Python.

Flow of one message:
    spawn/send (pyotp) → scheduler of this OS process (schedulers) → mailbox
                                    ↘ frame (transport: msgspec over ZeroMQ) → peer scheduler

Public names are re-exported here from private modules; `__all__` lists them all.
"""

from schedulers import ANY as ANY
from schedulers import match as match
from schedulers import receive as receive
from schedulers import self_pid as self
from transport import (
    BadArg as BadArg,
    CallExit as CallExit,
    CallTimeout as CallTimeout,
    Crash as Crash,
    Exit as Exit,
    NotInProcess as NotInProcess,
    NotSerializable as NotSerializable,
    OtpError as OtpError,
    Pid as Pid,
    ProcessCrash as ProcessCrash,
    Ref as Ref,
    StartError as StartError,
    Timeout as Timeout,
)

from ._api import (
    cancel_timer as cancel_timer,
    demonitor as demonitor,
    exit as exit,
    link as link,
    make_ref as make_ref,
    monitor as monitor,
    monitor_node as monitor_node,
    node as node,
    nodes as nodes,
    process_flag as process_flag,
    process_info as process_info,
    processes as processes,
    register as register,
    registered as registered,
    send as send,
    send_after as send_after,
    spawn as spawn,
    spawn_link as spawn_link,
    spawn_monitor as spawn_monitor,
    unlink as unlink,
    unregister as unregister,
    whereis as whereis,
)
from ._run import run as run

__all__ = [
    "ANY",
    "BadArg",
    "CallExit",
    "CallTimeout",
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
    "cancel_timer",
    "demonitor",
    "exit",
    "link",
    "make_ref",
    "match",
    "monitor",
    "monitor_node",
    "node",
    "nodes",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "registered",
    "run",
    "self",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "unlink",
    "unregister",
    "whereis",
]
