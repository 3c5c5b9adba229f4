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
from typing import Any

from transport import BadArg, CodecError, NotSerializable, Pid, Ref, _codec
from transport import _frames as F
from transport._codec import _raw_decode, _raw_encode, decode, to_wire

from ._info import info_of
from ._process import Process, deliver

__all__ = ["Router", "fn_name", "resolve_fn"]

log = logging.getLogger("pyotp.scheduler")

MAX_MESSAGE_SIZE = 64 * 1024 * 1024


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
        self._acks: dict[Any, list] = {}
        self._pending_names: dict[str, Any] = {}
        self.max_message_size = MAX_MESSAGE_SIZE

    # ------------------------------------------------------------------ outbound

    def _put(self, peer: int, frame: Any) -> None:
        self.mesh.put(peer, frame)

    def alive(self, pid: Pid) -> bool:
        return self.creations.get(pid.scheduler) == pid.creation

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
        if self.creations.get(pid.scheduler) != pid.creation:
            to_wire(msg)  # still refuse a non-term, whatever became of the pid
            return
        self._put(pid.scheduler, F.Send(pid.serial, pid.creation, self._payload(msg)))

    def send_named(self, peer: int, name: str, msg: Any) -> None:
        self._put(peer, F.SendName(name, self._payload(msg)))

    def reply(self, pid: Pid, tag: Any, value: Any) -> None:
        if self.alive(pid):
            self._put(pid.scheduler, F.Reply(to_wire(pid), to_wire(tag), self._payload(value)))

    def link(self, sender: Pid, pid: Pid) -> bool:
        """Link to a remote pid; False when its scheduler is down (then: noproc)."""
        if not self.alive(pid):
            return False
        self._put(pid.scheduler, F.Link(to_wire(sender), to_wire(pid)))
        return True

    def unlink(self, sender: Pid, pid: Pid) -> None:
        if self.alive(pid):
            self._put(pid.scheduler, F.Unlink(to_wire(sender), to_wire(pid)))

    def exit(self, sender: Pid, pid: Pid, reason: Any, linked: bool) -> None:
        if self.alive(pid):
            self._put(
                pid.scheduler, F.Exit(to_wire(sender), to_wire(pid), to_wire(reason), linked)
            )

    def monitor(self, watcher: Pid, pid: Pid, ref: Ref, ident: Any) -> None:
        if not self.alive(pid):
            # A process on a scheduler that is gone: DOWN noconnection at once.
            proc = self.sched.lookup(watcher)
            if proc is not None and proc.monitors:
                proc.monitors.pop(ref, None)
                deliver(proc, ("DOWN", ref, "process", ident, "noconnection"))
            return
        self._put(
            pid.scheduler, F.Monitor(to_wire(watcher), to_wire(pid), to_wire(ref), to_wire(ident))
        )

    def demonitor(self, pid: Pid, ref: Ref) -> None:
        if self.alive(pid):
            self._put(pid.scheduler, F.Demonitor(to_wire(pid), to_wire(ref)))

    def down(self, watcher: Pid, ref: Ref, ident: Any, reason: Any) -> None:
        if self.alive(watcher):
            self._put(
                watcher.scheduler,
                F.Down(to_wire(watcher), to_wire(ref), to_wire(ident), to_wire(reason)),
            )

    def spawn(
        self, peer: int, fn: Any, args: tuple, parent: Process | None, link: bool,
        monitor: bool, trap_exit: bool,
    ) -> Any:
        """Spawn on scheduler `peer`; the pid is allocated here, no round trip."""
        sched = self.sched
        name = fn_name(fn)
        wire_args = to_wire(args)
        creation = self.creations.get(peer)
        count = self.spawn_counts.get(peer, 0) + 1
        self.spawn_counts[peer] = count
        pid = Pid(sched.node, peer, (count << 8) | sched.index, creation or 0)
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
            self.pending_spawns[peer] = self.pending_spawns.get(peer, 0) + 1
            self._put(
                peer,
                F.Spawn(
                    to_wire(pid), name, wire_args,
                    to_wire(parent.pid) if parent is not None else None,
                    link, to_wire(ref) if ref is not None else None, trap_exit,
                ),
            )
        if monitor:
            return pid, ref
        return pid

    def call(self, peer: int, op: str, args: Any, reply_to: Pid, tag: Ref) -> None:
        """Ask scheduler `peer` to run `op`; the answer arrives as (tag, result)."""
        if peer == self.sched.index:
            self._on_call(op, args, reply_to, tag)
        elif peer in self.creations:
            self._put(peer, F.Call(op, to_wire(args), to_wire(reply_to), to_wire(tag)))
        else:
            self._answer(reply_to, tag, ("error", "noconnection"))

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
                if type(frame) is F.Send:
                    proc = procs.get(frame.to)
                    if proc is not None and frame.creation == sched.creation:
                        deliver(proc, _raw_decode(frame.msg))
                    else:
                        self.dropped += 1
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
            proc = sched.resolve(pid) if pid is not None else None
            if proc is not None:
                deliver(proc, decode(frame.msg))
        elif t is F.Reply:
            proc = sched.lookup(frame.to)
            if proc is not None and proc.monitors and frame.tag in proc.monitors:
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
            proc = sched.lookup(frame.target)
            if proc is None:
                self.down(frame.watcher, frame.ref, frame.ident, "noproc")
            elif proc.watchers is None:
                proc.watchers = {frame.ref: (frame.watcher, frame.ident)}
            else:
                proc.watchers[frame.ref] = (frame.watcher, frame.ident)
        elif t is F.Demonitor:
            proc = sched.lookup(frame.target)
            if proc is not None and proc.watchers:
                proc.watchers.pop(frame.ref, None)
        elif t is F.Down:
            proc = sched.lookup(frame.watcher)
            if proc is not None and proc.monitors and frame.ref in proc.monitors:
                del proc.monitors[frame.ref]
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
        elif t is F.Load:
            self.loads[frame.index] = frame
            self.pending_spawns[frame.index] = 0
        elif self.control is not None:
            self.control(frame)
        else:
            raise CodecError(f"unexpected frame {t.__name__}")

    def _on_spawn(self, frame: Any) -> None:
        sched = self.sched
        pid = frame.pid
        if pid.creation != sched.creation or pid.scheduler != sched.index:
            if frame.parent is not None:
                self._lost_remote(frame.parent, pid, frame.link, frame.monitor_ref)
            return
        try:
            fn = resolve_fn(frame.fn)
            args = tuple(frame.args)
        except Exception as exc:
            fn, args = _undefined, (frame.fn, f"{type(exc).__name__}: {exc}")
        sched.start_process(
            pid, fn, args, frame.parent, frame.link, frame.monitor_ref, frame.trap_exit
        )

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
            self._put(
                reply_to.scheduler,
                F.Send(reply_to.serial, reply_to.creation, self._payload((tag, result))),
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
                result: Any = ("ok", None if proc is None else info_of(proc))
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
            elif op == "statistics":
                result = ("ok", self.control_stats())
            else:
                result = ("error", f"unknown scheduler call {op!r}")
        except Exception as exc:  # an answer, never a dead scheduler
            result = ("error", f"{type(exc).__name__}: {exc}")
        self._answer(reply_to, tag, result)

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
        sched = self.sched
        self.creations.pop(index, None)
        self.mesh.disconnect(index)
        self.loads.pop(index, None)
        node = sched.node
        for name, pid in list(sched.names.items()):
            if pid.scheduler == index and pid.node == node:
                del sched.names[name]
        for proc in list(sched.procs.values()):
            if proc.watchers:
                for ref in [r for r, (w, _) in proc.watchers.items() if w.scheduler == index]:
                    del proc.watchers[ref]
            if proc.monitors:
                for ref, pid in [(r, p) for r, p in proc.monitors.items() if p.scheduler == index]:
                    del proc.monitors[ref]
                    deliver(proc, ("DOWN", ref, "process", pid, "noconnection"))
            if proc.links:
                for pid in [p for p in proc.links if p.scheduler == index and p.node == node]:
                    sched.exit_signal(pid, proc.pid, "noconnection", True)

    def peer_up(self, index: int, creation: int, endpoint: str) -> None:
        self.mesh.connect(index, endpoint)
        self.creations[index] = creation


# The registrar's own address for the answers of "attach" calls it makes.
_REGISTRAR = Pid("$registrar", 0, 0, 0)
