"""pyotp: Erlang/OTP for Python.

Flow of one message:
    spawn/send (pyotp) → scheduler of this OS process (schedulers) → mailbox
                                    ↘ frame (transport: msgspec over ZeroMQ) → peer scheduler

Public names are re-exported here from private modules; `__all__` lists them all. The OTP
behaviours are submodules: `pyotp.gen_server`, `pyotp.supervisor`, `pyotp.gen_statem`,
`pyotp.gen_event`, `pyotp.application`.
"""

from schedulers import ANY as ANY
from schedulers import SchedulerStatistics as SchedulerStatistics
from schedulers import match as match
from schedulers import receive as receive
from schedulers import self_pid as self
from transport import (
    BadArg as BadArg,
)
from transport import (
    CallExit as CallExit,
)
from transport import (
    CallTimeout as CallTimeout,
)
from transport import (
    Crash as Crash,
)
from transport import (
    Exit as Exit,
)
from transport import (
    NotInProcess as NotInProcess,
)
from transport import (
    NotSerializable as NotSerializable,
)
from transport import (
    OtpError as OtpError,
)
from transport import (
    Pid as Pid,
)
from transport import (
    ProcessCrash as ProcessCrash,
)
from transport import (
    Ref as Ref,
)
from transport import (
    StartError as StartError,
)
from transport import (
    Timeout as Timeout,
)

from . import (
    application,
    code,
    ets,
    gen_event,
    gen_server,
    gen_statem,
    global_,
    net,
    pg,
    placement,
    rpc,
    s_group,
    supervisor,
    sys_,
)
from ._api import (
    cancel_timer as cancel_timer,
)
from ._api import (
    demonitor as demonitor,
)
from ._api import (
    exit as exit,
)
from ._api import (
    link as link,
)
from ._api import (
    make_ref as make_ref,
)
from ._api import (
    monitor as monitor,
)
from ._api import (
    monitor_node as monitor_node,
)
from ._api import (
    node as node,
)
from ._api import (
    nodes as nodes,
)
from ._api import (
    process_flag as process_flag,
)
from ._api import (
    process_info as process_info,
)
from ._api import (
    processes as processes,
)
from ._api import (
    register as register,
)
from ._api import (
    registered as registered,
)
from ._api import (
    scheduler_statistics as scheduler_statistics,
)
from ._api import (
    send as send,
)
from ._api import (
    send_after as send_after,
)
from ._api import (
    spawn as spawn,
)
from ._api import (
    spawn_link as spawn_link,
)
from ._api import (
    spawn_monitor as spawn_monitor,
)
from ._api import (
    unlink as unlink,
)
from ._api import (
    unregister as unregister,
)
from ._api import (
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
    "SchedulerStatistics",
    "StartError",
    "Timeout",
    "application",
    "cancel_timer",
    "code",
    "demonitor",
    "ets",
    "exit",
    "gen_event",
    "gen_server",
    "gen_statem",
    "global_",
    "link",
    "make_ref",
    "match",
    "monitor",
    "monitor_node",
    "net",
    "node",
    "nodes",
    "pg",
    "placement",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "registered",
    "rpc",
    "run",
    "s_group",
    "scheduler_statistics",
    "self",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "supervisor",
    "sys_",
    "unlink",
    "unregister",
    "whereis",
]
