"""The term codec: pyotp terms <-> msgpack bytes, with msgspec.

Where it sits: `send` to a pid on another scheduler or node → scheduler → frames → **codec** →
ZeroMQ. Local sends never come here (no copy, no encode).

msgpack has one array type, so a Python tuple and list would come back alike. The encoder walks
the term once and wraps what msgpack cannot say itself in Ext records, which the decoder's
ext hook unwraps in C-driven order without a second walk:

    code 1  tuple        elements, recursively encoded
    code 2  Pid          (node, scheduler, serial, creation)
    code 3  Ref          (node, scheduler, creation, id[, deadline of a timer ref])
    code 4  Crash        (type, message, traceback)
    code 5  Struct       (module, qualname, msgspec-encoded fields)
    code 6  big int      decimal text, for ints outside 64 bits
    code 7  dict         with keys that are not all str: a flat key, value, ... list
    code 8  code ref     "module:qualname" of an importable function or class (Erlang's
                         `fun M:F/A`): behaviour modules and spawn targets cross this way

Anything else raises `NotSerializable` naming the offending type.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import types
from typing import Any

import msgspec

from ._errors import NotSerializable, OtpError
from ._terms import Crash, Pid, Ref

__all__ = ["CodecError", "decode", "encode", "to_wire"]

_Ext = msgspec.msgpack.Ext
_raw_encoder = msgspec.msgpack.Encoder()
_raw_encode = _raw_encoder.encode
_SCALARS = frozenset({str, float, bool, bytes, type(None)})
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class CodecError(OtpError):
    """Bytes that do not decode to a pyotp term (malformed, truncated, or unknown records)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_term", message)


def to_wire(x: Any) -> Any:
    """Return `x` in the msgpack-ready form (tuples and ids as Ext records).

    Raises:
        NotSerializable: `x` holds a value that is not a term; the message names its type.
    """
    t = type(x)
    if t in _SCALARS:
        return x
    if t is int:
        if _INT_MIN <= x <= _INT_MAX:
            return x
        return _Ext(6, str(x).encode())
    if t is tuple:
        return _Ext(1, _raw_encode([to_wire(e) for e in x]))
    if t is list:
        return [to_wire(e) for e in x]
    if t is dict:
        for k in x:
            if type(k) is not str:
                return _Ext(7, _raw_encode([to_wire(i) for kv in x.items() for i in kv]))
        return {k: to_wire(v) for k, v in x.items()}
    if t is Pid:
        w = x._wire
        if w is None:
            w = x._wire = _Ext(2, _raw_encode((x.node, x.scheduler, x.serial, x.creation)))
        return w
    if t is Ref:
        if x.deadline is not None:
            return _Ext(3, _raw_encode((x.node, x.scheduler, x.creation, x.id, x.deadline)))
        return _Ext(3, _raw_encode((x.node, x.scheduler, x.creation, x.id)))
    if t is Crash:
        return _Ext(4, _raw_encode((x.type, x.message, x.traceback)))
    if isinstance(x, msgspec.Struct):
        return _Ext(5, _raw_encode((t.__module__, t.__qualname__, _encode_struct(x))))
    if t is UnresolvedCode:
        return _Ext(8, x.name.encode())
    if t is _FunctionType or t is _BuiltinType or isinstance(x, type):
        return _Ext(8, code_name(x).encode())
    raise NotSerializable(
        f"a {t.__module__}.{t.__qualname__} is not a term: only None, bool, int, float, str, "
        "bytes, tuple, list, dict, Pid, Ref, Crash and importable msgspec.Struct types can "
        "cross a scheduler or node"
    )


_FunctionType = types.FunctionType
_BuiltinType = types.BuiltinFunctionType

MAIN_PATH: str | None = None  # the node's __main__ script, for functions defined there
_main_module: Any = None


def code_name(fn: Any) -> str:
    """Return "module:qualname" for a function or class another OS process can import.

    Raises:
        NotSerializable: `fn` is a lambda, a closure, or defined inside a function.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise NotSerializable(
            f"{fn!r} cannot cross a scheduler or node: only functions and classes importable "
            "by their qualified name can (module-level def or class, not a lambda or closure)"
        )
    if module == "__mp_main__":
        module = "__main__"
    return f"{module}:{qualname}"


def resolve_code(name: str) -> Any:
    """Import "module:qualname" and return the object.

    A name in "__main__" resolves to the node's main script loaded as "__mp_main__" when
    this OS process is not that script (as multiprocessing does; guard the script's entry
    point with `if __name__ == "__main__"`).
    """
    global _main_module
    module, _, qualname = name.partition(":")
    main = sys.modules.get("__main__")
    if module == "__main__" and MAIN_PATH and getattr(main, "__file__", None) != MAIN_PATH:
        if _main_module is None:
            try:
                ns = runpy.run_path(MAIN_PATH, run_name="__mp_main__")
            except (Exception, SystemExit) as exc:
                raise ImportError(
                    f"loading the main script {MAIN_PATH} here failed ({type(exc).__name__}: "
                    f"{exc}); does it start the node at import? Guard its entry point with "
                    f"`if __name__ == \"__main__\":`"
                ) from None
            _main_module = type(sys)("__mp_main__")
            _main_module.__dict__.update(ns)
            sys.modules["__mp_main__"] = _main_module
        obj: Any = _main_module
    else:
        obj = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class UnresolvedCode:
    """A function or class named in a received term that does not import here.

    Calling it raises `LookupError` saying which name and why, so a process spawned with it
    crashes with a clear reason (Erlang's `undef`) instead of the frame being lost.
    """

    __slots__ = ("name", "error")

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise LookupError(f"{self.name} is not importable on this node: {self.error}")

    def __repr__(self) -> str:
        return f"<unresolved {self.name}>"


def _struct_enc_hook(x: Any) -> Any:
    t = type(x)
    if t is Pid or t is Ref or t is Crash:
        return to_wire(x)
    raise NotSerializable(f"a {t.__module__}.{t.__qualname__} inside a Struct is not a term")


_struct_encoder = msgspec.msgpack.Encoder(enc_hook=_struct_enc_hook)


def _encode_struct(x: msgspec.Struct) -> bytes:
    t = type(x)
    if "<locals>" in t.__qualname__:
        raise NotSerializable(
            f"the Struct {t.__module__}.{t.__qualname__} is defined inside a function: "
            "only importable Struct types can cross a scheduler or node"
        )
    return _struct_encoder.encode(x)


_struct_types: dict[tuple[str, str], type] = {}
_pid_cache: dict[bytes, Pid] = {}


def _struct_type(module: str, qualname: str) -> type:
    key = (module, qualname)
    cls = _struct_types.get(key)
    if cls is None:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, msgspec.Struct)):
            raise CodecError(f"{module}.{qualname} is not a msgspec.Struct")
        cls = _struct_types[key] = obj
    return cls


def _struct_dec_hook(tp: type, obj: Any) -> Any:
    if isinstance(obj, tp):
        return obj
    raise msgspec.ValidationError(f"expected {tp.__name__}")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == 1:
        return tuple(_raw_decode(data))
    if code == 2:
        pid = _pid_cache.get(data)  # senders repeat: most pids in a batch were seen before
        if pid is None:
            node, sched, serial, creation = _raw_decode(data)
            pid = Pid(node, sched, serial, creation)
            if len(_pid_cache) >= 4096:
                _pid_cache.clear()
            key = bytes(data)
            pid._wire = _Ext(2, key)  # sent back as it came (a reply, a demonitor)
            _pid_cache[key] = pid
        return pid
    if code == 3:
        return Ref(*_raw_decode(data))
    if code == 4:
        return Crash(*_raw_decode(data))
    if code == 5:
        module, qualname, fields = _raw_decode(data)
        cls = _struct_type(module, qualname)
        return msgspec.msgpack.decode(
            fields, type=cls, dec_hook=_struct_dec_hook, ext_hook=_ext_hook
        )
    if code == 6:
        return int(bytes(data))
    if code == 8:
        name = bytes(data).decode()
        try:
            return resolve_code(name)
        except Exception as exc:  # one unknown function must not spoil its whole batch
            return UnresolvedCode(name, f"{type(exc).__name__}: {exc}")
    if code == 7:
        flat = _raw_decode(data)
        return dict(zip(flat[::2], flat[1::2], strict=True))
    raise CodecError(f"unknown record code {code}")


_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
_raw_decode = _decoder.decode


def encode(term: Any) -> bytes:
    """Encode a term to bytes.

    Raises:
        NotSerializable: the term holds a non-term value; the message names its type.
    """
    return _raw_encode(to_wire(term))


def decode(data: bytes | memoryview) -> Any:
    """Decode bytes made by `encode` back to the same term.

    Raises:
        CodecError: the bytes are not a well-formed encoded term.
    """
    try:
        return _raw_decode(data)
    except CodecError:
        raise
    except Exception as exc:  # msgspec, ints, imports, recursion: all mean "bad bytes"
        raise CodecError(f"malformed term: {type(exc).__name__}: {exc}") from None
