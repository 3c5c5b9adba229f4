"""The node handshake: mutual HMAC challenge/response on the cookie, its messages and limits."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyotp
from transport._codec import CodecError
from transport._handshake import (
    CHALLENGE_SIZE,
    MAX_MESSAGE,
    Acceptor,
    Ack,
    Challenge,
    HandshakeError,
    Hello,
    Initiator,
    Refused,
    check,
    decode_message,
    digest,
    encode_message,
    new_challenge,
    new_session,
)

COOKIE = "SECRETCOOKIE"


def hello_with(**fields):
    """Encode a Hello-tagged map with exactly `fields`, right or wrong."""
    return msgspec.msgpack.encode({"type": "hello", **fields})


def wire(msg):
    """Send `msg` over a pretend wire: encode, then decode as the peer would."""
    return decode_message(encode_message(msg))


def handshake(a: Initiator, b: Acceptor):
    """Run the four steps between `a` and `b` over the wire; return both objects."""
    challenge = b.on_hello(wire(a.hello()))
    ack = a.on_challenge(wire(challenge))
    final = b.on_ack(wire(ack))
    a.on_ack(wire(final))
    return a, b


# --- digests ---------------------------------------------------------------------------------


def test_challenges_and_sessions_are_32_fresh_random_bytes():
    cs = {new_challenge() for _ in range(100)} | {new_session() for _ in range(100)}
    assert len(cs) == 200
    assert all(type(c) is bytes and len(c) == CHALLENGE_SIZE for c in cs)


def test_a_digest_checks_with_the_same_cookie_challenge_and_name():
    c = new_challenge()
    answer = digest(COOKIE, c, "b@host")
    assert len(answer) == 32
    assert check(COOKIE, c, "b@host", answer)


def test_a_digest_fails_with_another_cookie():
    c = new_challenge()
    assert not check("OTHERCOOKIE", c, "b@host", digest(COOKIE, c, "b@host"))


def test_a_digest_fails_for_another_challenge():
    assert not check(COOKIE, new_challenge(), "b@host", digest(COOKIE, new_challenge(), "b@host"))


def test_an_answer_cannot_be_replayed_for_another_name():
    c = new_challenge()
    answer = digest(COOKIE, c, "b@host")
    assert not check(COOKIE, c, "c@host", answer)
    assert not check(COOKIE, c, "b@hos", answer)


def test_name_and_challenge_bytes_cannot_be_shifted_into_each_other():
    c = b"t" + new_challenge()[1:]
    assert digest(COOKIE, c, "ab") != digest(COOKIE, c[1:], "abt")


def test_check_is_false_not_an_error_for_a_wrong_typed_answer():
    c = new_challenge()
    assert not check(COOKIE, c, "b", None)
    assert not check(COOKIE, c, "b", "text")
    assert not check(COOKIE, c, "b", b"short")


def test_digest_rejects_wrong_argument_types_with_badarg():
    with pytest.raises(pyotp.BadArg, match="cookie"):
        digest(b"bytes", new_challenge(), "b")
    with pytest.raises(pyotp.BadArg, match="challenge"):
        digest(COOKIE, "text", "b")
    with pytest.raises(pyotp.BadArg, match="name"):
        digest(COOKIE, new_challenge(), 7)


# --- the mutual handshake -------------------------------------------------------------------


def test_a_good_mutual_handshake_completes_on_both_sides():
    a, b = handshake(Initiator(COOKIE, "a@h", 11, expect="b@h"), Acceptor(COOKIE, "b@h", 22))
    assert a.done and b.done
    assert (a.peer_name, a.peer_creation) == ("b@h", 22)
    assert (b.peer_name, b.peer_creation) == ("a@h", 11)
    # each side ends up holding the token the other chose for it
    assert a.peer_session == b.session
    assert b.peer_session == a.session
    assert a.session != b.session


def test_a_wrong_cookie_on_the_acceptor_is_caught_by_the_initiator_and_refused():
    a, b = Initiator(COOKIE, "a@h", 1), Acceptor("WRONG", "b@h", 2)
    challenge = b.on_hello(wire(a.hello()))
    with pytest.raises(HandshakeError) as err:
        a.on_challenge(wire(challenge))
    assert err.value.reason == "bad_cookie"
    assert not a.done
    # the acceptor learns why from the Refused the initiator sends
    with pytest.raises(HandshakeError) as other:
        b.on_ack(wire(err.value.refused()))
    assert other.value.reason == ("refused", "bad_cookie")
    assert other.value.refused() is None  # nothing to send back to a refusal
    assert not b.done


def test_a_wrong_cookie_on_the_initiator_is_caught_by_the_acceptor_and_refused():
    # An initiator that cannot check the acceptor (a forged Challenge would pass only with
    # the cookie) still cannot get in: its own answer is wrong.
    a, b = Initiator("WRONG", "a@h", 1), Acceptor(COOKIE, "b@h", 2)
    challenge = b.on_hello(wire(a.hello()))
    forged = Challenge(
        challenge.name,
        challenge.creation,
        digest("WRONG", a.challenge, "b@h"),
        challenge.challenge,
    )
    ack = a.on_challenge(wire(forged))
    with pytest.raises(HandshakeError) as err:
        b.on_ack(wire(ack))
    assert err.value.reason == "bad_cookie"
    assert not b.done
    with pytest.raises(HandshakeError) as other:
        a.on_ack(wire(err.value.refused()))
    assert other.value.reason == ("refused", "bad_cookie")
    assert not a.done


def test_an_acceptor_answer_replayed_under_another_name_is_rejected():
    a, b = Initiator(COOKIE, "a@h", 1), Acceptor(COOKIE, "b@h", 2)
    challenge = b.on_hello(wire(a.hello()))
    impostor = Challenge("c@h", 3, challenge.answer, challenge.challenge)
    with pytest.raises(HandshakeError) as err:
        a.on_challenge(wire(impostor))
    assert err.value.reason == "bad_cookie"


def test_an_initiator_answer_replayed_to_another_acceptor_is_rejected():
    # An eavesdropper saw a's answer to b's challenge; c chooses its own challenge, so the
    # captured answer is worthless there (and it was bound to a's name anyway).
    a, b = Initiator(COOKIE, "a@h", 1), Acceptor(COOKIE, "b@h", 2)
    ack = a.on_challenge(wire(b.on_hello(wire(a.hello()))))
    c = Acceptor(COOKIE, "c@h", 3)
    c.on_hello(wire(Hello("a@h", 1, new_challenge())))
    with pytest.raises(HandshakeError) as err:
        c.on_ack(wire(ack))
    assert err.value.reason == "bad_cookie"


def test_an_answer_made_for_one_name_does_not_pass_for_a_claimed_other_name():
    # m knows a digest made for a@h but claims to be m@h: b checks against m@h and refuses.
    b = Acceptor(COOKIE, "b@h", 2)
    challenge = b.on_hello(wire(Hello("m@h", 9, new_challenge())))
    stolen = digest(COOKIE, challenge.challenge, "a@h")
    with pytest.raises(HandshakeError) as err:
        b.on_ack(wire(Ack(stolen, new_session())))
    assert err.value.reason == "bad_cookie"


def test_a_peer_claiming_our_own_name_is_refused_on_both_sides():
    b = Acceptor(COOKIE, "b@h", 2)
    with pytest.raises(HandshakeError) as err:
        b.on_hello(wire(Hello("b@h", 1, new_challenge())))
    assert err.value.reason == "bad_name"
    a = Initiator(COOKIE, "a@h", 1)
    a.hello()
    mirror = Challenge("a@h", 1, digest(COOKIE, a.challenge, "a@h"), new_challenge())
    with pytest.raises(HandshakeError) as err:
        a.on_challenge(wire(mirror))
    assert err.value.reason == "bad_name"


def test_an_initiator_refuses_a_peer_that_is_not_the_node_it_dialled():
    a, b = Initiator(COOKIE, "a@h", 1, expect="b@h"), Acceptor(COOKIE, "x@h", 2)
    with pytest.raises(HandshakeError) as err:
        a.on_challenge(wire(b.on_hello(wire(a.hello()))))
    assert err.value.reason == "bad_name"


def test_a_forged_final_ack_is_rejected_by_the_initiator():
    a, b = Initiator(COOKIE, "a@h", 1), Acceptor(COOKIE, "b@h", 2)
    a.on_challenge(wire(b.on_hello(wire(a.hello()))))
    with pytest.raises(HandshakeError) as err:
        a.on_ack(wire(Ack(new_challenge(), new_session())))
    assert err.value.reason == "bad_cookie"
    assert not a.done


def test_messages_out_of_turn_are_refused_as_unexpected():
    b = Acceptor(COOKIE, "b@h", 2)
    with pytest.raises(HandshakeError) as err:
        b.on_ack(Ack(new_challenge(), new_session()))
    assert err.value.reason == "unexpected_message"
    assert err.value.refused() == Refused("unexpected_message")
    a = Initiator(COOKIE, "a@h", 1)
    a.hello()
    with pytest.raises(HandshakeError) as err:
        a.on_challenge(Hello("b@h", 2, new_challenge()))
    assert err.value.reason == "unexpected_message"
    with pytest.raises(HandshakeError):
        a.hello()


def test_an_acceptor_refuses_an_unsupported_version():
    b = Acceptor(COOKIE, "b@h", 2)
    with pytest.raises(HandshakeError) as err:
        b.on_hello(wire(Hello("a@h", 1, new_challenge(), version=99)))
    assert err.value.reason == "bad_version"


def test_a_side_is_not_constructed_with_a_bad_cookie_name_or_creation():
    with pytest.raises(pyotp.BadArg, match="cookie"):
        Initiator("two words", "a@h", 1)
    with pytest.raises(pyotp.BadArg, match="name"):
        Acceptor(COOKIE, "", 1)
    with pytest.raises(pyotp.BadArg, match="creation"):
        Acceptor(COOKIE, "b@h", -1)


# --- messages on the wire -------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        Hello("a@127.0.0.1", 0, new_challenge()),
        Hello("n" * 255, 2**63 - 1, new_challenge()),
        Challenge("b@h:4000", 5, new_challenge(), new_challenge()),
        Ack(new_challenge(), new_session()),
        Refused("bad_cookie"),
    ],
)
def test_every_message_round_trips_and_fits_the_limit(msg):
    data = encode_message(msg)
    assert len(data) <= MAX_MESSAGE
    assert decode_message(data) == msg
    assert decode_message(bytearray(data)) == msg
    assert decode_message(memoryview(data)) == msg


def test_messages_are_frozen():
    with pytest.raises(AttributeError):
        Refused("x").reason = "y"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # truncated
        msgspec.msgpack.encode({"type": "nope", "reason": "x"}),
        msgspec.msgpack.encode({"reason": "untagged"}),
        msgspec.msgpack.encode([1, 2, 3]),
        hello_with(name="a", creation=1),  # missing field
        hello_with(name="", creation=1, challenge=b"x" * 32),
        hello_with(name="a", creation=-1, challenge=b"x" * 32),
        hello_with(name="a", creation=1, challenge=b"short"),
        msgspec.msgpack.encode({"type": "ack", "answer": "text" * 8, "session": b"x" * 32}),
        msgspec.msgpack.encode({"type": "refused", "reason": "x" * 1000}),
        hello_with(name="a" * 256, creation=1, challenge=b"x" * 32),
    ],
)
def test_malformed_messages_raise_codec_error(data):
    with pytest.raises(CodecError, match="malformed handshake message"):
        decode_message(data)


def test_an_oversized_message_is_refused_before_decoding():
    data = msgspec.msgpack.encode({"type": "refused", "reason": "x" * MAX_MESSAGE})
    with pytest.raises(CodecError, match="exceeds the 4096 byte limit"):
        decode_message(data)


def test_decode_refuses_a_non_bytes_argument():
    with pytest.raises(CodecError, match="must be bytes"):
        decode_message("text")


def test_encode_refuses_anything_but_a_handshake_message():
    with pytest.raises(pyotp.BadArg, match="handshake message"):
        encode_message(("hello", "a"))


def test_codec_error_is_an_otp_error_with_reason_bad_term():
    with pytest.raises(pyotp.OtpError) as err:
        decode_message(b"\xc1")
    assert err.value.reason == "bad_term"


@given(st.binary(max_size=MAX_MESSAGE + 64))
def test_any_bytes_decode_to_a_message_or_raise_codec_error(data):
    try:
        msg = decode_message(data)
    except CodecError:
        return
    assert isinstance(msg, (Hello, Challenge, Ack, Refused))
