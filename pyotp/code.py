"""Hot code upgrade of behaviour processes (Erlang's `code` + the release handler's
suspend / code_change / resume).

Where it sits: user code → **code.upgrade** → on every scheduler of the node (a helper
process spawned there) and on the given nodes (`rpc.call`): reload the module, then
`("$system", from_, ...)` requests to each behaviour process whose callback class lives in it
→ the behaviour loop runs `code_change`.

Behind the scenes, on each scheduler (an OS process with its own `sys.modules`):
1. Find the behaviour processes of the module in the scheduler's process table (the
   behaviours record their callback module in `Process.info`).
2. Suspend each one: from then on it handles only system messages, the others queue in order.
3. Reload the module (`importlib.reload`; its stale bytecode cache is dropped first, so a
   source rewritten within the same second still counts).
4. Send each one `("code_change", module, old_vsn, extra)`: the behaviour looks its class up
   again in the reloaded module, runs the new class's `code_change(old_vsn, state, extra)` and
   switches to the new class and state only if that succeeded. `old_vsn` is the `__vsn__`
   of the code the process runs: the replaced module's, or for a process a failed
   code_change left on older code, that older version's (kept in `Process.info["vsn"]`).
5. Resume each one: the queued messages are handled, in order, by the new code.
No message is lost or reordered: nothing is taken out of a mailbox but system messages.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from schedulers import current_process, get, receive_matching, self_pid
from transport import BadArg, CallExit, CallTimeout, Crash, OtpError, Pid

from . import _api, _gen, rpc

__all__ = ["upgrade"]


async def upgrade(
    module_name: str,
    extra: Any = None,
    nodes: list[str] | None = None,
    *,
    timeout: float | None = 30.0,
) -> dict[str, list[Any]]:
    """Reload `module_name` and run `code_change` in every behaviour process of it.

    On every scheduler of this node and on each node of `nodes`. The calling process itself
    is never upgraded (it cannot suspend itself). A process whose `code_change` raised (or
    returned something else than the behaviour's "ok" shape) keeps its old code and state.

    Args:
        module_name: the dotted module name, as in `import`.
        extra: passed to each `code_change` (a term when it crosses schedulers or nodes).
        nodes: other nodes to upgrade as well (their module must be importable there).
        timeout: seconds each system request (suspend, code_change, resume) may take.

    Returns:
        `{"upgraded": [pids], "failed": [(pid, reason)]}`. A scheduler or node where the
        module could not be reloaded appears in "failed" as `(("scheduler", index), reason)`
        or `(node_name, reason)`.

    Raises:
        OtpError: reason ("load_failed", crash) when the module cannot be reloaded on the
            caller's scheduler (then nothing is changed anywhere); ("not_loaded", name) when
            it cannot be imported at all.
        BadArg: a bad argument.
    """
    me = current_process("code.upgrade()")
    if type(module_name) is not str or not module_name:
        raise BadArg(f"code.upgrade expects a dotted module name str, got {module_name!r}")
    if nodes is not None and (type(nodes) is not list or any(type(n) is not str for n in nodes)):
        raise BadArg(f"code.upgrade expects nodes as a list of node names, got {nodes!r}")
    _gen.check_timeout(timeout, "code.upgrade")
    sched = get()
    result: dict[str, list[Any]] = {"upgraded": [], "failed": []}
    # Here first: a module that does not load is found before any other scheduler is touched.
    upgraded, failed = await _upgrade_here(module_name, extra, timeout, me.pid)
    result["upgraded"].extend(upgraded)
    result["failed"].extend(failed)
    others = []
    if sched.router is not None:
        others = [k for k in sorted(sched.router.creations) if k != sched.index]
    tag = _api.make_ref()
    pending: dict[Any, int] = {}
    for k in others:
        _pid, mref = _api.spawn(
            _upgrade_scheduler, me.pid, tag, module_name, extra, timeout,
            scheduler=k, monitor=True,
        )
        pending[mref] = k

    def is_answer(m: Any) -> bool:
        return type(m) is tuple and (
            (len(m) == 3 and m[0] == tag)
            or (len(m) == 5 and m[0] == "DOWN" and m[1] in pending)
        )

    while pending:
        msg = await receive_matching(me, is_answer, None, (tag,))
        if msg[0] == "DOWN":
            k = pending.pop(msg[1])
            result["failed"].append((("scheduler", k), msg[4]))
            continue
        k, answer = msg[1], msg[2]
        mref = next(ref for ref, idx in pending.items() if idx == k)
        del pending[mref]
        _api.demonitor(mref, flush=True)
        if answer[0] == "ok":
            result["upgraded"].extend(answer[1])
            result["failed"].extend(answer[2])
        else:
            result["failed"].append((("scheduler", k), answer[1]))
    for n in nodes or ():
        if n == sched.node:
            continue
        try:
            r = await rpc.call(n, _upgrade_node, module_name, extra, timeout)
        except OtpError as e:
            result["failed"].append((n, e.reason))
            continue
        result["upgraded"].extend(r["upgraded"])
        result["failed"].extend(r["failed"])
    return result


# ------------------------------------------------------------------ internal


async def _upgrade_node(module_name: str, extra: Any, timeout: float | None) -> dict:
    """Internal (run by rpc on another node): upgrade every scheduler of that node."""
    return await upgrade(module_name, extra, None, timeout=timeout)


async def _upgrade_scheduler(
    caller: Pid, tag: Any, module_name: str, extra: Any, timeout: float | None
) -> None:
    """Internal (spawned on another scheduler of the node): upgrade there, answer the caller."""
    try:
        upgraded, failed = await _upgrade_here(module_name, extra, timeout, caller)
        answer: tuple = ("ok", upgraded, failed)
    except OtpError as e:
        answer = ("error", e.reason)
    _api.send(caller, (tag, get().index, answer))


def _runs_module(proc: Any, module_name: str) -> bool:
    info = proc.info
    if not info:
        return False
    if info.get("module") == module_name:
        return True
    modules = info.get("modules")  # gen_event: the modules of its handlers, now
    if modules is None:
        return False
    try:
        return module_name in (modules() if callable(modules) else modules)
    except Exception:  # a manager mid-change: not ours to upgrade this time
        return False


def _reload(module_name: str) -> Any:
    """Reload the module (import it when it is not loaded here); return the old `__vsn__`."""
    mod = sys.modules.get(module_name)
    try:
        if mod is None:
            importlib.import_module(module_name)
            return None
        old_vsn = getattr(mod, "__vsn__", None)
        # Bytecode caches are validated by source mtime (whole seconds) and size: a source
        # rewritten within the same second with the same size would load the old code.
        cached = getattr(mod, "__cached__", None)
        source = getattr(mod, "__file__", None)
        if cached and source and os.path.exists(source):
            try:
                os.remove(cached)
            except OSError:
                pass
        importlib.invalidate_caches()
        _reload_fresh_vsn(mod)
    except ModuleNotFoundError as e:
        raise OtpError(("not_loaded", module_name), f"code.upgrade: {e}") from None
    except Exception as e:  # a broken source: nothing is changed
        crash = Crash.from_exception(e)
        raise OtpError(
            ("load_failed", crash), f"code.upgrade: {module_name} failed to load"
        ) from None
    return old_vsn


def _reload_fresh_vsn(mod: Any) -> None:
    """Reload `mod` without its old `__vsn__`: a reload runs the new source in the old
    namespace, so a version that no longer sets it would inherit the old one. A failed
    reload keeps the old one (even if the new source set it before failing)."""
    missing = object()
    vsn = mod.__dict__.pop("__vsn__", missing)
    try:
        importlib.reload(mod)
    except BaseException:
        if vsn is missing:
            mod.__dict__.pop("__vsn__", None)
        else:
            mod.__dict__["__vsn__"] = vsn
        raise


async def _upgrade_here(
    module_name: str, extra: Any, timeout: float | None, skip: Pid
) -> tuple[list[Pid], list[tuple[Any, Any]]]:
    """Upgrade the behaviour processes of `module_name` on this scheduler (steps 1-5)."""
    me = current_process()
    sched = get()
    targets = [
        p
        for p in list(sched.procs.values())
        if p is not me and p.pid != skip and p.reason is None and _runs_module(p, module_name)
    ]
    failed: list[tuple[Any, Any]] = []
    suspended: list[Any] = []
    for proc in targets:
        try:
            await _gen.system_call(proc.pid, "suspend", timeout, "code.upgrade")
            suspended.append(proc)
        except (CallExit, CallTimeout) as e:
            failed.append((proc.pid, e.reason))
            if isinstance(e, CallTimeout):
                _resume_later(proc.pid)
    try:
        old_vsn = _reload(module_name)
    except OtpError:
        for proc in suspended:
            _resume_later(proc.pid)
        raise
    upgraded: list[Pid] = []
    for proc in suspended:
        pid = proc.pid
        vsn = _running_vsn(proc, old_vsn)
        try:
            r = await _gen.system_call(
                pid, ("code_change", module_name, vsn, extra), timeout, "code.upgrade"
            )
        except (CallExit, CallTimeout) as e:
            failed.append((pid, e.reason))
            _resume_later(pid)
            continue
        if r == "ok":
            upgraded.append(pid)
        else:
            failed.append((pid, r[1] if type(r) is tuple and len(r) == 2 else r))
        _record_vsn(proc, r == "ok", vsn)
        try:
            await _gen.system_call(pid, "resume", timeout, "code.upgrade")
        except (CallExit, CallTimeout):
            _resume_later(pid)
    return upgraded, failed


def _running_vsn(proc: Any, module_vsn: Any) -> Any:
    """The `__vsn__` of the code `proc` runs: the module's, unless a failed code_change left
    it on an older version."""
    info = proc.info
    return info["vsn"] if info and "vsn" in info else module_vsn


def _record_vsn(proc: Any, changed: bool, vsn: Any) -> None:
    """After a code_change: `proc` runs the loaded module (`changed`), or stays on `vsn`."""
    if changed:
        proc.info.pop("vsn", None)
    else:
        proc.info["vsn"] = vsn


def _resume_later(pid: Pid) -> None:
    # A request that timed out may still be handled later: a resume queued behind it undoes
    # a late suspend. Its reply is dropped (the tag is no monitor of ours).
    try:
        _api.send(pid, ("$system", (self_pid(), _api.make_ref()), "resume"))
    except BadArg:
        pass
