"""Frames: what schedulers (and later nodes) say to each other, as msgspec Structs.

Where it sits: scheduler → **frames** (this module: types, batch encode/decode) → ZeroMQ.

Every frame is a frozen, tagged, array-like Struct, so a frame costs a few bytes of header.
Terms inside frames (messages, reasons, pids) are carried in codec form (`to_wire`), so the
whole batch — one ZeroMQ message per peer per loop turn — is encoded by one C call and
decoded by one. Messages, link/monitor signals and DOWNs of one sender to one receiver travel
in one stream, which keeps Erlang's per-pair ordering for all of them.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from ._codec import CodecError, _ext_hook, to_wire

__all__ = [
    "Bye",
    "Call",
    "CancelTimer",
    "Demonitor",
    "Down",
    "DownOf",
    "Exit",
    "Frame",
    "GenCall",
    "Hello",
    "Link",
    "Load",
    "Monitor",
    "MonitorNode",
    "NodeDown",
    "NodeUp",
    "NameDown",
    "NameUp",
    "Registered",
    "Reply",
    "ReplyOf",
    "Send",
    "SendName",
    "SendTuple",
    "Spawn",
    "Stop",
    "Unlink",
    "decode_batch",
    "encode_batch",
]


class _F(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """Base of all frames (internal)."""


class Send(_F, tag=0):
    """A message (encoded term bytes) for the process with serial `to` and `creation`."""

    to: int
    creation: int
    msg: bytes


class SendTuple(_F, tag=22):
    """Messages for one process, each a flat tuple of scalars (str, bytes, int, float, bool,
    None), pids and refs, in order.

    They ride in the batch as plain msgpack arrays: encoded and decoded by msgspec in C with
    the rest of the batch, with no per-message codec pass; consecutive ones to the same
    process share one frame (the streaming case).
    """

    to: int
    creation: int
    msgs: list[tuple]


class SendName(_F, tag=1):
    """A message for the process registered as `name` on the receiving scheduler's node."""

    name: str
    msg: Any


class Reply(_F, tag=2):
    """A call reply: delivered only while `to` still holds the monitor `tag` (its alias).

    `released`: the replying process was the monitored one and dropped that monitor as it
    replied, so the caller drops its side without sending a Demonitor back.
    """

    to: Any
    tag: Any
    value: Any
    released: bool = False


class ReplyOf(_F, tag=25):
    """A Reply in short form, for a tag that is a ref made by the caller's own scheduler:
    process (`to`, `creation`) of the receiving scheduler, ref number `ref`."""

    to: int
    creation: int
    ref: int
    value: bytes
    released: bool


class GenCall(_F, tag=23):
    """A behaviour call in one frame: `caller` monitors the process (`to`, `creation`) under
    the ref numbered `ref` by the caller's scheduler, then ("$gen_call", (caller, ref),
    request) is delivered to it — what a Monitor frame followed by a Send would do. A dead
    target answers with DOWN noproc."""

    to: int
    creation: int
    caller: Any
    ref: int
    request: bytes


class CancelTimer(_F, tag=26):
    """Cancel the timer whose ref the receiving scheduler made with number `ref` and
    `creation` (a `cancel_timer` on another scheduler); no answer is sent."""

    ref: int
    creation: int


class Link(_F, tag=3):
    """`sender` linked itself to `to`."""

    sender: Any
    to: Any


class Unlink(_F, tag=4):
    sender: Any
    to: Any


class Exit(_F, tag=5):
    """An exit signal; `linked` when a link fired (then `to` must still hold the link)."""

    sender: Any
    to: Any
    reason: Any
    linked: bool


class Monitor(_F, tag=6):
    """`watcher` monitors `target` under `ref`; `ident` is what its DOWN will name."""

    watcher: Any
    target: Any
    ref: Any
    ident: Any


class Demonitor(_F, tag=7):
    target: Any
    ref: Any


class Down(_F, tag=8):
    """The monitored process ended: deliver DOWN to `watcher` if it still holds `ref`."""

    watcher: Any
    ref: Any
    ident: Any
    reason: Any


class DownOf(_F, tag=24):
    """A Down in short form: the process (`to`, `creation`) of the receiving scheduler
    monitored a pid under its own ref number `ref`, and that pid ended with `reason`. The
    DOWN names the pid the watcher holds under that ref (no pid or ref records to decode)."""

    to: int
    creation: int
    ref: int
    reason: Any


class Spawn(_F, tag=9):
    """Start `fn` ("module:qualname") with `args` as process `serial`/`creation` of the
    receiving scheduler, pre-allocated by `parent`'s scheduler; `ref` is the number of the
    parent's monitor ref (made by the parent's scheduler), if it monitors the new process."""

    serial: int
    creation: int
    fn: str
    args: Any
    parent: Any
    link: bool
    ref: int | None
    trap_exit: bool


class Call(_F, tag=10):
    """A scheduler-level request (registry, introspection); answered as a message to `reply_to`
    of the form (tag, result)."""

    op: str
    args: Any
    reply_to: Any
    tag: Any


class NameUp(_F, tag=11):
    """The registry (scheduler 0) gave `name` to `pid`; `ack_to` wants a Registered back."""

    name: str
    pid: Any
    ack_tag: Any


class NameDown(_F, tag=12):
    """`name` was released (by `pid`)."""

    name: str
    pid: Any


class Registered(_F, tag=13):
    """A scheduler has applied a NameUp/NameDown (the registry counts these before replying)."""

    ack_tag: Any


class Load(_F, tag=14):
    """A scheduler's load report."""

    index: int
    creation: int
    procs: int
    runq: int
    long_steps: int
    cpu: float
    lag: float


class Hello(_F, tag=15):
    """A scheduler is up and its sockets are connected; `tcp` is its node-to-node endpoint."""

    index: int
    creation: int
    tcp: str = ""


class Stop(_F, tag=16):
    """Shut down: end every process with "shutdown", then say Bye."""

    phase: int


class Bye(_F, tag=17):
    """A scheduler has drained; its last frame (the acknowledgement closing needs)."""

    index: int
    phase: int


class Peer(_F, tag=18):
    """Scheduler `index` changed: down (`up=False`) or replaced with a new `creation`."""

    index: int
    creation: int
    up: bool


class NodeUp(_F, tag=19):
    """Scheduler 0 connected node `name` (told to every scheduler of this node).

    `token` is what our frames to it carry; `accept` is what its frames to us carry;
    `endpoints` are its schedulers' tcp endpoints by index; `slot` numbers our spawns there.
    """

    name: str
    token: bytes
    accept: bytes
    endpoints: dict[int, str]
    creations: dict[int, int]
    slot: int


class NodeDown(_F, tag=20):
    """Node `name` is lost: links and monitors to its processes fire with noconnection."""

    name: str


class MonitorNode(_F, tag=21):
    """Ask scheduler 0 to connect to `name` (auto-connect); answers arrive as NodeUp/NodeDown."""

    name: str


Frame = Union[  # noqa: UP007 - msgspec needs the Union form here
    Send, SendName, Reply, Link, Unlink, Exit, Monitor, Demonitor, Down, Spawn, Call,
    NameUp, NameDown, Registered, Load, Hello, Stop, Bye, Peer, NodeUp, NodeDown, MonitorNode,
    SendTuple, GenCall, DownOf, ReplyOf, CancelTimer,
]

_batch_decoder = msgspec.msgpack.Decoder(list[Frame], ext_hook=_ext_hook)
# Terms in frames are put in codec form by the router; the hook is the safety net for ids.
_encoder = msgspec.msgpack.Encoder(enc_hook=to_wire)


def encode_batch(frames: list) -> bytes:
    """Encode a list of frames (terms inside already in codec form) as one message."""
    return _encoder.encode(frames)


def decode_batch(data: bytes | memoryview) -> list:
    """Decode one message into its frames.

    Raises:
        CodecError: the bytes are not a well-formed batch of known frames.
    """
    try:
        return _batch_decoder.decode(data)
    except CodecError:
        raise
    except Exception as exc:  # malformed, truncated, unknown tags: all "bad frame"
        raise CodecError(f"malformed frame batch: {type(exc).__name__}: {exc}") from None
