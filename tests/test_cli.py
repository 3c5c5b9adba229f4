"""The `pyotp` command line, run in a subprocess: run (function and App targets), top, ping."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.slow

TIMEOUT = 30

TARGETS = textwrap.dedent(
    """
    import pyotp
    from pyotp import application

    async def hello():
        print("hello from", pyotp.node(), flush=True)

    async def crash():
        raise ValueError("kaput")

    async def forever():
        print("waiting", flush=True)
        await pyotp.receive(("never",))

    def port():
        print("port", application.get_env("shop", "port", "unset"), flush=True)

    async def _top(die_after):
        pyotp.process_flag("trap_exit", True)
        if die_after:
            pyotp.send_after(die_after, pyotp.self(), "die")
        while True:
            msg = await pyotp.receive()
            if msg == "die":
                raise pyotp.Exit("boom")
            if msg[0] == "EXIT":
                raise pyotp.Exit(msg[2])

    class Svc(application.Application):
        def start(self, start_type, args):
            print("svc started", start_type, flush=True)
            return pyotp.spawn_link(_top, args)

        def stop(self, state):
            print("svc stopped", flush=True)

    lib = application.App("lib")
    svc = application.App("svc", mod=Svc, applications=[lib])
    dying = application.App("dying", mod=Svc, start_args=0.1)
    not_callable = 42
    """
)


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "targets.py").write_text(TARGETS)
    return tmp_path


def pyotp_cli(workdir, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pyotp", *args],
        cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )


@pytest.fixture
def mapper_env():
    """An environment with a port mapper port of this test's own; the daemon that a node
    started there is killed afterwards."""
    from conftest import free_port

    from transport import _epmd

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "PYOTP_EPMD_PORT": str(port), "PYOTP_EPMD_IDLE": "2"}
    yield env
    try:
        daemon = _epmd.ping(epmd_port=port)
    except Exception:  # none was started, or it left on its own
        return
    os.kill(daemon, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    while psutil.pid_exists(daemon) and time.monotonic() < deadline:
        try:
            if psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)


@pytest.fixture
def mapped_node(mapper_env):
    """Start nodes named `short@127.0.0.1` that register with the test's port mapper."""
    from conftest import COOKIE, HELPERS

    started = []

    def start(short):
        name = f"{short}{os.getpid()}@127.0.0.1"
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS), name, COOKIE, "1.0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=mapper_env,
        )
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return name

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_run_a_function_exits_zero_when_it_returns(workdir):
    r = pyotp_cli(workdir, "run", "targets:hello")
    assert r.returncode == 0, r.stderr
    assert "hello from nonode@nohost" in r.stdout


def test_run_a_function_with_auto_schedulers(workdir):
    r = pyotp_cli(workdir, "run", "targets:hello", "--schedulers", "auto")
    assert r.returncode == 0, r.stderr


def test_run_a_crashing_function_exits_non_zero_and_prints_the_reason(workdir):
    r = pyotp_cli(workdir, "run", "targets:crash")
    assert r.returncode == 1
    assert "ValueError: kaput" in r.stderr


def test_run_a_bad_target_exits_with_2_and_says_why(workdir):
    for target, why in [
        ("targets", "MODULE:FUNC"),
        ("no_such_module:main", "cannot import module 'no_such_module'"),
        ("targets:nope", "has no attribute 'nope'"),
        ("targets:not_callable", "expected a function or an application.App"),
        ("..:main", "is not a module name"),  # was a raw TypeError traceback
    ]:
        r = pyotp_cli(workdir, "run", target)
        assert r.returncode == 2, (target, r.stderr)
        assert why in r.stderr, (target, r.stderr)


def test_run_rejects_bad_schedulers_and_config_with_2(workdir):
    r = pyotp_cli(workdir, "run", "targets:hello", "--schedulers", "zero")
    assert r.returncode == 2
    assert "--schedulers" in r.stderr
    r = pyotp_cli(workdir, "run", "targets:hello", "--config", "missing.toml")
    assert r.returncode == 2
    assert "missing.toml" in r.stderr


def test_run_with_a_node_name_it_cannot_use_exits_with_2_and_says_why(workdir):
    # A port ZeroMQ would wrap (99999 -> 34463); a host that is no address of this machine
    # (TEST-NET-1), which was a raw ZMQError traceback.
    for name, why in [("a@127.0.0.1:99999", "run name="), ("a@192.0.2.1", "cannot listen")]:
        r = pyotp_cli(workdir, "run", "targets:hello", "--name", name)
        assert r.returncode == 2, (name, r.stderr)
        assert why in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)


def test_run_passes_the_config_file_to_the_node(workdir):
    (workdir / "sys.toml").write_text("[shop]\nport = 9090\n")
    r = pyotp_cli(workdir, "run", "targets:port", "--config", "sys.toml")
    assert r.returncode == 0, r.stderr
    assert "port 9090" in r.stdout


def _wait_for_line(stream, needle, deadline):
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    seen = ""
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} in time; got {seen!r}"
        if sel.select(left):
            line = stream.readline()
            assert line, f"stream closed before {needle!r}; got {seen!r}"
            seen += line
    sel.close()
    return seen


def _run_until_signal(workdir, args, ready_on, ready, sig):
    """`pyotp run ARGS`; once `ready` shows on its stream `ready_on` ("stdout"/"stderr"),
    send `sig`. Return (returncode, out, err, its child processes as they were, its pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyotp", "run", *args],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = _wait_for_line(getattr(proc, ready_on), ready, time.monotonic() + TIMEOUT)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if ready_on == "stdout":
        out = seen + out
    else:
        err = seen + err
    return proc.returncode, out, err, children, proc.pid


def test_run_an_app_until_sigterm_stops_it_cleanly(workdir):
    code, out, err, children, pid = _run_until_signal(
        workdir, ["targets:svc"], "stderr", "started", signal.SIGTERM
    )
    assert code == 0, err
    assert "svc started normal" in out
    assert "svc stopped" in out
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_ctrl_c_of_a_running_function_stops_cleanly_and_exits_130(workdir):
    """Ctrl-C is an interrupt, not a crash: a clean stop, then the shell's 128 + SIGINT."""
    code, _, err, children, _ = _run_until_signal(
        workdir, ["targets:forever", "--schedulers", "2"], "stdout", "waiting", signal.SIGINT
    )
    assert code == 130, err
    assert "killed" not in err
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_run_an_app_whose_top_dies_exits_non_zero(workdir):
    r = pyotp_cli(workdir, "run", "targets:dying")
    assert r.returncode == 1
    assert "application_terminated" in r.stderr
    assert "svc stopped" in r.stdout


def test_ping_answers_pong_for_a_live_node_and_pang_otherwise(workdir, peer):
    from conftest import COOKIE, free_port

    b = peer()
    r = pyotp_cli(workdir, "ping", b.name, "--cookie", COOKIE)
    assert (r.returncode, r.stdout.strip()) == (0, "pong"), r.stderr
    r = pyotp_cli(workdir, "ping", b.name, "--cookie", "not-the-cookie")
    assert (r.returncode, r.stdout.strip()) == (1, "pang")
    r = pyotp_cli(workdir, "ping", f"ghost@127.0.0.1:{free_port()}", "--cookie", COOKIE)
    assert (r.returncode, r.stdout.strip()) == (1, "pang")
    r = pyotp_cli(workdir, "ping", "no-at-sign")
    assert r.returncode == 2 and "node name" in r.stderr


def test_ping_uses_the_cookie_from_the_environment(workdir, peer):
    from conftest import COOKIE

    b = peer()
    r = subprocess.run(
        [sys.executable, "-m", "pyotp", "ping", b.name], cwd=workdir, capture_output=True,
        text=True, timeout=TIMEOUT, check=False, env={**os.environ, "PYOTP_COOKIE": COOKIE},
    )
    assert (r.returncode, r.stdout.strip()) == (0, "pong"), r.stderr


def test_top_once_prints_the_schedulers_and_processes_of_a_node(workdir, peer):
    from conftest import COOKIE

    b = peer()
    r = pyotp_cli(workdir, "top", b.name, "--cookie", COOKIE, "--once", "--limit", "50")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"node {b.name}" in out
    assert "SCHED" in out and "RUNQ" in out and "LAG ms" in out
    assert "MSGQ" in out and "REDS" in out
    assert "echo" in out and "kv" in out  # the peer's registered processes


def test_top_without_a_node_watches_every_node_registered_with_the_port_mapper(
    workdir, mapper_env, mapped_node
):
    from conftest import COOKIE

    a = mapped_node("ta")
    r = pyotp_cli(workdir, "top", "--cookie", COOKIE, "--once", env=mapper_env)
    assert r.returncode == 0, r.stderr
    assert f"node {a}:" in r.stdout and "SCHED" in r.stdout
    b = mapped_node("tb")
    r = pyotp_cli(workdir, "top", "--cookie", COOKIE, "--once", env=mapper_env)
    assert r.returncode == 0, r.stderr
    assert f"node {a}:" in r.stdout and f"node {b}:" in r.stdout


def test_top_without_a_node_when_none_is_registered_says_so_and_exits_1(
    workdir, mapper_env
):
    from transport import _epmd

    r = pyotp_cli(workdir, "top", "--once", env=mapper_env)  # no port mapper at all
    assert r.returncode == 1 and "no node to watch" in r.stderr, r.stderr
    assert "no port mapper answers" in r.stderr
    _epmd.ensure_epmd(int(mapper_env["PYOTP_EPMD_PORT"]), idle=30)  # one, with no node
    r = pyotp_cli(workdir, "top", "--once", env=mapper_env)
    assert r.returncode == 1 and "no node is registered" in r.stderr, r.stderr


def test_top_of_an_unreachable_node_exits_1(workdir):
    from conftest import free_port

    r = pyotp_cli(workdir, "top", f"ghost@127.0.0.1:{free_port()}", "--once",
                  "--cookie", "c")
    assert r.returncode == 1 and "cannot connect" in r.stderr


def test_top_refreshes_every_interval_until_interrupted(workdir, peer):
    from conftest import COOKIE

    b = peer()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyotp", "top", b.name, "--cookie", COOKIE,
         "--interval", "0.2"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        views = 0
        deadline = time.monotonic() + TIMEOUT
        while views < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            views += line.replace("\x1b[H\x1b[2J", "").startswith("node ")
        assert views >= 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def test_the_console_script_module_imports_without_loading_typer():
    code = "import sys, pyotp.cli; print('typer' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=TIMEOUT, check=True, env={**os.environ})
    assert r.stdout.strip() == "False"


def test_the_readme_demo_runs_and_heals_its_crashed_worker(workdir):
    r = pyotp_cli(workdir, "run", "pyotp.demo:main", "--schedulers", "auto")
    assert r.returncode == 0, r.stderr
    assert "30,757" in r.stdout  # the primes below 360,000
    assert "1 worker crashed on purpose and was replaced" in r.stdout


def test_the_demo_returns_its_summary_in_process():
    import pyotp
    from pyotp import demo

    summary = pyotp.run(demo.main, 8, 3)
    assert summary["jobs"] == 8
    assert summary["primes"] == sum(
        1 for n in range(2, 8 * 15_000) if all(n % d for d in range(2, int(n**0.5) + 1))
    )
    assert summary["worker_restarts"] == 1
    assert summary["jobs_handed_out"] == 9
