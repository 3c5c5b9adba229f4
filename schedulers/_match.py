"""The pattern matcher of selective `receive` (also public as `pyotp.match`).

Pattern language: `ANY` matches anything; a type matches its instances; a tuple (list)
matches a tuple (list) of the same length element-wise; a dict matches a dict holding its keys
with matching values; a callable that is not a type is a predicate (one that raises does not
match, as an Erlang guard that fails); anything else matches by `==`.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["ANY", "compile_patterns", "match"]


class _AnyType:
    """The wildcard pattern; use the `pyotp.ANY` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "pyotp.ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY = _AnyType()


def match(pattern: Any, term: Any) -> bool:
    """Return True when `term` matches `pattern` (see the module docstring)."""
    if pattern is ANY:
        return True
    tp = type(pattern)
    if tp is tuple or tp is list:
        if type(term) is not tp or len(term) != len(pattern):
            return False
        for p, t in zip(pattern, term, strict=True):
            if not match(p, t):
                return False
        return True
    if tp is dict:
        if type(term) is not dict:
            return False
        for k, p in pattern.items():
            if k not in term or not match(p, term[k]):
                return False
        return True
    if isinstance(pattern, type):
        return isinstance(term, pattern)
    if callable(pattern):
        try:
            return bool(pattern(term))
        except Exception:  # as an Erlang guard that raises: no match, not a crash
            return False
    return pattern == term


def _is_literal(p: Any) -> bool:
    tp = type(p)
    return tp is str or tp is int or tp is bytes or tp is bool or p is None


def _compile_one(p: Any) -> Callable[[Any], bool]:
    if p is ANY:
        return _match_all
    if type(p) is tuple and p and _is_literal(p[0]):
        # The common message shape ("tag", ...): reject on the tag before the full match.
        head, n = p[0], len(p)
        rest = p[1:]
        if all(x is ANY for x in rest):
            return lambda t: type(t) is tuple and len(t) == n and t[0] == head
        return lambda t: (
            type(t) is tuple and len(t) == n and t[0] == head and match(rest, t[1:])
        )
    if _is_literal(p):
        return lambda t: p == t
    return lambda t: match(p, t)


def _match_all(term: Any) -> bool:
    return True


def compile_patterns(patterns: tuple) -> Callable[[Any], bool] | None:
    """Return one predicate for `patterns`, or None when any message matches."""
    if not patterns:
        return None
    if len(patterns) == 1:
        m = _compile_one(patterns[0])
        return None if m is _match_all else m
    ms = [_compile_one(p) for p in patterns]
    if _match_all in ms:
        return None
    return lambda t: any(m(t) for m in ms)
