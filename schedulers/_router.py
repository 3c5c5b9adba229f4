"""The router: frames in and out for a scheduler that has peers (other schedulers of the node).

Where it sits: scheduler (a pid that is not ours) → **router** → mesh (ZeroMQ) → peer router →
peer scheduler → mailbox.

Outbound, every operation on a remote pid becomes one frame on the stream to the pid's
scheduler; terms are put in codec form at the call, so a non-term raises `NotSerializable`
in the sender. Inbound, each frame is applied to the local scheduler exactly as the local
operation would be. A bad frame (undecodable, unknown, for a dead process) is dropped and
counted; it never kills the scheduler.

The registry is decided by scheduler 0 (the registrar): a registration reserves the name
there, attaches it to the process on its own scheduler, then is broadcast to every scheduler
and acknowledged before `register` returns — so once it returns every scheduler's `whereis`
sees it.
"""

from __future__ import annotations

import logging
import os
import select
import time
from typing import Any

from transport import BadArg, CodecError, Crash, NotSerializable, Pid, Ref, _codec
from transport import _frames as F
from transport._codec import _raw_decode, _raw_encode, decode, to_wire

from . import _process
from ._info import info_of
from ._process import Process, _current, deliver, deliver_many

__all__ = ["Router", "fn_name", "resolve_fn"]

log = logging.getLogger("pyotp.scheduler")

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_SPIN = 0.001  # seconds a caller polls for its reply when nothing else could run
_STREAK = 0.002  # seconds polls may go on handing work to processes before the loop turns
_clock = time.perf_counter
_yield = os.sched_yield
_current_get = _current.get
_MAX_PENDING = 100_000  # frames held per node while it is being connected


def fn_name(fn: Any) -> str:
    """Return "module:qualname" for a spawn target another scheduler can import.

    Raises:
        BadArg: `fn` is a lambda, a nested function or has no importable name.
    """
    try:
        return _codec.code_name(fn)
    except NotSerializable as exc:
        raise BadArg(f"spawn on another scheduler or node: {exc}") from None


def resolve_fn(name: str) -> Any:
    """Import "module:qualname" and return the object (raises on failure)."""
    return _codec.resolve_code(name)


async def _undefined(name: str, error: str) -> None:
    raise LookupError(f"cannot run {name} on this scheduler: {error}")


def _exit_reason(reason: Any) -> Any:
    """The wire form of a dead process's exit reason for its links and monitors elsewhere.

    A reason that is no term (e.g. `raise Exit({1, 2})`) cannot cross; refusing it would
    leave those watchers unaware of the death, so they get a `Crash` of type
    "NotSerializable" naming it instead.
    """
    try:
        return to_wire(reason)
    except NotSerializable as exc:
        return to_wire(Crash("NotSerializable", f"exit reason {reason!r}: {exc}"))


class Router:
    """Internal: the frames of one scheduler to and from its peers."""

    def __init__(self, sched: Any, mesh: Any, creations: dict[int, int]) -> None:
        self.sched = sched
        self.mesh = mesh
        sched.router = self
        # peer index -> creation of the live scheduler there (absent while it is down)
        self.creations = creations
        self.bad_frames = 0
        self.dropped = 0
        self.loads: dict[int, Any] = {}
        self.spawn_counts: dict[int, int] = {}
        self.pending_spawns: dict[int, int] = {}
        self.control: Any = None  # pool hooks on scheduler 0 / worker hooks elsewhere
        self.control_connect: Any = None  # scheduler 0: start connecting to a node
        self.node = sched.node
        self.ports: Any = None  # NodePorts, when the node is distributed
        self.remote_nodes: dict[str, Any] = {}  # connected node -> its NodeUp frame
        self.pending: dict[str, list] = {}  # frames held for a node being connected
        self.node_watchers: dict[str, list[Pid]] = {}  # monitor_node watchers
        self.net_connect: Any = None  # scheduler 0: async connect(node) -> bool
        self.net_disconnect: Any = None
        self.node_control: Any = None  # scheduler 0 of a distributed node: its NodeControl
        self._tasks: set = set()
        self._acks: dict[Any, list] = {}
        self._pending_names: dict[str, Any] = {}
        self.max_message_size = MAX_MESSAGE_SIZE
        self.spin = _SPIN  # seconds a caller may poll for its reply (see await_reply)
        self._streak: float | None = None  # when polling began without a loop turn since
        self._resume = False  # a _poll_from_loop is scheduled
        self._rearm = False  # polls consumed FD edges: re-arm when the loop turns
        self._signalled: Any = None  # poll(0) over the inbound FDs (see _watch_fds)
        self._watched: Any = None  # the NodePorts whose FD that covers (None: mesh only)
        _process.flush_hook = self.flush_early
        stream_tail.pid = None  # nothing of an earlier run in this OS process

    # ------------------------------------------------------------------ outbound

    def await_reply(self, caller: Process) -> None:
        """`caller` queued a call's request: send it now; poll a moment for the answer.

        Waking a scheduler asleep in epoll costs more than a whole round trip to a live peer
        on this kind of machine (ZeroMQ's IO thread, its mailbox FD, the loop, then a CPU
        that went cold), so when no other process of this scheduler could use the time the
        caller polls the sockets for up to `spin` seconds, as Erlang schedulers busy-wait.
        """
        mesh = self.mesh
        ports = self.ports
        # Send even if this turn already flushed early (see flush_early).
        mesh.early = False
        mesh._send_queued()
        if ports is not None:
            ports.early = False
            ports._send_queued()
        if self.spin > 0 and len(self.sched.procs) - _process._counts[0] <= 1:
            self._poll_a_moment()

    def _loop_turned(self) -> None:
        self._streak = None
        if self._rearm:
            self._rearm = False
            self.mesh.rearm()
            if self.ports is not None:
                self.ports.rearm()

    def _poll_from_loop(self) -> None:
        """Go on polling after the loop turned, if every process is still parked."""
        self._resume = False
        if self.spin > 0 and len(self.sched.procs) <= _process._counts[0]:
            self._poll_a_moment()

    def flush_early(self) -> None:
        """A process has just parked: send what this turn queued so far (once per turn).

        When that sent something (a reply, a request) and no other process of this scheduler
        could run, the answer or the next request is likely close: poll for it a moment
        (see `await_reply`).
        """
        mesh = self.mesh
        sent = False
        if mesh.early:
            if mesh.closed:
                if _process.flush_hook == self.flush_early:
                    _process.flush_hook = None  # this scheduler is gone (an earlier run)
                return
            mesh.flush_early()
            sent = True
        ports = self.ports
        if ports is not None and ports.early and not ports.closed:
            ports.flush_early()
            sent = True
        if sent and self.spin > 0 and len(self.sched.procs) <= _process._counts[0]:
            self._poll_a_moment()

    def _poll_a_moment(self) -> bool:
        """Poll the inbound sockets for up to `spin` s, yielding the CPU between looks.

        Handles the first batch that arrives (whoever it is for) and returns True; False
        when none came. Yielding lets ZeroMQ's IO threads (which carry the very batch polled
        for) and other OS processes run on this CPU at once.
        """
        now = _clock()
        streak = self._streak
        if streak is None:
            self._streak = now
            self.sched.loop.call_soon(self._loop_turned)
        elif now - streak > _STREAK:
            # Polls kept handing work straight to processes: the loop has not turned for
            # a while. Let it (timers, heartbeats, other I/O), then poll again from the loop
            # rather than sleep in epoll (see _poll_from_loop).
            if not self._resume:
                self._resume = True
                self.sched.loop.call_soon(self._poll_from_loop)
            return False
        mesh = self.mesh
        ports = self.ports
        signalled = self._signalled
        if signalled is None or self._watched is not ports:
            signalled = self._watch_fds()
        deadline = now + self.spin
        hit = mesh.poll() or (ports is not None and ports.poll())
        mesh_fd = mesh.fd
        while not hit:
            # Both sockets were seen empty, so ZeroMQ signals a socket's FD on its next
            # change: watch those (one cheap syscall) rather than re-read ZMQ_EVENTS.
            _yield()
            if _clock() > deadline:
                # Polling read the edge-triggered FDs' state: re-arm before the loop waits.
                mesh.rearm()
                if ports is not None:
                    ports.rearm()
                return False
            for fd, _ in signalled(0):
                hit = mesh.poll() if fd == mesh_fd else ports.poll()
                if hit:
                    break
        # What the handled frames make processes send may again leave early.
        mesh.early = mesh._flush_scheduled
        if ports is not None:
            ports.early = ports._flush_scheduled
        # Re-arm the FDs (see above) when the loop turns, before it can wait: the
        # _loop_turned of this streak is still queued.
        self._rearm = True
        return True

    def _watch_fds(self) -> Any:
        """Return a zero-timeout poll over the inbound sockets' FDs (ZeroMQ's signal FDs)."""
        watch = select.poll()
        watch.register(self.mesh.fd, select.POLLIN)
        if self.ports is not None:
            watch.register(self.ports.fd, select.POLLIN)
        self._signalled = watch.poll
        self._watched = self.ports
        return watch.poll

    def _put(self, peer: int, frame: Any) -> None:
        self.mesh.put(peer, frame)

    def _to(self, pid: Pid, frame: Any) -> None:
        """Queue `frame` for the scheduler of `pid`, on this node or another."""
        if pid.node == self.node:
            self.mesh.put(pid.scheduler, frame)
        else:
            self._to_node(pid.node, pid.scheduler, frame)

    def _to_node(self, node: str, index: int, frame: Any) -> None:
        ports = self.ports
        if ports is not None and ports.connected(node):
            ports.put(node, index, frame)
            return
        if ports is None:
            return  # not distributed: another node's pid is unreachable (dropped)
        # Auto-connect, as Erlang does on a send to an unconnected node: hold the frames
        # until scheduler 0 says NodeUp (then they go, in order) or NodeDown (dropped).
        queue = self.pending.get(node)
        if queue is None:
            queue = self.pending[node] = []
            self.request_connect(node)
        if len(queue) < _MAX_PENDING:
            queue.append((index, frame))

    def request_connect(self, node: str) -> None:
        if self.sched.index == 0:
            if self.control_connect is not None:
                self.control_connect(node)
        else:
            self._put(0, F.MonitorNode(node))

    def request_disconnect(self, node: str) -> None:
        """From a worker: ask scheduler 0 to drop the connection to `node`."""
        self._put(0, F.Call("disconnect", node, None, None))

    def alive(self, pid: Pid) -> bool:
        """False when `pid` is surely unreachable (its scheduler or node is down)."""
        if pid.node == self.node:
            return self.creations.get(pid.scheduler) == pid.creation
        return self.ports is not None

    def _payload(self, msg: Any) -> Any:
        data = _raw_encode(to_wire(msg))
        if len(data) > self.max_message_size:
            raise BadArg(
                f"message of {len(data)} bytes exceeds max_message_size "
                f"({self.max_message_size} bytes)",
                "message_too_large",
            )
        return data

    def send(self, pid: Pid, msg: Any) -> None:
        if pid is stream_tail.pid and stream_tail.append(msg):
            return
        if pid.node == self.node:
            if self.creations.get(pid.scheduler) != pid.creation:
                to_wire(msg)  # still refuse a non-term, whatever became of the pid
                return
            streams = self.mesh
            out = streams.out.get(pid.scheduler)
            if out is None:
                to_wire(msg)
                return  # peer down: dropped, as a message to a dead process is
        else:
            streams = self.ports
            if streams is None:
                to_wire(msg)
                return
            # A stream open to that scheduler means its node is connected: queue directly.
            out = streams.out.get((pid.node, pid.scheduler))
            if out is None:
                self._to_node(pid.node, pid.scheduler, self._send_frame(pid, msg))
                return
        if _flat(msg, self.max_message_size):
            if out:
                last = out[-1]
                if (
                    type(last) is _SendTuple
                    and last.to == pid.serial
                    and last.creation == pid.creation
                    and len(last.msgs) < _TUPLES_PER_FRAME
                ):
                    last.msgs.append(msg)
                    return  # the frame is queued already, and so is its flush
            frame = _SendTuple(pid.serial, pid.creation, [msg])
            out.append(frame)
            stream_tail.follow(pid, frame, out, self.max_message_size)
        else:
            out.append(F.Send(pid.serial, pid.creation, self._payload(msg)))
        if not streams._flush_scheduled:
            streams._queued()

    def _send_frame(self, pid: Pid, msg: Any) -> Any:
        if _flat(msg, self.max_message_size):
            return _SendTuple(pid.serial, pid.creation, [msg])
        return F.Send(pid.serial, pid.creation, self._payload(msg))

    def send_named(self, node: str, name: str, msg: Any) -> None:
        """Send to the process registered as `name` on another node."""
        self._to_node(node, 0, F.SendName(name, self._payload(msg)))

    def gen_call(self, caller: Process, pid: Pid, request: Any) -> Ref:
        """Monitor `pid` (another scheduler's or node's) for `caller` and send it the call
        ("$gen_call", (caller, ref), request), in one frame; return the monitor ref.

        Raises:
            NotSerializable: `request` is not a term.
            BadArg: `request` is over max_message_size.
        """
        payload = self._payload(request)
        ref = self.sched.make_ref()
        if caller.monitors is None:
            caller.monitors = {ref: pid}
        else:
            caller.monitors[ref] = pid
        if not self.alive(pid):
            del caller.monitors[ref]
            deliver(caller, ("DOWN", ref, "process", pid, "noconnection"))
            return ref
        self._to(pid, F.GenCall(pid.serial, pid.creation, to_wire(caller.pid), ref.id, payload))
        return ref

    def reply(self, pid: Pid, tag: Any, value: Any) -> None:
        if not self.alive(pid):
            return
        # Encoded first: a reply that is no term (or too large) raises in the replier, whose
        # monitor by the caller must then still be there to tell the caller it died.
        payload = self._payload(value)
        # Replied by the monitored process itself: drop that monitor here and tell the
        # caller, which then has no Demonitor to send.
        me = _current_get(None)
        released = False
        if me is not None and me.watchers:
            entry = me.watchers.get(tag)
            if entry is not None and (entry[0] is pid or entry[0] == pid):
                del me.watchers[tag]
                released = True
        if type(tag) is Ref and _made_where(tag, pid):
            # A call's tag: a ref made where the caller lives (the usual case).
            self._to(pid, F.ReplyOf(pid.serial, pid.creation, tag.id, payload, released))
        else:
            self._to(pid, F.Reply(to_wire(pid), to_wire(tag), payload, released))

    def link(self, sender: Pid, pid: Pid) -> bool:
        """Link to a remote pid; False when its scheduler is down (then: noproc)."""
        if not self.alive(pid):
            return False
        self._to(pid, F.Link(to_wire(sender), to_wire(pid)))
        return True

    def unlink(self, sender: Pid, pid: Pid) -> None:
        if self.alive(pid):
            self._to(pid, F.Unlink(to_wire(sender), to_wire(pid)))

    def exit(self, sender: Pid, pid: Pid, reason: Any, linked: bool) -> None:
        """Send an exit signal; a link's reason that is no term crosses as a Crash (see
        `_exit_reason`), while `exit/2` with one raises NotSerializable, as a send does."""
        if self.alive(pid):
            wire = _exit_reason(reason) if linked else to_wire(reason)
            self._to(pid, F.Exit(to_wire(sender), to_wire(pid), wire, linked))

    def monitor(self, watcher: Pid, pid: Pid, ref: Ref, ident: Any) -> None:
        if not self.alive(pid):
            # A process on a scheduler that is gone: DOWN noconnection at once.
            proc = self.sched.lookup(watcher)
            if proc is not None and proc.monitors:
                proc.monitors.pop(ref, None)
                deliver(proc, ("DOWN", ref, "process", ident, "noconnection"))
            return
        self._to(pid, F.Monitor(to_wire(watcher), to_wire(pid), to_wire(ref), to_wire(ident)))

    def monitor_name(self, watcher: Pid, name: str, node: str, ref: Ref) -> None:
        """Monitor the process registered as `name` on another node."""
        self._to_node(
            node, 0, F.Monitor(to_wire(watcher), name, to_wire(ref), to_wire((name, node)))
        )

    def demonitor(self, pid: Pid, ref: Ref) -> None:
        if self.alive(pid):
            self._to(pid, F.Demonitor(to_wire(pid), to_wire(ref)))

    def demonitor_name(self, name: str, node: str, ref: Ref) -> None:
        """Drop a monitor by name on another node (that node resolves the name)."""
        self._to_node(node, 0, F.Demonitor(name, to_wire(ref)))

    def down(self, watcher: Pid, ref: Ref, ident: Any, reason: Any) -> None:
        if not self.alive(watcher):
            return
        if type(ident) is Pid and _made_where(ref, watcher):
            # The usual case (a monitor by pid, its ref made where the watcher lives).
            self._to(watcher, F.DownOf(watcher.serial, watcher.creation, ref.id,
                                       _exit_reason(reason)))
            return
        self._to(
            watcher, F.Down(to_wire(watcher), to_wire(ref), to_wire(ident), _exit_reason(reason))
        )

    def spawn(
        self, peer: int, fn: Any, args: tuple, parent: Process | None, link: bool,
        monitor: bool, trap_exit: bool, node: str | None = None,
    ) -> Any:
        """Spawn on scheduler `peer` (of `node`); the pid is allocated here, no round trip.

        Serials are `(count << 24) | (slot << 8) | origin scheduler`: slot 0 is this node,
        another node's slot is the one it gave us at connection, so pids never collide.
        """
        sched = self.sched
        name = fn_name(fn)
        wire_args = to_wire(args)
        if args and len(_raw_encode(wire_args)) > self.max_message_size:
            # Over the receiver's frame limit the frame would be dropped in transit, unseen.
            raise BadArg(
                f"spawn arguments exceed max_message_size ({self.max_message_size} bytes)",
                "message_too_large",
            )
        if node is None or node == self.node:
            node = self.node
            creation = self.creations.get(peer)
            slot = 0
        else:
            info = self.remote_nodes.get(node)
            if info is None:
                raise BadArg(
                    f"spawn node={node!r}: not connected to that node "
                    "(connect first with `await pyotp.net.connect(node)`)"
                )
            creation = info.creations.get(peer, 0)
            slot = info.slot
            if peer not in info.endpoints:
                raise BadArg(f"spawn on {node!r}: it has no scheduler {peer}")
        key = (node, peer)
        count = self.spawn_counts.get(key, 0) + 1
        self.spawn_counts[key] = count
        pid = Pid(node, peer, (count << 24) | (slot << 8) | sched.index, creation or 0)
        ref = sched.make_ref() if monitor and parent is not None else None
        if parent is not None:
            if link:
                if parent.links is None:
                    parent.links = {pid}
                else:
                    parent.links.add(pid)
            if ref is not None:
                if parent.monitors is None:
                    parent.monitors = {ref: pid}
                else:
                    parent.monitors[ref] = pid
        if creation is None:
            # The scheduler is down: the process is born lost.
            if parent is not None:
                self._lost(parent, pid, "noconnection")
        else:
            if node == self.node:
                self.pending_spawns[peer] = self.pending_spawns.get(peer, 0) + 1
            self._to(
                pid,
                F.Spawn(
                    pid.serial, pid.creation, name, wire_args,
                    to_wire(parent.pid) if parent is not None else None,
                    link, ref.id if ref is not None else None, trap_exit,
                ),
            )
        if monitor:
            return pid, ref
        return pid

    def call(
        self, peer: int, op: str, args: Any, reply_to: Pid, tag: Ref, node: str | None = None
    ) -> None:
        """Ask scheduler `peer` (of `node`) to run `op`; the answer comes as (tag, result)."""
        if node is not None and node != self.node:
            if self.ports is not None and self.ports.connected(node):
                self.ports.put(
                    node, peer, F.Call(op, to_wire(args), to_wire(reply_to), to_wire(tag))
                )
            else:
                self._answer(reply_to, tag, ("error", "noconnection"))
        elif peer == self.sched.index:
            self._on_call(op, args, reply_to, tag)
        elif peer in self.creations:
            self._put(peer, F.Call(op, to_wire(args), to_wire(reply_to), to_wire(tag)))
        else:
            self._answer(reply_to, tag, ("error", "noconnection"))

    def cancel_timer(self, tref: Ref) -> bool:
        """Send the cancel of a timer of this node's scheduler `tref.scheduler`.

        Returns False (nothing sent) when that scheduler is down or was restarted since it
        made the timer: the timer went with it.
        """
        if self.creations.get(tref.scheduler) != tref.creation:
            return False
        self._put(tref.scheduler, F.CancelTimer(tref.id, tref.creation))
        return True

    def broadcast(self, frame: Any) -> None:
        for peer in list(self.creations):
            if peer != self.sched.index:
                self._put(peer, frame)

    def name_released(self, name: str, pid: Pid) -> None:
        """A local process holding `name` died: tell every scheduler (and the registrar)."""
        self.broadcast(F.NameDown(name, to_wire(pid)))
        if self.sched.index == 0:
            self._registrar_release(name, pid)

    # ------------------------------------------------------------------ inbound

    def on_batch(self, data: bytes) -> None:
        """Apply one batch of frames from a peer (the mesh calls this)."""
        try:
            frames = F.decode_batch(data)
        except CodecError as exc:
            self.bad_frames += 1
            log.warning("dropped a malformed frame batch (%d bytes): %s", len(data), exc)
            return
        sched = self.sched
        procs = sched.procs
        for frame in frames:
            try:
                t = type(frame)
                if t is F.SendTuple:
                    proc = procs.get(frame.to)
                    if proc is not None and frame.creation == sched.creation:
                        deliver_many(proc, frame.msgs)
                    else:
                        self.dropped += len(frame.msgs)
                elif t is F.Send:
                    proc = procs.get(frame.to)
                    if proc is not None and frame.creation == sched.creation:
                        deliver(proc, _raw_decode(frame.msg))
                    else:
                        self.dropped += 1
                elif t is _GenCall:
                    proc = procs.get(frame.to)
                    caller = frame.caller
                    ref = Ref(caller.node, caller.scheduler, caller.creation, frame.ref)
                    if proc is not None and frame.creation == sched.creation:
                        if proc.watchers is None:
                            proc.watchers = {ref: (caller, proc.pid)}
                        else:
                            proc.watchers[ref] = (caller, proc.pid)
                        deliver(proc, ("$gen_call", (caller, ref), _raw_decode(frame.request)))
                    else:
                        target = Pid(sched.node, sched.index, frame.to, frame.creation)
                        self.down(caller, ref, target, "noproc")
                elif t is _ReplyOf:
                    proc = procs.get(frame.to)
                    if proc is not None and proc.monitors and frame.creation == sched.creation:
                        ref = Ref(sched.node, sched.index, sched.creation, frame.ref)
                        if ref in proc.monitors:
                            if frame.released:
                                del proc.monitors[ref]
                            deliver(proc, (ref, decode(frame.value)))
                else:
                    self._on_frame(frame)
            except Exception as exc:  # a bad frame never kills the scheduler
                self.bad_frames += 1
                log.warning("dropped a bad frame %s: %s: %s", type(frame).__name__,
                            type(exc).__name__, exc)

    def _on_frame(self, frame: Any) -> None:
        sched = self.sched
        t = type(frame)
        if t is F.SendName:
            pid = sched.names.get(frame.name)
            if pid is not None:
                proc = sched.resolve(pid)
                if proc is not None:
                    deliver(proc, decode(frame.msg))
                else:
                    self._to(pid, F.Send(pid.serial, pid.creation, frame.msg))
        elif t is F.Reply:
            proc = sched.lookup(frame.to)
            if proc is not None and proc.monitors and frame.tag in proc.monitors:
                if frame.released:
                    del proc.monitors[frame.tag]
                deliver(proc, (frame.tag, decode(frame.value)))
        elif t is F.Exit:
            sched.exit_signal(frame.sender, frame.to, frame.reason, frame.linked)
        elif t is F.Link:
            proc = sched.lookup(frame.to)
            if proc is None:
                self.exit(frame.to, frame.sender, "noproc", True)
            elif proc.links is None:
                proc.links = {frame.sender}
            else:
                proc.links.add(frame.sender)
        elif t is F.Unlink:
            proc = sched.lookup(frame.to)
            if proc is not None and proc.links:
                proc.links.discard(frame.sender)
        elif t is F.Monitor:
            target = frame.target
            if type(target) is str:  # by name, from another node: resolve it here
                pid = sched.names.get(target)
                if pid is None:
                    self.down(frame.watcher, frame.ref, frame.ident, "noproc")
                elif not sched.is_local(pid):
                    self._to(pid, F.Monitor(to_wire(frame.watcher), to_wire(pid),
                                            to_wire(frame.ref), to_wire(frame.ident)))
                else:
                    proc = sched.resolve(pid)
                    if proc is None:
                        self.down(frame.watcher, frame.ref, frame.ident, "noproc")
                    elif proc.watchers is None:
                        proc.watchers = {frame.ref: (frame.watcher, frame.ident)}
                    else:
                        proc.watchers[frame.ref] = (frame.watcher, frame.ident)
                return
            proc = sched.lookup(target)
            if proc is None:
                self.down(frame.watcher, frame.ref, frame.ident, "noproc")
            elif proc.watchers is None:
                proc.watchers = {frame.ref: (frame.watcher, frame.ident)}
            else:
                proc.watchers[frame.ref] = (frame.watcher, frame.ident)
        elif t is F.Demonitor:
            target = frame.target
            if type(target) is str:  # by name, from another node: resolve it here
                target = sched.names.get(target)
                if target is None:
                    return  # nobody holds it now: the watch went with its process
                if not sched.is_local(target):
                    self._to(target, F.Demonitor(to_wire(target), to_wire(frame.ref)))
                    return
            proc = sched.lookup(target)
            if proc is not None and proc.watchers:
                proc.watchers.pop(frame.ref, None)
        elif t is F.DownOf:
            proc = sched.procs.get(frame.to)
            if proc is not None and proc.monitors and frame.creation == sched.creation:
                ref = Ref(sched.node, sched.index, sched.creation, frame.ref)
                pid = proc.monitors.pop(ref, None)
                if pid is not None:
                    deliver(proc, ("DOWN", ref, "process", pid, frame.reason))
        elif t is F.Down:
            proc = sched.lookup(frame.watcher)
            if proc is not None and proc.monitors and frame.ref in proc.monitors:
                del proc.monitors[frame.ref]
                if sched.name_monitors:
                    sched.name_monitors.pop(frame.ref, None)
                deliver(proc, ("DOWN", frame.ref, "process", frame.ident, frame.reason))
        elif t is F.Spawn:
            self._on_spawn(frame)
        elif t is F.Call:
            self._on_call(frame.op, frame.args, frame.reply_to, frame.tag)
        elif t is F.NameUp:
            self._apply_name_up(frame.name, frame.pid)
            self._put(0, F.Registered(to_wire(frame.ack_tag)))
        elif t is F.NameDown:
            self._apply_name_down(frame.name, frame.pid)
            if sched.index == 0:
                self._registrar_release(frame.name, frame.pid)
        elif t is F.Registered:
            self._on_registered(frame.ack_tag)
        elif t is F.NodeUp:
            self.node_up(frame)
        elif t is F.NodeDown:
            self.node_down(frame.name)
        elif t is F.MonitorNode:
            self.request_connect(frame.name)
        elif t is F.Load:
            self.loads[frame.index] = frame
            self.pending_spawns[frame.index] = 0
        elif t is F.CancelTimer:
            sched.cancel_timer(Ref(sched.node, sched.index, frame.creation, frame.ref))
        elif self.control is not None:
            self.control(frame)
        else:
            raise CodecError(f"unexpected frame {t.__name__}")

    def _on_spawn(self, frame: Any) -> None:
        sched = self.sched
        pid = Pid(sched.node, sched.index, frame.serial, frame.creation)
        parent = frame.parent
        ref = None
        if frame.ref is not None and parent is not None:
            ref = Ref(parent.node, parent.scheduler, parent.creation, frame.ref)
        if frame.creation != sched.creation:
            if parent is not None:
                self._lost_remote(parent, pid, frame.link, ref)
            return
        try:
            fn = resolve_fn(frame.fn)
            args = tuple(frame.args)
        except Exception as exc:
            fn, args = _undefined, (frame.fn, f"{type(exc).__name__}: {exc}")
        sched.start_process(pid, fn, args, parent, frame.link, ref, frame.trap_exit)

    def _lost_remote(self, parent: Pid, pid: Pid, link: bool, ref: Any) -> None:
        if link:
            self.exit(pid, parent, "noconnection", True)
        if ref is not None:
            self.down(parent, ref, pid, "noconnection")

    def _lost(self, proc: Process, pid: Pid, reason: Any) -> None:
        """`pid` (on a lost scheduler) is gone: fire `proc`'s link and monitors on it."""
        sched = self.sched
        if proc.monitors:
            for ref in [r for r, p in proc.monitors.items() if p == pid]:
                del proc.monitors[ref]
                deliver(proc, ("DOWN", ref, "process", pid, reason))
        if proc.links and pid in proc.links:
            sched.exit_signal(pid, proc.pid, reason, True)

    # ------------------------------------------------------------------ scheduler-level calls

    def _answer(self, reply_to: Pid, tag: Any, result: Any) -> None:
        proc = self.sched.lookup(reply_to)
        if proc is not None:
            deliver(proc, (tag, result))
        elif reply_to is _REGISTRAR:
            if self.sched.index == 0:
                self.registrar_answer(tag, result)
            else:
                self._put(0, F.Call("registrar_answer", to_wire((tag, result)), None, None))
        elif self.alive(reply_to):
            self._to(
                reply_to, F.Send(reply_to.serial, reply_to.creation, self._payload((tag, result)))
            )

    def _on_call(self, op: str, args: Any, reply_to: Pid, tag: Any) -> None:
        sched = self.sched
        if reply_to == _REGISTRAR:
            reply_to = _REGISTRAR
        try:
            if op == "registrar_answer":
                self.registrar_answer(*args)
                return
            if op == "process_info":
                proc = sched.lookup(args)
                result: Any = (
                    "ok", None if proc is None else info_of(proc, None, sched.name_monitors)
                )
            elif op == "processes":
                result = ("ok", [p.pid for p in sched.procs.values()])
            elif op == "register":
                self._registrar_register(args[0], args[1], reply_to, tag)
                return
            elif op == "unregister":
                self._registrar_unregister(args, reply_to, tag)
                return
            elif op == "attach":
                name, pid = args
                try:
                    sched.attach_name(name, pid)
                    result = ("ok", True)
                except BadArg as exc:
                    result = ("error", str(exc))
            elif op == "detach":
                name, pid = args
                proc = sched.lookup(pid)
                if proc is not None and proc.name == name:
                    proc.name = None
                result = ("ok", True)
            elif op == "connect":
                if self.net_connect is None:
                    result = ("ok", False)
                else:
                    task = self.sched.loop.create_task(
                        self._connect_and_answer(args, reply_to, tag)
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    return
            elif op == "disconnect":
                result = ("ok", self.net_disconnect(args) if self.net_disconnect else False)
            elif op == "nodes":
                result = ("ok", sorted(self.remote_nodes))
            elif op == "statistics":
                result = ("ok", self.control_stats())
            else:
                result = ("error", f"unknown scheduler call {op!r}")
        except Exception as exc:  # an answer, never a dead scheduler
            result = ("error", f"{type(exc).__name__}: {exc}")
        self._answer(reply_to, tag, result)

    async def _connect_and_answer(self, node: str, reply_to: Pid, tag: Any) -> None:
        try:
            ok = await self.net_connect(node)
        except Exception as exc:  # an answer, never a dead scheduler
            log.warning("connect %s failed: %s", node, exc)
            ok = False
        self._answer(reply_to, tag, ("ok", ok))

    def control_stats(self) -> Any:
        return None

    # ------------------------------------------------------------------ registry

    def _apply_name_up(self, name: str, pid: Pid) -> None:
        proc = self.sched.lookup(pid)
        self.sched.names[name] = proc.pid if proc is not None else pid

    def _apply_name_down(self, name: str, pid: Pid) -> None:
        if self.sched.names.get(name) == pid:
            del self.sched.names[name]

    def _registrar_register(self, name: str, pid: Pid, reply_to: Pid, tag: Any) -> None:
        sched = self.sched
        if name in sched.names or name in self._pending_names:
            self._answer(reply_to, tag, ("error", f"the name {name!r} is already registered"))
            return
        if pid.node != sched.node or (pid.scheduler != 0 and not self.alive(pid)):
            self._answer(reply_to, tag, ("error", f"{pid!r} is not a live process"))
            return
        self._pending_names[name] = (pid, reply_to, tag)
        if pid.scheduler == 0:
            try:
                sched.attach_name(name, pid)
                self._attached(name, True, "")
            except BadArg as exc:
                self._attached(name, False, str(exc))
        else:
            self._put(
                pid.scheduler, F.Call("attach", to_wire((name, pid)), to_wire(_REGISTRAR),
                                      to_wire(("attach", name)))
            )

    def registrar_answer(self, tag: Any, result: Any) -> None:
        """An answer addressed to the registrar itself (its pseudo pid)."""
        if type(tag) is tuple and tag[0] == "attach":
            ok = result[0] == "ok"
            self._attached(tag[1], ok, "" if ok else result[1])

    def _attached(self, name: str, ok: bool, error: str) -> None:
        pending = self._pending_names.get(name)
        if pending is None:
            return
        pid, reply_to, tag = pending
        if not ok:
            del self._pending_names[name]
            self._answer(reply_to, tag, ("error", error))
            return
        self._apply_name_up(name, pid)
        peers = [p for p in self.creations if p != 0]
        if not peers:
            del self._pending_names[name]
            self._answer(reply_to, tag, ("ok", True))
            return
        ack_tag = self.sched.make_ref()
        self._acks[ack_tag] = [len(peers), name, reply_to, tag]
        self.broadcast(F.NameUp(name, to_wire(pid), to_wire(ack_tag)))

    def _on_registered(self, ack_tag: Any) -> None:
        entry = self._acks.get(ack_tag)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            del self._acks[ack_tag]
            _, name, reply_to, tag = entry
            self._pending_names.pop(name, None)
            self._answer(reply_to, tag, ("ok", True))

    def _registrar_unregister(self, name: str, reply_to: Pid, tag: Any) -> None:
        sched = self.sched
        pid = sched.names.get(name)
        if pid is None:
            self._answer(reply_to, tag, ("error", f"the name {name!r} is not registered"))
            return
        del sched.names[name]
        proc = sched.lookup(pid)
        if proc is not None and proc.name == name:
            proc.name = None
        elif pid.scheduler != 0:
            self._put(pid.scheduler, F.Call("detach", to_wire((name, pid)), to_wire(_REGISTRAR),
                                            to_wire(("detach", name))))
        # Unregistering needs no acknowledgement round: a stale cache entry only routes a
        # message to a pid that no longer holds the name, which Erlang allows too.
        self.broadcast(F.NameDown(name, to_wire(pid)))
        self._answer(reply_to, tag, ("ok", True))

    def _registrar_release(self, name: str, pid: Pid) -> None:
        self._apply_name_down(name, pid)

    # ------------------------------------------------------------------ peers

    def peer_down(self, index: int) -> None:
        """Scheduler `index` is gone: every link and monitor to it fires with noconnection."""
        stream_tail.pid = None
        self.creations.pop(index, None)
        self.mesh.disconnect(index)
        self.loads.pop(index, None)
        node = self.node
        self._lost_where(lambda pid: pid.scheduler == index and pid.node == node)

    def peer_up(self, index: int, creation: int, endpoint: str) -> None:
        stream_tail.pid = None
        self.mesh.connect(index, endpoint)
        self.creations[index] = creation

    def node_up(self, frame: Any) -> None:
        """Node `frame.name` is connected: open its streams and send what was held for it."""
        stream_tail.pid = None
        if self.ports is None:
            return
        self.remote_nodes[frame.name] = frame
        self.ports.node_up(frame.name, frame.token, frame.accept, frame.endpoints)
        for index, held in self.pending.pop(frame.name, ()):
            self.ports.put(frame.name, index, held)

    def node_down(self, name: str) -> None:
        """Node `name` is lost (or never came): noconnection for everything tied to it."""
        stream_tail.pid = None
        self.pending.pop(name, None)
        self.remote_nodes.pop(name, None)
        if self.ports is not None:
            self.ports.node_down(name)
        self._lost_where(lambda pid: pid.node == name)
        for watcher in self.node_watchers.pop(name, ()):
            proc = self.sched.lookup(watcher)
            if proc is not None:
                deliver(proc, ("nodedown", name))

    def on_node_batch(self, node: str, data: bytes) -> None:
        """A batch from a scheduler of another (authenticated) node."""
        self.on_batch(data)

    def _lost_where(self, gone: Any) -> None:
        sched = self.sched
        for name, pid in list(sched.names.items()):
            if gone(pid):
                del sched.names[name]
        for proc in list(sched.procs.values()):
            if proc.watchers:
                for ref in [r for r, (w, _) in proc.watchers.items() if gone(w)]:
                    del proc.watchers[ref]
            if proc.monitors:
                for ref, pid in [(r, p) for r, p in proc.monitors.items() if gone(p)]:
                    del proc.monitors[ref]
                    # by name: the DOWN names (name, node), not the placeholder pid
                    ident = sched.name_monitors.pop(ref, pid) if sched.name_monitors else pid
                    deliver(proc, ("DOWN", ref, "process", ident, "noconnection"))
            if proc.links:
                for pid in [p for p in proc.links if gone(p)]:
                    sched.exit_signal(pid, proc.pid, "noconnection", True)


def _flat(msg: Any, max_size: int) -> bool:
    """True for a flat tuple of scalars, pids and refs that a SendTuple frame can carry.

    A small enough one cannot exceed `max_size` (an element encodes to at most 16,393
    bytes); anything else takes the general codec path (which refuses non-terms).
    """
    if type(msg) is not tuple or len(msg) * 16_393 + 16 > max_size:
        return False
    for e in msg:
        t = type(e)
        if t is str:
            if len(e) > 4096:
                return False
        elif t is int:
            if e > 0xFFFFFFFFFFFFFFFF or e < -0x8000000000000000:
                return False
        elif t not in _FLAT_SCALARS and (t is not bytes or len(e) > 4096):
            return False  # (pids and refs: the batch encoder's hook writes their records)
    return True


_FLAT_SCALARS = frozenset((float, bool, type(None), Pid, Ref))


def _made_where(ref: Ref, pid: Pid) -> bool:
    """True when `ref` was made by the scheduler `pid` lives on: then its number alone
    names it there (the short frame forms)."""
    return ref.creation == pid.creation and ref.scheduler == pid.scheduler and ref.node == pid.node


_SendTuple = F.SendTuple


class _StreamTail:
    """The SendTuple frame queued last, with its pid and stream: a send to the same pid
    while that frame is still the last one queued joins it at once (the streaming case).
    Forgotten whenever a peer or node comes or goes."""

    __slots__ = ("pid", "frame", "out", "max_size")

    def __init__(self) -> None:
        self.pid: Pid | None = None
        self.frame: Any = None
        self.out: list | None = None
        self.max_size = MAX_MESSAGE_SIZE

    def follow(self, pid: Pid, frame: Any, out: list, max_size: int) -> None:
        self.pid = pid
        self.frame = frame
        self.out = out
        self.max_size = max_size

    def append(self, msg: Any) -> bool:
        """Add `msg` to the frame if it is still queued last, has room, and `msg` is flat."""
        out = self.out
        frame = self.frame
        if out and out[-1] is frame and len(frame.msgs) < _TUPLES_PER_FRAME and _flat(
            msg, self.max_size
        ):
            frame.msgs.append(msg)
            return True
        return False


stream_tail = _StreamTail()  # one scheduler per OS process: one tail
_GenCall = F.GenCall
_ReplyOf = F.ReplyOf
_TUPLES_PER_FRAME = 1024  # a frame stays far below the receivers' frame limit

# The registrar's own address for the answers of "attach" calls it makes.
_REGISTRAR = Pid("$registrar", 0, 0, 0)
