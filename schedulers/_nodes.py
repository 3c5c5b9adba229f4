"""Distribution: scheduler 0's connections to other nodes (handshake, heartbeats, nodedown).

Where it sits: `pyotp.net.connect(node)` / an auto-connect → **node control** (this module,
in scheduler 0) → a cookie handshake over ZeroMQ tcp:// → NodeUp to every scheduler of this
node, whose frames then go scheduler to scheduler (`transport._zmq.NodePorts`), never through
one process of either node.

Behind the scenes of one connection (A dials B):
1. A finds B's control port (the port mapper, or `name@host:port`) and opens a DEALER to B's
   ROUTER; they run the mutual HMAC handshake (`transport._handshake`) before anything else.
2. A sends Info (its schedulers' tcp endpoints, the spawn slot it gives the other, the
   nodes it introduces, whether this dial came from an introduction) tagged with B's
   session token; B answers with its own Info, or with Bye when it refuses an introduced
   dial (see below). Frames on the data sockets must carry those tokens too, so nothing
   unauthenticated is ever decoded.
3. Both tell their schedulers NodeUp; each connects to the nodes the other introduced (a
   full mesh, as in Erlang).
4. Ticks every net_ticktime/4; a peer silent for net_ticktime is down: NodeDown to every
   scheduler, and every link and monitor across the cut fires with "noconnection".
A wrong cookie is refused and logged on both sides with the peer's address; it never crashes
anything. When A and B dial each other at the same time, both keep the dial of the node whose
name sorts first (Erlang's tie-break): the other handshake gives way and its caller waits for
the kept one, so both sides agree on one connection.

Transitivity and s_groups (SD Erlang): while `pyotp.s_group` has installed its two
predicates, `transitive_filter(node)` ("may this node have a transitive connection to
`node`?") and `introduce_filter(peer, node)` ("may `peer` be told about `node`?"), a node
in s_groups introduces to a peer only the members of the groups it shares with that peer,
dials only introduced nodes that share a group with it, and accepts an introduced dial only
from such a node. So a grouped node never lands in a connection through someone else's,
and a free node is never pulled into a grouped node's. An explicit `net.connect` (or an
auto-connect on send) is not an introduction and is never refused for its groups.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import msgspec
import zmq

from transport import _epmd
from transport import _frames as F
from transport import _handshake as H
from transport._codec import CodecError
from transport._zmq import NodePorts

__all__ = ["NodeControl", "parse_node"]

log = logging.getLogger("pyotp.net")

_HANDSHAKE_TIMEOUT = 5.0
_REFUSAL_LINGER_MS = 500  # a refused dial's socket gets this long to deliver the refusal
_MAX_CONTROL = 1024 * 1024


class Info(msgspec.Struct, frozen=True, tag="info"):
    """After the handshake: how to reach the sender's schedulers, and what it knows."""

    endpoints: dict[int, str]
    creations: dict[int, int]
    slot: int
    nodes: list[str]
    introduced: bool = False  # the sender dialled because a third node introduced us


class Tick(msgspec.Struct, frozen=True, tag="tick"):
    """A heartbeat."""


class Bye(msgspec.Struct, frozen=True, tag="bye"):
    """The sender disconnects (net.disconnect or shutdown)."""


_control_decoder = msgspec.msgpack.Decoder(Info | Tick | Bye)
_encode = msgspec.msgpack.encode


def parse_node(node: str) -> tuple[str, str, int | None]:
    """Split "name@host" or "name@host:port" into (name, host, port or None).

    Raises:
        ValueError: not of that form, or a port that is not a decimal in 1..65535 (ZeroMQ
            would bind port 99999 as 34463, under a name no peer could reach).
    """
    if type(node) is not str or node.count("@") != 1:
        raise ValueError(f"a node name is 'name@host' or 'name@host:port', got {node!r}")
    name, host = node.split("@")
    port = None
    if ":" in host:
        host, _, p = host.rpartition(":")
        if not p.isdecimal() or not 0 < int(p) < 65536:
            raise ValueError(f"the port of a node name is an int in 1..65535, got {node!r}")
        port = int(p)
    if not name or not host:
        raise ValueError(f"a node name is 'name@host' or 'name@host:port', got {node!r}")
    return name, host, port


class _Conn:
    """One established connection to another node."""

    __slots__ = (
        "name", "token", "accept", "identity", "dealer", "last_seen", "info", "introduced",
        "creation",
    )

    def __init__(self, name: str, token: bytes, accept: bytes) -> None:
        self.name = name
        self.token = token  # what we present to the peer
        self.accept = accept  # what the peer presents to us
        self.identity: bytes | None = None  # set when the peer dialled us (ROUTER side)
        self.dealer: Any = None  # set when we dialled the peer
        self.last_seen = time.monotonic()
        self.info: Info | None = None
        self.introduced = False  # we dialled it because a third node introduced it
        self.creation: int | None = None  # the peer's, from the handshake


class _Crossed(Exception):
    """Internal: our dial gave way to one the peer made at the same time."""


_CROSSED = object()  # put in a dialling handshake's queue to make it give way


async def _next(queue: asyncio.Queue) -> Any:
    reply = await asyncio.wait_for(queue.get(), _HANDSHAKE_TIMEOUT)
    if reply is _CROSSED:
        raise _Crossed()
    return reply


class NodeControl:
    """Internal: the distribution side of scheduler 0."""

    def __init__(self, pool: Any, name: str, cookie: str, ticktime: float) -> None:
        self.pool = pool
        self.router = pool.router
        self.sched = pool.sched
        self.loop = pool.loop
        self.name = name
        self.cookie = cookie
        self.ticktime = ticktime
        self.short, self.host, self.port = parse_node(name)
        self.ctx = zmq.Context.instance()
        self.conns: dict[str, _Conn] = {}
        self.connecting: dict[str, asyncio.Future] = {}
        # identity -> (handshake, when it began, peer address)
        self.accepting: dict[bytes, tuple[H.Acceptor, float, str]] = {}
        self.dealer_waiters: dict[Any, asyncio.Queue] = {}
        self.dialling: dict[str, Any] = {}  # node -> the dealer of our handshake in flight
        self.next_slot = 1
        self.registered = False
        self.ports: NodePorts | None = None
        self._tasks: set[asyncio.Task] = set()
        self.sock: Any = None
        self.refused = 0
        # Set by pyotp.s_group (see the module docstring): node -> may a transitive
        # connection join us?  and (peer, node) -> may peer be introduced to node?
        self.transitive_filter: Any = None
        self.introduce_filter: Any = None

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        """Bind the control and data ports; register with the port mapper."""
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, _MAX_CONTROL)
        if self.port is None:
            self.port = self.sock.bind_to_random_port(f"tcp://{self.host}")
            await self.loop.run_in_executor(None, _epmd.ensure_epmd)
            await self.loop.run_in_executor(
                None,
                lambda: _epmd.register(self.short, self.port, os.getpid(), host=self.host),
            )
            self.registered = True
        else:
            try:
                self.sock.bind(f"tcp://{self.host}:{self.port}")
            except zmq.ZMQError as e:
                raise OSError(
                    e.errno, f"node {self.name}: cannot listen on {self.host}:{self.port}: {e}"
                ) from None
        self.loop.add_reader(self.sock.getsockopt(zmq.FD), self._router_readable)
        self.router.control_connect = self.connect_soon
        self._spawn(self._ticker())

    def attach_ports(self, ports: NodePorts) -> None:
        self.ports = ports

    async def stop(self) -> None:
        if self.sock is None:
            return
        for conn in list(self.conns.values()):
            self._send_control(conn, Bye())
        for task in list(self._tasks):
            task.cancel()
        try:
            self.loop.remove_reader(self.sock.getsockopt(zmq.FD))
        except Exception:  # the loop may be closing
            pass
        for conn in self.conns.values():
            if conn.dealer is not None:
                self._close_dealer(conn.dealer)
        for dealer in list(self.dealer_waiters):  # handshakes cut short by the cancel
            self._close_dealer(dealer)
        self.sock.close(linger=200)
        if self.registered:
            try:
                await self.loop.run_in_executor(
                    None, lambda: _epmd.unregister(self.short, os.getpid(), timeout=1.0)
                )
            except Exception as exc:  # the mapper may be gone already
                log.debug("port mapper unregister failed: %s", exc)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ connect (dial)

    def nodes(self) -> list[str]:
        return sorted(n for n, c in self.conns.items() if c.info is not None)

    def connect_soon(self, node: str, introduced: bool = False) -> None:
        """Start connecting without waiting (auto-connect); failure means NodeDown."""
        self._spawn(self.connect(node, introduced))

    async def connect(self, node: str, introduced: bool = False) -> bool:
        """Connect to `node` (idempotent); True once both sides are up.

        `introduced` says the dial is transitive (another node told us of `node`), which a
        node in s_groups may refuse.
        """
        if node == self.name:
            return True
        conn = self.conns.get(node)
        if conn is not None and conn.info is not None:
            return True
        fut = self.connecting.get(node)
        if fut is None:
            fut = self.loop.create_future()
            self.connecting[node] = fut
            if conn is not None:
                # It dialled us and the handshake is done; its Info is on the way. Wait
                # for that rather than dial across it.
                return await self._await_up(node, fut)
            self._spawn(self._dial(node, fut, introduced))
        return await asyncio.shield(fut)

    async def _await_up(self, node: str, fut: asyncio.Future) -> bool:
        """Wait for `node` to come up over a connection it dialled; False after a while."""
        try:
            return await asyncio.wait_for(asyncio.shield(fut), _HANDSHAKE_TIMEOUT)
        except TimeoutError:
            if self.connecting.get(node) is fut:
                del self.connecting[node]
            if not fut.done():
                fut.set_result(False)
            return False

    async def _dial(self, node: str, fut: asyncio.Future, introduced: bool) -> None:
        ok = False
        try:
            ok = await self._handshake(node, introduced)
        except Exception as exc:  # every failure is "not connected", never a crash
            log.warning("connecting to %s failed: %s", node, exc)
        if not ok:
            self.connecting.pop(node, None)
            if node not in self.conns:
                self._node_down(node, announce=False)
            if not fut.done():
                fut.set_result(False)

    async def _handshake(self, node: str, introduced: bool) -> bool:
        short, host, port = parse_node(node)
        if port is None:
            port = await self.loop.run_in_executor(
                None, lambda: _epmd.lookup(short, host, timeout=2.0)
            )
            if port is None:
                log.warning("connecting to %s: no such node at the port mapper of %s",
                            node, host)
                return False
        # ZeroMQ retries a refused connect silently, so a closed port would only show as the
        # handshake timeout. A plain TCP connect first fails at once (Erlang: nodedown in
        # about a millisecond); ZeroMQ drops the probe, which never sends its greeting.
        try:
            _, probe = await asyncio.wait_for(
                asyncio.open_connection(host, port), _HANDSHAKE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.warning("connecting to %s at %s:%s: %s", node, host, port,
                        exc or "no answer")
            return False
        probe.transport.abort()
        if node in self.conns and self.conns[node].identity is not None:
            # It dialled us while we looked it up: take that connection (see _accept_step).
            fut = self.connecting.get(node)
            return fut is not None and await self._await_up(node, fut)
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.MAXMSGSIZE, _MAX_CONTROL)
        dealer.connect(f"tcp://{host}:{port}")
        queue: asyncio.Queue = asyncio.Queue()
        self.dealer_waiters[dealer] = queue
        self.dialling[node] = dealer
        self.loop.add_reader(dealer.getsockopt(zmq.FD), self._dealer_readable, dealer)
        initiator = H.Initiator(self.cookie, self.name, self.sched.creation, expect=node)
        address = f"{host}:{port}"
        try:
            self._send(dealer, [H.encode_message(initiator.hello())])
            reply = await _next(queue)
            ack = initiator.on_challenge(H.decode_message(reply[-1]))
            self._send(dealer, [H.encode_message(ack)])
            reply = await _next(queue)
            initiator.on_ack(H.decode_message(reply[-1]))
        except _Crossed:
            return await self._crossed(node, dealer)
        except H.HandshakeError as exc:
            if exc.reason == ("refused", "crossing"):
                return await self._crossed(node, dealer)
            self._end_dial(node, dealer)
            refused = exc.refused() if hasattr(exc, "refused") else None
            if refused is not None:
                self._send(dealer, [H.encode_message(refused)])
            log.error("connection to %s at %s refused: %s", node, address, exc)
            # Linger a moment so the refusal leaves: the peer logs it (and forgets us).
            self._close_dealer(dealer, linger=_REFUSAL_LINGER_MS)
            return False
        except (TimeoutError, CodecError) as exc:
            log.warning("connecting to %s at %s: no valid answer (%s)", node, address, exc)
            self._end_dial(node, dealer)
            self._close_dealer(dealer)
            return False
        self._end_dial(node, dealer)
        existing = self.conns.get(node)
        if existing is not None and existing.info is not None:
            self._close_dealer(dealer)  # they dialled us meanwhile and that one is up
            return True
        conn = _Conn(node, initiator.peer_session, initiator.session)
        conn.creation = initiator.peer_creation
        conn.dealer = dealer
        conn.introduced = introduced
        self.conns[node] = conn
        self.dealer_waiters.pop(dealer, None)
        while not queue.empty():  # the peer's Info may have come right behind its Ack
            self._on_control(conn, queue.get_nowait())
        self._send_info(conn)
        fut = self.connecting.get(node)
        if fut is None:
            return conn.info is not None
        try:
            # False when the peer answered Bye (it refused an introduced dial).
            return await asyncio.wait_for(asyncio.shield(fut), _HANDSHAKE_TIMEOUT)
        except TimeoutError:
            log.warning("connecting to %s: no Info after the handshake", node)
            self._node_down(node)
            return False

    def _end_dial(self, node: str, dealer: Any) -> None:
        if self.dialling.get(node) is dealer:
            del self.dialling[node]

    async def _crossed(self, node: str, dealer: Any) -> bool:
        """Our dial crossed one from `node` and lost the tie-break (see _accept_step): drop
        it, and wait for `node` to come up over its own dial."""
        self._end_dial(node, dealer)
        self._close_dealer(dealer)
        log.debug("connecting to %s: crossed its own dial, which is kept", node)
        fut = self.connecting.get(node)
        if fut is None:  # already up over the kept dial
            conn = self.conns.get(node)
            return conn is not None and conn.info is not None
        return await self._await_up(node, fut)

    def _close_dealer(self, dealer: Any, linger: int = 0) -> None:
        self.dealer_waiters.pop(dealer, None)
        try:
            self.loop.remove_reader(dealer.getsockopt(zmq.FD))
        except Exception:  # already closed
            pass
        dealer.close(linger=linger)

    def _dealer_readable(self, dealer: Any) -> None:
        while True:
            try:
                parts = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            conn = next((c for c in self.conns.values() if c.dealer is dealer), None)
            if conn is None:
                queue = self.dealer_waiters.get(dealer)
                if queue is not None:
                    queue.put_nowait(parts)
                continue
            self._on_control(conn, parts)

    # ------------------------------------------------------------------ accept

    def _router_readable(self) -> None:
        sock = self.sock
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            if len(frames) < 2:
                continue
            identity = frames[0].bytes
            parts = [f.bytes for f in frames[1:]]
            try:
                address = frames[1].get("Peer-Address")
            except Exception:  # not every transport knows it
                address = "?"
            conn = next((c for c in self.conns.values() if c.identity == identity), None)
            if conn is not None and len(parts) == 2:
                self._on_control(conn, parts)
            elif len(parts) == 1:
                self._accept_step(identity, parts[0], address)
            else:
                self.refused += 1

    def _accept_step(self, identity: bytes, data: bytes, address: str) -> None:
        entry = self.accepting.get(identity)
        acceptor = entry[0] if entry is not None else None
        if acceptor is None and self.accepting:
            self._forget_abandoned()
        try:
            msg = H.decode_message(data)
            if acceptor is None:
                if not isinstance(msg, H.Hello):
                    raise H.HandshakeError(
                        "unexpected_message", "expected Hello", "unexpected_message"
                    )
                acceptor = H.Acceptor(self.cookie, self.name, self.sched.creation)
                self.accepting[identity] = (acceptor, time.monotonic(), address)
                reply = acceptor.on_hello(msg)
                self._send(self.sock, [identity, H.encode_message(reply)])
                return
            final = acceptor.on_ack(msg)
        except (H.HandshakeError, CodecError) as exc:
            self.accepting.pop(identity, None)
            self.refused += 1
            log.error("refused a connection from %s (%s): %s", address,
                      getattr(acceptor, "peer_name", None) or "unknown node", exc)
            refused = exc.refused() if isinstance(exc, H.HandshakeError) else None
            if refused is not None:
                self._send(self.sock, [identity, H.encode_message(refused)])
            return
        del self.accepting[identity]
        node = acceptor.peer_name
        old = self.conns.get(node)
        pending = self.connecting.get(node)
        if pending is not None and not pending.done() and (old is None or old.info is None):
            # Both nodes dialled at once. Both sides keep the dial of the node whose name
            # sorts first, as Erlang's tie-break does: else each would keep a different one.
            if self.name < node:
                self._send(self.sock, [identity, H.encode_message(H.Refused("crossing"))])
                return  # ours wins: the peer waits for it (see _crossed)
            mine = self.dialling.pop(node, None)
            if mine is not None:
                queue = self.dealer_waiters.get(mine)
                if queue is not None:
                    queue.put_nowait(_CROSSED)  # its handshake gives way (see _crossed)
            if old is not None:  # ours got through the handshake but never came up
                del self.conns[node]
                if old.dealer is not None:
                    self._close_dealer(old.dealer)
            old = None
        if (
            old is not None
            and old.info is not None
            and old.dealer is not None
            and self.name < node
            and old.creation == acceptor.peer_creation
        ):
            # The dial that lost a crossing (above), late: its Ack was on the way when its
            # side gave way, and ours is up by now. Not a reconnect: keep ours.
            self._send(self.sock, [identity, H.encode_message(H.Refused("crossing"))])
            return
        if old is not None:
            self._node_down(node)  # a reconnect (maybe a new incarnation) replaces it
        conn = _Conn(node, acceptor.peer_session, acceptor.session)
        conn.creation = acceptor.peer_creation
        conn.identity = identity
        self.conns[node] = conn
        # Our Info waits for the dialler's: only its Info says whether the dial was an
        # introduction, which a node in s_groups may refuse (see _on_control).
        self._send(self.sock, [identity, H.encode_message(final)])

    def _forget_abandoned(self) -> None:
        """Drop handshakes a peer began and never finished (it went away, or stalls)."""
        now = time.monotonic()
        for identity, (acceptor, began, address) in list(self.accepting.items()):
            if now - began > _HANDSHAKE_TIMEOUT:
                del self.accepting[identity]
                self.refused += 1
                log.warning("dropped an unfinished handshake from %s (%s) after %s s",
                            address, acceptor.peer_name or "unknown node", _HANDSHAKE_TIMEOUT)

    # ------------------------------------------------------------------ control messages

    def _send_control(self, conn: _Conn, msg: Any) -> None:
        data = _encode(msg)
        if conn.dealer is not None:
            self._send(conn.dealer, [conn.token, data])
        elif conn.identity is not None:
            self._send(self.sock, [conn.identity, conn.token, data])

    def _send(self, sock: Any, parts: list) -> None:
        """Send without blocking, then re-arm reading: a send can consume the edge of the
        socket's FD for a message that arrived meanwhile (ZeroMQ's FD is edge-triggered)."""
        try:
            sock.send_multipart(parts, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("control send failed: %s", exc)
            return
        try:
            readable = sock.getsockopt(zmq.EVENTS) & zmq.POLLIN
        except zmq.ZMQError:
            return
        if readable:
            if sock is self.sock:
                self.loop.call_soon(self._router_readable)
            else:
                self.loop.call_soon(self._dealer_readable, sock)

    def _send_info(self, conn: _Conn) -> None:
        slot = self.next_slot
        self.next_slot = slot % 65535 + 1
        endpoints = dict(self.pool.tcp_endpoints)
        creations = dict(self.router.creations)
        introduce = self.introduce_filter
        nodes = [
            n for n in self.nodes()
            if n != conn.name and (introduce is None or introduce(conn.name, n))
        ]
        self._send_control(conn, Info(endpoints, creations, slot, nodes, conn.introduced))

    def _on_control(self, conn: _Conn, parts: list) -> None:
        if len(parts) != 2 or parts[0] != conn.accept:
            self.refused += 1
            return
        try:
            msg = _control_decoder.decode(parts[1])
        except Exception:  # malformed: dropped and counted
            self.refused += 1
            return
        conn.last_seen = time.monotonic()
        if type(msg) is Info:
            first = conn.info is None
            if first and conn.identity is not None:  # we accepted: answer the dialler
                allowed = self.transitive_filter
                if msg.introduced and allowed is not None and not allowed(conn.name):
                    # SD Erlang: no connection through a third node to a node outside
                    # our s_groups. Refused before NodeUp, so nobody here sees it.
                    log.info("refused an introduced connection from %s: no shared s_group",
                             conn.name)
                    self._send_control(conn, Bye())
                    self.conns.pop(conn.name, None)
                    return
                self._send_info(conn)
            conn.info = msg
            if first:
                self._node_up(conn)
        elif type(msg) is Bye:
            self._node_down(conn.name)

    def _node_up(self, conn: _Conn) -> None:
        info = conn.info
        frame = F.NodeUp(
            conn.name, conn.token, conn.accept, info.endpoints, info.creations, info.slot
        )
        self.router.node_up(frame)
        self.router.broadcast(frame)
        log.info("node %s is up", conn.name)
        if self.router.ports is not None:
            self.router.ports.watch(conn.name, self._connection_lost)
        fut = self.connecting.pop(conn.name, None)
        if fut is not None and not fut.done():
            fut.set_result(True)
        # Transitive: a full mesh, as in Erlang, unless this node is in s_groups: then only
        # inside its groups (SD Erlang).
        allowed = self.transitive_filter or (lambda _node: True)
        for other in info.nodes:
            if other != self.name and other not in self.conns and allowed(other):
                self.connect_soon(other, introduced=True)

    def _connection_lost(self, node: str) -> None:
        """The tcp connection to `node`'s scheduler 0 dropped: its OS process is gone (or
        closed it). Erlang takes a closed connection for nodedown at once; so do we."""
        conn = self.conns.get(node)
        if conn is not None and conn.info is not None:
            log.warning("node %s closed its connection: nodedown", node)
            self._node_down(node)

    def _node_down(self, node: str, announce: bool = True) -> None:
        conn = self.conns.pop(node, None)
        if conn is not None:
            if conn.dealer is not None:
                self._close_dealer(conn.dealer)
            if announce and conn.info is not None:
                log.warning("node %s is down", node)
        self.router.node_down(node)
        self.router.broadcast(F.NodeDown(node))
        fut = self.connecting.pop(node, None)
        if fut is not None and not fut.done():
            fut.set_result(False)

    def disconnect(self, node: str) -> bool:
        conn = self.conns.get(node)
        if conn is None:
            return False
        self._send_control(conn, Bye())
        self._node_down(node)
        return True

    async def _ticker(self) -> None:
        interval = max(self.ticktime / 4, 0.05)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if conn.info is None:
                    continue
                if now - conn.last_seen > self.ticktime:
                    log.warning("node %s is not responding (net_ticktime %s s): nodedown",
                                conn.name, self.ticktime)
                    self._node_down(conn.name)
                else:
                    self._send_control(conn, Tick())
