"""A supervision tree that heals itself.

    top (one_for_one)
    ├── counter      a gen_server holding a number
    └── workers      a supervisor (simple_one_for_one) of echo servers

The demo kills `counter`; its supervisor restarts it (with a fresh state) and calls work
again. Then one echo worker crashes and is replaced. Run: `python examples/healing_tree.py`.
"""

from __future__ import annotations

import logging
import sys

import pyotp
from pyotp import ANY, gen_server, supervisor

__all__ = ["Counter", "Echo", "Top", "Workers", "main"]


class Counter(gen_server.GenServer):
    """call "get" → the number; cast ("add", n) → adds n."""

    def init(self, start):
        return ("ok", start)

    def handle_call(self, req, from_, n):
        return ("reply", n, n)

    def handle_cast(self, msg, n):
        return ("noreply", n + msg[1])


class Echo(gen_server.GenServer):
    """call x → ("echo", tag, x); call "crash" → crashes."""

    def init(self, tag):
        return ("ok", tag)

    def handle_call(self, req, from_, tag):
        if req == "crash":
            raise RuntimeError(f"echo {tag} was told to crash")
        return ("reply", ("echo", tag, req), tag)


class Workers(supervisor.Supervisor):
    def init(self, _arg):
        spec = {"id": "echo", "start": (gen_server.start_link, (Echo,))}
        return ("ok", ({"strategy": "simple_one_for_one", "intensity": 3, "period": 5}, [spec]))


class Top(supervisor.Supervisor):
    def init(self, _arg):
        children = [
            {
                "id": "counter",
                "start": (gen_server.start_link, (Counter, 0), {"name": "counter"}),
                "shutdown": 1.0,
            },
            {
                "id": "workers",
                "start": (supervisor.start_link, (Workers, None), {"name": "workers"}),
                "type": "supervisor",
            },
        ]
        return ("ok", ({"strategy": "one_for_one", "intensity": 3, "period": 5}, children))


async def _kill(pid: pyotp.Pid) -> object:
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    return (await pyotp.receive(("DOWN", ref, "process", ANY, ANY), timeout=5))[4]


async def main() -> str:
    await supervisor.start_link(Top, None, name="top")
    for cid, pid, kind, _mods in await supervisor.which_children("top"):
        print(f"started {kind} {cid!r} as {pid}")

    gen_server.cast("counter", ("add", 41))
    print("counter =", await gen_server.call("counter", "get"))

    old = pyotp.whereis("counter")
    print(f"killing counter {old}: it died with {await _kill(old)!r}")
    # The supervisor handled the EXIT before it answers this call, so the child is back.
    children = {c[0]: c[1] for c in await supervisor.which_children("top")}
    print(f"the supervisor restarted it as {children['counter']}")
    gen_server.cast("counter", ("add", 1))
    print("counter after restart =", await gen_server.call("counter", "get"), "(fresh state)")

    w1 = await supervisor.start_child("workers", ["w1"])
    w2 = await supervisor.start_child("workers", ["w2"])
    print("worker says", await gen_server.call(w1, "hi"))
    try:
        await gen_server.call(w1, "crash")
    except pyotp.CallExit as e:
        print(f"worker {w1} crashed ({e.reason.type}); restarting it")
    live = [c[1] for c in await supervisor.which_children("workers")]
    new = next(p for p in live if p != w2)
    print(f"workers now {live}; the new one says", await gen_server.call(new, "again"))
    print("counts:", await supervisor.count_children("top"))
    return "healed"


class _FirstLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "  log: " + super().format(record).splitlines()[0][:110]


if __name__ == "__main__":
    # Show the first line of each crash and supervisor report, in line with the prints.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_FirstLine("[%(name)s] %(message)s"))
    logging.basicConfig(level=logging.ERROR, handlers=[handler])
    print(pyotp.run(main))
