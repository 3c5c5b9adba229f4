"""The term codec: every term round-trips exactly; bad input raises only CodecError."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyotp
from transport import CodecError, decode, encode


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int
    label: str = ""


class Tagged(msgspec.Struct):
    owner: pyotp.Pid
    ref: pyotp.Ref
    pair: tuple[int, str]


pids = st.builds(
    pyotp.Pid,
    st.sampled_from(["nonode@nohost", "a@127.0.0.1", "b@h:4370"]),
    st.integers(0, 64),
    st.integers(0, 2**40),
    st.integers(0, 2**31),
)
refs = st.builds(
    pyotp.Ref, st.sampled_from(["nonode@nohost", "a@h"]), st.integers(0, 64),
    st.integers(0, 2**31), st.integers(0, 2**62),
)
crashes = st.builds(pyotp.Crash, st.text(max_size=20), st.text(max_size=40), st.text(max_size=80))
points = st.builds(Point, st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5), st.text(max_size=5))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | pids
    | refs
    | crashes
    | points
)
hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary() | pids | refs,
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)
terms = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        | st.dictionaries(hashable, inner, max_size=5)
    ),
    max_leaves=30,
)


def _same(a, b):
    """Exact equality that also tells tuple from list and bool from int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@settings(max_examples=250, deadline=None)
@given(terms)
def test_random_terms_round_trip_exactly(term):
    assert _same(decode(encode(term)), term)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_nothing_but_codec_error(data):
    try:
        decode(data)
    except CodecError:
        pass


@settings(max_examples=200, deadline=None)
@given(terms, st.integers(0, 50), st.binary(min_size=1, max_size=3))
def test_corrupted_encodings_raise_nothing_but_codec_error(term, cut, junk):
    data = bytearray(encode(term))
    if data:
        i = cut % len(data)
        data[i : i + len(junk)] = junk
    try:
        decode(bytes(data))
    except CodecError:
        pass


def test_a_tuple_stays_a_tuple_and_a_list_a_list():
    term = ((1, [2, (3,)]), [(4,), []], ())
    back = decode(encode(term))
    assert _same(back, term)


def test_ids_crash_and_structs_round_trip():
    pid = pyotp.Pid("a@h", 1, 2, 3)
    ref = pyotp.Ref("a@h", 1, 3, 99)
    term = (pid, ref, pyotp.Crash("E", "m", "tb"), Point(1, 2, "p"), Tagged(pid, ref, (1, "x")))
    back = decode(encode(term))
    assert back == term
    assert type(back[4].pair) is tuple


def test_a_timer_ref_keeps_its_deadline_across_the_wire_and_equals_the_plain_ref():
    tref = pyotp.Ref("a@h", 1, 3, 99, 1234.5)
    back = decode(encode(tref))
    assert back.deadline == 1234.5
    assert back == tref == pyotp.Ref("a@h", 1, 3, 99)
    assert hash(back) == hash(pyotp.Ref("a@h", 1, 3, 99))
    assert decode(encode(pyotp.Ref("a@h", 1, 3, 99))).deadline is None


def test_big_ints_and_dicts_with_tuple_keys_round_trip():
    term = {(1, "a"): 2**100, "s": -(2**90), 3: [None]}
    assert _same(decode(encode(term)), term)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({1, 2}, "set"), (lambda: 1, "function"), (object(), "object"), (1j, "complex")],
)
def test_non_terms_raise_not_serializable_naming_the_type(value, type_name):
    with pytest.raises(pyotp.NotSerializable, match=type_name):
        encode(("wrapper", [value]))


def test_a_struct_defined_in_a_function_is_not_serializable():
    class Local(msgspec.Struct):
        a: int

    with pytest.raises(pyotp.NotSerializable, match="inside a function"):
        encode(Local(1))


def test_not_serializable_is_a_badarg():
    assert issubclass(pyotp.NotSerializable, pyotp.BadArg)
