"""The node handshake: a mutual HMAC challenge/response on the cookie, before any other frame.

Where it sits: node transport (connect / accept) → **handshake** (this module: messages,
digests, a sans-I/O state machine per side) → frames flow only once both sides said Ack.

The three steps (A connects to B; `d(c, name)` is `digest(cookie, c, name)`):
```
A → B  Hello(a_name, a_creation, cA)            cA: 32 fresh random bytes
B → A  Challenge(b_name, b_creation, d(cA, b_name), cB)
       A checks B's answer: B holds the cookie and answered *as b_name*.
A → B  Ack(d(cB, a_name), sA)                   sA: A's session token, for B to use
       B checks A's answer.
B → A  Ack(d(sA, b_name), sB)                   sB: B's session token, for A to use
       A checks it: the final Ack comes from the cookie holder and belongs to this handshake.
```
Either side that finds a wrong answer, a message out of turn, or a malformed message sends
`Refused(reason)` and closes; the peer sees `("refused", reason)`. Nothing is fatal: every
failure is a `HandshakeError` (or `CodecError` from `decode_message`) for the caller to log
with the peer's address.

Why the node name is inside the digest: an answer is only good for the name it was made for,
so a reply captured from (or coaxed out of) one node cannot be replayed to pass as another.
For the same reason each side refuses a peer that claims its own name: otherwise a node
could be made to answer its own challenge (a reflection attack). The cookie is never sent.

What this does not do: encrypt, or bind the handshake to the connection. Like Erlang's
cookie, it keeps out nodes that do not know the cookie; against an attacker who can sit in
the middle of the network, run the cluster over a private network or a tunnel.

Session tokens: 32 random bytes each side picks and hands to the other; the lead transport
uses them to tag later frames of this connection (`sA` is what B presents to A).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Union

import msgspec

from ._codec import CodecError
from ._cookie import validate_cookie
from ._errors import BadArg, OtpError

__all__ = [
    "CHALLENGE_SIZE",
    "MAX_MESSAGE",
    "PROTOCOL_VERSION",
    "Ack",
    "Acceptor",
    "Challenge",
    "HandshakeError",
    "HandshakeMessage",
    "Hello",
    "Initiator",
    "Refused",
    "check",
    "decode_message",
    "digest",
    "encode_message",
    "new_challenge",
    "new_session",
]

PROTOCOL_VERSION = 1
CHALLENGE_SIZE = 32  # bytes of a challenge, an answer (SHA-256) and a session token
MAX_MESSAGE = 4096  # bytes: a handshake message above this is refused before decoding
_MAX_NAME = 255  # characters of a node name
_MAX_REASON = 256

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_NAME)]
_Creation = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # msgspec bounds are int64
_Nonce = Annotated[bytes, msgspec.Meta(min_length=CHALLENGE_SIZE, max_length=CHALLENGE_SIZE)]
_Reason = Annotated[str, msgspec.Meta(max_length=_MAX_REASON)]

_LABEL = b"pyotp-handshake-v1\x00"  # domain separation: these HMACs mean nothing elsewhere


# --- messages -------------------------------------------------------------------------------


class _H(msgspec.Struct, frozen=True, tag=True):
    """Base of the handshake messages (internal)."""


class Hello(_H, tag="hello"):
    """Step 1, initiator → acceptor: who I am, and a challenge for you to answer."""

    name: _Name
    creation: _Creation
    challenge: _Nonce
    version: int = PROTOCOL_VERSION


class Challenge(_H, tag="challenge"):
    """Step 2, acceptor → initiator: who I am, my answer to your challenge, and mine."""

    name: _Name
    creation: _Creation
    answer: _Nonce
    challenge: _Nonce


class Ack(_H, tag="ack"):
    """Steps 3 and 4: an answer, and the session token the receiver is to use with me."""

    answer: _Nonce
    session: _Nonce


class Refused(_H, tag="refused"):
    """Either side, any step: the handshake failed for `reason` (e.g. `"bad_cookie"`)."""

    reason: _Reason


HandshakeMessage = Union[Hello, Challenge, Ack, Refused]  # noqa: UP007 - a msgspec type

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(HandshakeMessage)


def encode_message(msg: HandshakeMessage) -> bytes:
    """Encode a handshake message to bytes.

    Raises:
        BadArg: `msg` is not a handshake message, or its encoding exceeds `MAX_MESSAGE`.
    """
    if not isinstance(msg, _H):
        raise BadArg(
            f"expected a handshake message (Hello, Challenge, Ack, Refused), "
            f"got {type(msg).__name__}"
        )
    data = _encoder.encode(msg)
    if len(data) > MAX_MESSAGE:
        raise BadArg(f"handshake message of {len(data)} bytes exceeds {MAX_MESSAGE} bytes")
    return data


def decode_message(data: bytes | bytearray | memoryview) -> HandshakeMessage:
    """Decode bytes from a peer into a handshake message, checking every field.

    Raises:
        CodecError: the bytes are over `MAX_MESSAGE`, malformed, of an unknown type, or have
            fields of the wrong type or size. Never anything else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"handshake message must be bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE:
        raise CodecError(
            f"handshake message of {len(data)} bytes exceeds the {MAX_MESSAGE} byte limit"
        )
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise CodecError(f"malformed handshake message: {e}") from None
    except Exception as e:  # a decoder bug must not take a node down
        raise CodecError(f"malformed handshake message: {type(e).__name__}: {e}") from None


# --- digests --------------------------------------------------------------------------------


def new_challenge() -> bytes:
    """Return a fresh challenge: 32 random bytes from the OS's secure source."""
    return secrets.token_bytes(CHALLENGE_SIZE)


def new_session() -> bytes:
    """Return a fresh session token: 32 random bytes from the OS's secure source."""
    return secrets.token_bytes(CHALLENGE_SIZE)


def digest(cookie: str, challenge: bytes, name: str) -> bytes:
    """Return the answer to `challenge` by the node called `name`: HMAC-SHA256 on the cookie.

    Args:
        cookie: the shared cookie (the HMAC key).
        challenge: the bytes to answer.
        name: the answering node's name; the answer is valid for this name only.

    Returns:
        32 bytes.

    Raises:
        BadArg: an argument has the wrong type.
    """
    if not isinstance(cookie, str):
        raise BadArg(f"cookie must be a str, got {type(cookie).__name__}")
    if not isinstance(challenge, (bytes, bytearray)):
        raise BadArg(f"challenge must be bytes, got {type(challenge).__name__}")
    if not isinstance(name, str):
        raise BadArg(f"node name must be a str, got {type(name).__name__}")
    n = name.encode("utf-8")
    # Length-prefixed name before the challenge, so no (name, challenge) pair can be shifted
    # into another with the same bytes.
    msg = _LABEL + len(n).to_bytes(4, "big") + n + bytes(challenge)
    return hmac.new(cookie.encode("utf-8"), msg, hashlib.sha256).digest()


def check(cookie: str, challenge: bytes, name: str, answer: bytes) -> bool:
    """Return whether `answer` is `name`'s answer to `challenge` under `cookie`.

    Compares in constant time. Never raises on a wrong-typed `answer` (it is just wrong).
    """
    if not isinstance(answer, (bytes, bytearray)):
        return False
    return hmac.compare_digest(digest(cookie, challenge, name), bytes(answer))


# --- state machines -------------------------------------------------------------------------


class HandshakeError(OtpError):
    """A failed handshake. `.reason` is what to log, and `.refusal` what to tell the peer.

    Reasons: `"bad_cookie"` (a wrong answer), `"bad_name"` (the peer claims our own name, or not
    the name we dialled), `"bad_version"`, `"unexpected_message"` (out of turn), or
    `("refused", why)` when the peer refused us (then `.refusal` is None: nothing to send).
    """

    def __init__(self, reason: object, message: str, refusal: str | None) -> None:
        super().__init__(reason, message)
        self.refusal = refusal

    def refused(self) -> Refused | None:
        """Return the `Refused` message to send to the peer, or None."""
        return None if self.refusal is None else Refused(self.refusal)


def _fail(reason: str, message: str) -> HandshakeError:
    return HandshakeError(reason, message, reason)


def _peer_refused(msg: Refused) -> HandshakeError:
    return HandshakeError(("refused", msg.reason), f"the peer refused: {msg.reason}", None)


def _check_self(cookie: str, name: str, creation: int) -> None:
    validate_cookie(cookie)
    if not isinstance(name, str) or not 1 <= len(name) <= _MAX_NAME:
        raise BadArg(f"node name must be a str of 1 to {_MAX_NAME} characters, got {name!r}")
    if not isinstance(creation, int) or isinstance(creation, bool) or not 0 <= creation < 2**63:
        raise BadArg(f"creation must be an int in [0, 2**63), got {creation!r}")


class Initiator:
    """Internal: the connecting side (A) of one handshake, without I/O.

    Calls in order: `hello()` → send it; on the peer's reply `on_challenge(msg)` → send the
    Ack it returns; on the next reply `on_ack(msg)` → done. Each `on_*` raises
    `HandshakeError`; send `err.refused()` if not None, then close.
    Afterwards: `peer_name`, `peer_creation`, `session` (ours, given to the peer) and
    `peer_session` (the peer's, for us to present to it).
    """

    def __init__(self, cookie: str, name: str, creation: int, expect: str | None = None) -> None:
        """Args: our cookie, name and creation; `expect`: the peer name we dialled, if known.

        Raises:
            BadArg: a malformed cookie, name or creation.
        """
        _check_self(cookie, name, creation)
        self.cookie = cookie
        self.name = name
        self.creation = creation
        self.expect = expect
        self.challenge = new_challenge()
        self.session = new_session()
        self.peer_name: str | None = None
        self.peer_creation: int | None = None
        self.peer_session: bytes | None = None
        self.done = False
        self._step = 0

    def hello(self) -> Hello:
        """Return step 1, the Hello to send."""
        if self._step != 0:
            raise _fail("unexpected_message", "hello() called twice")
        self._step = 1
        return Hello(self.name, self.creation, self.challenge)

    def on_challenge(self, msg: HandshakeMessage) -> Ack:
        """Check the peer's Challenge (step 2) and return our Ack (step 3) to send.

        Raises:
            HandshakeError: the peer refused, answered wrongly, used our name or not the
                expected one, or sent something else.
        """
        if isinstance(msg, Refused):
            raise _peer_refused(msg)
        if self._step != 1 or not isinstance(msg, Challenge):
            raise _fail("unexpected_message", f"expected Challenge, got {type(msg).__name__}")
        self._step = 2
        if msg.name == self.name:
            raise _fail("bad_name", f"the peer claims our own name {msg.name!r}")
        if self.expect is not None and msg.name != self.expect:
            raise _fail("bad_name", f"dialled {self.expect!r} but the peer is {msg.name!r}")
        if not check(self.cookie, self.challenge, msg.name, msg.answer):
            raise _fail("bad_cookie", f"{msg.name!r} gave a wrong answer: a different cookie")
        self.peer_name = msg.name
        self.peer_creation = msg.creation
        return Ack(digest(self.cookie, msg.challenge, self.name), self.session)

    def on_ack(self, msg: HandshakeMessage) -> None:
        """Check the peer's final Ack (step 4); afterwards `done` is True.

        Raises:
            HandshakeError: the peer refused (e.g. our cookie is wrong), or a bad Ack.
        """
        if isinstance(msg, Refused):
            raise _peer_refused(msg)
        if self._step != 2 or not isinstance(msg, Ack):
            raise _fail("unexpected_message", f"expected Ack, got {type(msg).__name__}")
        self._step = 3
        assert self.peer_name is not None
        if not check(self.cookie, self.session, self.peer_name, msg.answer):
            raise _fail("bad_cookie", f"{self.peer_name!r} gave a wrong final answer")
        self.peer_session = msg.session
        self.done = True


class Acceptor:
    """Internal: the accepting side (B) of one handshake, without I/O.

    Calls in order: on the first message `on_hello(msg)` → send the Challenge it returns; on
    the next `on_ack(msg)` → send the Ack it returns, done. Each `on_*` raises
    `HandshakeError`; send `err.refused()` if not None, then close. Afterwards: `peer_name`,
    `peer_creation`, `session` (ours, given to the peer), `peer_session` (the peer's).
    """

    def __init__(self, cookie: str, name: str, creation: int) -> None:
        """Args: our cookie, name and creation.

        Raises:
            BadArg: a malformed cookie, name or creation.
        """
        _check_self(cookie, name, creation)
        self.cookie = cookie
        self.name = name
        self.creation = creation
        self.challenge = new_challenge()
        self.session = new_session()
        self.peer_name: str | None = None
        self.peer_creation: int | None = None
        self.peer_session: bytes | None = None
        self.done = False
        self._step = 0

    def on_hello(self, msg: HandshakeMessage) -> Challenge:
        """Take the peer's Hello (step 1) and return our Challenge (step 2) to send.

        Raises:
            HandshakeError: not a Hello, an unsupported version, or the peer uses our name.
        """
        if isinstance(msg, Refused):
            raise _peer_refused(msg)
        if self._step != 0 or not isinstance(msg, Hello):
            raise _fail("unexpected_message", f"expected Hello, got {type(msg).__name__}")
        self._step = 1
        if msg.version != PROTOCOL_VERSION:
            raise _fail("bad_version", f"handshake version {msg.version} is not supported")
        if msg.name == self.name:
            raise _fail("bad_name", f"the peer claims our own name {msg.name!r}")
        self.peer_name = msg.name
        self.peer_creation = msg.creation
        answer = digest(self.cookie, msg.challenge, self.name)
        return Challenge(self.name, self.creation, answer, self.challenge)

    def on_ack(self, msg: HandshakeMessage) -> Ack:
        """Check the peer's Ack (step 3) and return our final Ack (step 4); then `done`.

        Raises:
            HandshakeError: the peer refused, answered wrongly (a different cookie), or sent
                something else.
        """
        if isinstance(msg, Refused):
            raise _peer_refused(msg)
        if self._step != 1 or not isinstance(msg, Ack):
            raise _fail("unexpected_message", f"expected Ack, got {type(msg).__name__}")
        self._step = 2
        assert self.peer_name is not None
        if not check(self.cookie, self.challenge, self.peer_name, msg.answer):
            raise _fail("bad_cookie", f"{self.peer_name!r} gave a wrong answer: a different cookie")
        self.peer_session = msg.session
        self.done = True
        return Ack(digest(self.cookie, msg.session, self.name), self.session)
