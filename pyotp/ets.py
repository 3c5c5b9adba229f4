"""Term storage tables owned by a process (Erlang's `ets`).

Where it sits: user code → **ets** → tables held in this OS process's memory. A table is
never copied through a mailbox: lookups read it in place, so objects are shared, not copied
(treat them as immutable, as Erlang terms are).

Tables are per scheduler: each scheduler is its own OS process, so a table lives in the
scheduler of the process that made it and is seen by the processes of that scheduler only.
Another scheduler (or node) knows no such table: any use there raises `BadArg`. Put
processes that share a table on one scheduler (`spawn(..., scheduler=k)`), or put the table
behind a gen_server.

Objects are tuples; the key is element `keypos` (1-based, default 1). Table types:
    "set"            one object per key (insert replaces), unordered
    "ordered_set"    one object per key, traversed in key order (Erlang's term order)
    "bag"            several objects per key, no two equal ones
    "duplicate_bag"  several objects per key, duplicates kept
Keys are compared as Python compares dict keys (so `1`, `1.0` and `True` are one key).
Access: "public" (every process of the scheduler reads and writes), "protected" (default:
others read, only the owner writes), "private" (only the owner). The table is deleted when
its owner exits.

Match specs (`select`): the Python form is either
    a predicate `fn(obj) -> bool`, or a pattern (as for `match_object`): the matching objects;
    a list of clauses `(pattern, guard, result)`: for each object, the first clause whose
        pattern matches and whose guard (None, or `fn(obj) -> bool`) holds gives `result`
        ("$_" for the whole object, or `fn(obj) -> value`) — Erlang's `[{Head, Guards,
        Body}]`.
Patterns are `pyotp.match` patterns: `pyotp.ANY` (or Erlang's `'_'`, the str "_") is a
wildcard, a type matches its instances, a callable is a predicate on that element.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from schedulers import ANY, current_process, match
from transport import BadArg, Pid, Ref

from . import _api

__all__ = [
    "delete",
    "info",
    "insert",
    "lookup",
    "match_object",
    "new",
    "select",
    "tab2list",
]

_ALL = object()  # delete(tab) without a key: the whole table
_TYPES = ("set", "ordered_set", "bag", "duplicate_bag")
_ACCESS = ("public", "protected", "private")

# This OS process's tables: id (a Ref, or the name of a named table) -> table.
_tables: dict[Any, _Table] = {}
# owner pid -> ids of the tables it owns (for deletion when it exits)
_owned: dict[Pid, list[Any]] = {}


class _Table:
    """Internal: one table."""

    __slots__ = (
        "id", "name", "type", "access", "keypos", "named", "owner", "proc", "data", "order",
    )

    def __init__(
        self, tid: Any, name: str, ttype: str, access: str, keypos: int, named: bool, proc: Any
    ) -> None:
        self.id = tid
        self.name = name
        self.type = ttype
        self.access = access
        self.keypos = keypos
        self.named = named
        self.owner = proc.pid
        self.proc = proc
        # set / ordered_set: key -> object; bag / duplicate_bag: key -> [objects]
        self.data: dict[Any, Any] = {}
        self.order: list[Any] | None = None  # ordered_set keys, sorted lazily

    def size(self) -> int:
        if self.type in ("set", "ordered_set"):
            return len(self.data)
        return sum(len(v) for v in self.data.values())

    def memory(self) -> int:
        return sys.getsizeof(self.data) + sum(sys.getsizeof(o) for o in self.objects())

    def keys(self) -> list[Any]:
        if self.type != "ordered_set":
            return list(self.data)
        if self.order is None:
            self.order = sorted(self.data, key=_term_key)
        return self.order

    def objects(self) -> list[tuple]:
        data = self.data
        if self.type == "set":
            return list(data.values())
        if self.type == "ordered_set":
            return [data[k] for k in self.keys()]
        return [o for objs in data.values() for o in objs]

    def at(self, key: Any) -> list[tuple]:
        got = self.data.get(key)
        if got is None:
            return []
        return [got] if self.type in ("set", "ordered_set") else list(got)

    def put(self, obj: tuple) -> None:
        key = obj[self.keypos - 1]
        data = self.data
        t = self.type
        if t == "set":
            data[key] = obj
        elif t == "ordered_set":
            if key not in data:
                self.order = None
            data[key] = obj
        else:
            objs = data.get(key)
            if objs is None:
                data[key] = [obj]
            elif t == "duplicate_bag" or obj not in objs:
                objs.append(obj)

    def remove(self, key: Any) -> None:
        if self.data.pop(key, None) is not None and self.type == "ordered_set":
            self.order = None


# ------------------------------------------------------------------ internals


def _term_key(x: Any) -> tuple:
    """Sort key in Erlang's term order: number < atom < reference < pid < tuple < map <
    list < binary (None and bools sort as atoms)."""
    tx = type(x)
    if tx is int or tx is float:
        return (0, x)
    if x is None or tx is bool:
        return (1, str(x))
    if tx is str:
        return (1, x)
    if tx is Ref:
        return (2, repr(x))
    if tx is Pid:
        return (3, (x.node, x.scheduler, x.serial))
    if tx is tuple:
        return (4, len(x), tuple(_term_key(e) for e in x))
    if tx is dict:
        return (5, len(x), sorted((_term_key(k), _term_key(v)) for k, v in x.items()))
    if tx is list:
        return (6, [_term_key(e) for e in x])
    if tx is bytes:
        return (7, x)
    return (8, type(x).__qualname__, repr(x))


def _caller(what: str) -> Any:
    return current_process(f"ets.{what}()")


def _table(tab: Any, what: str) -> _Table:
    t = _tables.get(tab) if type(tab) in (str, Ref) else None
    if t is None:
        raise BadArg(f"ets.{what}: no table {tab!r} (on this scheduler)")
    if t.proc.reason is not None:  # the owner died and its cleanup has not run yet
        _drop_owner(t.owner)
        raise BadArg(f"ets.{what}: no table {tab!r} (its owner exited)")
    return t


def _readable(tab: Any, what: str) -> _Table:
    me = _caller(what)
    t = _table(tab, what)
    if t.access == "private" and me is not t.proc:
        raise BadArg(f"ets.{what}: table {tab!r} is private to its owner {t.owner!r}")
    return t


def _writable(tab: Any, what: str) -> _Table:
    me = _caller(what)
    t = _table(tab, what)
    if t.access != "public" and me is not t.proc:
        raise BadArg(f"ets.{what}: table {tab!r} is {t.access}; only its owner {t.owner!r} writes")
    return t


def _drop_owner(owner: Pid) -> None:
    for tid in _owned.pop(owner, ()):
        _tables.pop(tid, None)


def _unlink_table(t: _Table) -> None:
    _tables.pop(t.id, None)
    ids = _owned.get(t.owner)
    if ids is not None:
        if t.id in ids:
            ids.remove(t.id)
        if not ids:
            del _owned[t.owner]


def _check_object(t: _Table, obj: Any, what: str) -> None:
    if type(obj) is not tuple:
        raise BadArg(f"ets.{what}: objects are tuples, got {obj!r}")
    if len(obj) < t.keypos:
        raise BadArg(
            f"ets.{what}: table {t.id!r} has keypos {t.keypos}; object {obj!r} is too short"
        )
    try:
        hash(obj[t.keypos - 1])
    except TypeError:
        raise BadArg(f"ets.{what}: the key of {obj!r} is not hashable") from None


def _is_ground(p: Any) -> bool:
    """True when pattern `p` is a plain value (no wildcard, type, predicate or dict)."""
    if p is ANY or isinstance(p, type) or type(p) is dict:
        return False
    if type(p) in (tuple, list):
        return all(_is_ground(e) for e in p)
    return not callable(p)


def _wild(p: Any) -> Any:
    """Pattern `p` with each "_" (Erlang's '_') turned into `ANY`."""
    tp = type(p)
    if tp is str:
        return ANY if p == "_" else p
    if tp is tuple:
        return tuple(_wild(e) for e in p)
    if tp is list:
        return [_wild(e) for e in p]
    if tp is dict:
        return {k: _wild(v) for k, v in p.items()}
    return p


def _candidates(t: _Table, pattern: Any) -> list[tuple]:
    # A pattern whose key element is a plain value needs only that key's objects.
    if type(pattern) is tuple and len(pattern) >= t.keypos:
        key = pattern[t.keypos - 1]
        if _is_ground(key):
            try:
                return t.at(key)
            except TypeError:  # an unhashable key cannot be in the table
                return []
    return t.objects()


# ------------------------------------------------------------------ API


def new(name: str, opts: list[Any] | tuple = ()) -> Any:
    """Create a table owned by the calling process and return its id.

    Args:
        name: the table's name (a str).
        opts: any of "set" (default), "ordered_set", "bag", "duplicate_bag", "named_table",
            "public", "protected" (default), "private", ("keypos", n) (default 1).

    Returns:
        The name for a "named_table", else a new `Ref`.

    Raises:
        BadArg: a bad name or option, or a named table of that name exists already.
        NotInProcess: called outside a pyotp process.
    """
    me = _caller("new")
    if type(name) is not str or not name:
        raise BadArg(f"ets.new expects a table name str, got {name!r}")
    if type(opts) not in (list, tuple):
        raise BadArg(f"ets.new expects a list of options, got {opts!r}")
    ttype, access, keypos, named = "set", "protected", 1, False
    for o in opts:
        if o in _TYPES:
            ttype = o
        elif o in _ACCESS:
            access = o
        elif o == "named_table":
            named = True
        elif type(o) is tuple and len(o) == 2 and o[0] == "keypos":
            if type(o[1]) is not int or o[1] < 1:
                raise BadArg(f"ets.new: keypos must be an int >= 1, got {o[1]!r}")
            keypos = o[1]
        else:
            raise BadArg(f"ets.new: unknown option {o!r}")
    if named:
        old = _tables.get(name)
        if old is not None and old.proc.reason is not None:
            _drop_owner(old.owner)
            old = None
        if old is not None:
            raise BadArg(f"ets.new: a named table {name!r} exists already")
        tid: Any = name
    else:
        tid = _api.make_ref()
    t = _Table(tid, name, ttype, access, keypos, named, me)
    _tables[tid] = t
    ids = _owned.get(me.pid)
    if ids is None:
        _owned[me.pid] = [tid]
        # The owner's task ends when the process exits (also when killed): drop its tables.
        me.task.add_done_callback(lambda _task, pid=me.pid: _drop_owner(pid))
    else:
        ids.append(tid)
    return tid


def insert(tab: Any, obj_or_list: tuple | list[tuple]) -> bool:
    """Insert an object (a tuple) or a list of objects; all or none are inserted.

    In a set an object replaces the one with the same key; a bag keeps one copy of equal
    objects; a duplicate_bag keeps them all.

    Returns:
        True.

    Raises:
        BadArg: unknown table, no write access, or an object that is not a tuple of at least
            keypos elements with a hashable key.
    """
    t = _writable(tab, "insert")
    objs = obj_or_list if type(obj_or_list) is list else [obj_or_list]
    for o in objs:
        _check_object(t, o, "insert")
    for o in objs:
        t.put(o)
    return True


def lookup(tab: Any, key: Any) -> list[tuple]:
    """Return the list of objects with key `key` (empty when there is none).

    Raises:
        BadArg: unknown table or no read access.
    """
    t = _readable(tab, "lookup")
    try:
        return t.at(key)
    except TypeError:  # unhashable: no object can have it
        return []


def delete(tab: Any, key: Any = _ALL) -> bool:
    """Delete the whole table (`delete(tab)`) or the objects with key `key`.

    Returns:
        True.

    Raises:
        BadArg: unknown table or no write access.
    """
    t = _writable(tab, "delete")
    if key is _ALL:
        _unlink_table(t)
        return True
    try:
        t.remove(key)
    except TypeError:
        pass  # unhashable: nothing to delete
    return True


def match_object(tab: Any, pattern: Any) -> list[tuple]:
    """Return the objects that match `pattern` (a `pyotp.match` pattern, e.g. `(ANY, 1)` or
    `("_", 1)`).

    Raises:
        BadArg: unknown table or no read access.
    """
    t = _readable(tab, "match_object")
    pattern = _wild(pattern)
    return [o for o in _candidates(t, pattern) if match(pattern, o)]


def select(tab: Any, spec: Callable[[tuple], Any] | tuple | list) -> list[Any]:
    """Return what the match spec `spec` selects (see the module docstring for its forms).

    Raises:
        BadArg: unknown table, no read access, or a malformed spec.
    """
    t = _readable(tab, "select")
    if type(spec) is not list:
        if not (callable(spec) or type(spec) is tuple or spec is ANY):
            raise BadArg(f"ets.select expects a predicate, a pattern or a list of clauses, "
                         f"got {spec!r}")
        spec = _wild(spec)
        return [o for o in _candidates(t, spec) if match(spec, o)]
    for c in spec:
        if not (
            type(c) is tuple
            and len(c) == 3
            and (c[1] is None or callable(c[1]))
            and (c[2] == "$_" or callable(c[2]))
        ):
            raise BadArg(
                f"ets.select: a clause is (pattern, guard fn or None, '$_' or fn), got {c!r}"
            )
    spec = [(_wild(pattern), guard, result) for pattern, guard, result in spec]
    out: list[Any] = []
    objs = _candidates(t, spec[0][0]) if len(spec) == 1 else t.objects()
    for o in objs:
        for pattern, guard, result in spec:
            if match(pattern, o) and (guard is None or guard(o)):
                out.append(o if result == "$_" else result(o))
                break
    return out


def tab2list(tab: Any) -> list[tuple]:
    """Return every object of the table (in key order for an ordered_set).

    Raises:
        BadArg: unknown table or no read access.
    """
    return _readable(tab, "tab2list").objects()


def info(tab: Any) -> dict[str, Any] | None:
    """Return a dict describing the table, or None when there is no such table (as Erlang's
    `undefined`).

    Keys: id, name, size, type, owner, named_table, keypos, protection, node (the owner's),
    memory (bytes, an estimate: the table and its objects, not what they refer to).

    Raises:
        NotInProcess: called outside a pyotp process.
    """
    _caller("info")
    try:
        t = _table(tab, "info")
    except BadArg:
        return None
    return {
        "id": t.id,
        "name": t.name,
        "size": t.size(),
        "type": t.type,
        "owner": t.owner,
        "named_table": t.named,
        "keypos": t.keypos,
        "protection": t.access,
        "node": t.owner.node,
        "memory": t.memory(),
    }
