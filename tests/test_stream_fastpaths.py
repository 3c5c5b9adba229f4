"""Fast paths between schedulers: flat tuples carried as is, early flush, socket streams.

Every test boots real scheduler OS processes; functions spawned on scheduler 1 live at module
level so the worker can import them.
"""

from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import ANY

pytestmark = pytest.mark.slow

T = 10  # generous liveness deadline (seconds)


async def collect(n, parent):
    got = [await pyotp.receive() for _ in range(n)]
    pyotp.send(parent, ("got", got))


async def echo_server():
    while True:
        msg = await pyotp.receive()
        pyotp.send(msg[0], msg[1])


def run2(main):
    return pyotp.run(main, schedulers=2)


def test_flat_tuples_of_every_scalar_kind_cross_schedulers_exactly_and_in_order():
    terms = [
        ("m", 1),
        ("s", "é" * 4096, b"\x00" * 4096, 1.5, True, False, None),
        (2**64 - 1, -(2**63)),
        (2**64, -(2**63) - 1),  # beyond msgpack ints: the general codec path
        ("long", "x" * 5000),  # beyond the flat path's per-element bound
        ("nested", (1, 2), [3]),
        (),
        ("pid", None),
        ("ref", None),
    ]

    async def main():
        me = pyotp.self()
        terms[-2] = ("pid", me, "x")
        terms[-1] = ("ref", pyotp.make_ref(), me)
        pid = pyotp.spawn(collect, len(terms), me, scheduler=1)
        for t in terms:
            pyotp.send(pid, t)
        _, got = await pyotp.receive(("got", ANY), timeout=T)
        return got == terms and all(type(g) is tuple for g in got) and type(got[5][1]) is tuple

    assert run2(main)


def test_a_non_term_inside_a_tuple_is_refused_at_send():
    async def main():
        pid = pyotp.spawn(collect, 1, pyotp.self(), scheduler=1)
        with pytest.raises(pyotp.NotSerializable, match="set"):
            pyotp.send(pid, ("m", {1}))
        pyotp.send(pid, ("ok",))
        return (await pyotp.receive(("got", ANY), timeout=T))[1]

    assert run2(main) == [("ok",)]


def test_a_flat_tuple_over_a_small_max_message_size_is_refused_at_send():
    async def main():
        pid = pyotp.spawn(collect, 1, pyotp.self(), scheduler=1)
        with pytest.raises(pyotp.BadArg, match="max_message_size"):
            pyotp.send(pid, ("big", "x" * 3000) * 20)
        pyotp.send(pid, ("small", "x" * 3000))
        return (await pyotp.receive(("got", ANY), timeout=T))[1]

    got = pyotp.run(main, schedulers=2, config={"kernel": {"max_message_size": 50_000}})
    assert got == [("small", "x" * 3000)]


def test_request_and_reply_round_trips_across_schedulers_in_sequence():
    async def main():
        me = pyotp.self()
        srv = pyotp.spawn(echo_server, scheduler=1)
        got = []
        for i in range(300):
            pyotp.send(srv, (me, ("r", i)))
            got.append(await pyotp.receive(("r", ANY), timeout=T))
        return got

    assert run2(main) == [("r", i) for i in range(300)]


def test_many_senders_in_one_turn_all_reach_the_other_scheduler():
    async def send_then_wait(dest, i):
        pyotp.send(dest, ("from", i))
        await pyotp.receive(("never",), timeout=0.5)

    async def main():
        me = pyotp.self()
        sink = pyotp.spawn(collect, 200, me, scheduler=1)
        for i in range(200):
            pyotp.spawn(send_then_wait, sink, i)
        _, got = await pyotp.receive(("got", ANY), timeout=T)
        return sorted(got)

    assert run2(main) == sorted(("from", i) for i in range(200))


class Echo(pyotp.gen_server.GenServer):
    def init(self, arg):
        return ("ok", None)

    def handle_call(self, req, from_, state):
        if req == "die":
            raise RuntimeError("asked to die")
        if req[0] == "slow":
            import time

            time.sleep(req[1])  # blocks its scheduler: the caller's poll must give up
        return ("reply", req, state)


def test_sequential_calls_across_schedulers_answer_in_order_while_the_caller_polls():
    async def main():
        srv = await pyotp.gen_server.start(Echo, None, scheduler=1)
        got = [await pyotp.gen_server.call(srv, ("n", i), timeout=T) for i in range(300)]
        slow = await pyotp.gen_server.call(srv, ("slow", 0.05), timeout=T)
        with pytest.raises(pyotp.CallExit) as e:
            await pyotp.gen_server.call(srv, "die", timeout=T)
        return got, slow, e.value.reason

    got, slow, reason = run2(main)
    assert got == [("n", i) for i in range(300)] and slow == ("slow", 0.05)
    assert isinstance(reason, pyotp.Crash) and "asked to die" in reason.message


def test_a_busy_local_process_keeps_running_while_another_calls_across_schedulers():
    async def ticker(parent, n):
        for i in range(n):
            pyotp.send(parent, ("tick", i))
            await asyncio.sleep(0)

    async def main():
        me = pyotp.self()
        srv = await pyotp.gen_server.start(Echo, None, scheduler=1)
        pyotp.spawn(ticker, me, 200)
        for i in range(50):
            assert await pyotp.gen_server.call(srv, ("n", i), timeout=T) == ("n", i)
        ticks = [await pyotp.receive(("tick", ANY), timeout=T) for _ in range(200)]
        return ticks == [("tick", i) for i in range(200)]

    assert run2(main)
