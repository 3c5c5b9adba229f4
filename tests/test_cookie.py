"""The cookie: explicit, then PYOTP_COOKIE, then ~/.pyotp.cookie created 0600 on first use."""

from __future__ import annotations

import logging
import os
import stat
import threading

import pytest

import pyotp
from transport._cookie import cookie_path, resolve_cookie, validate_cookie


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Point HOME at a fresh directory and clear PYOTP_COOKIE."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PYOTP_COOKIE", raising=False)
    return tmp_path


def test_the_cookie_file_is_created_on_first_use_with_mode_0600(home):
    cookie = resolve_cookie(None)
    path = home / ".pyotp.cookie"
    assert cookie_path() == str(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(cookie) == 20
    assert cookie.isascii() and cookie.isalpha() and cookie.isupper()
    assert path.read_text() == cookie
    assert [p.name for p in home.iterdir()] == [".pyotp.cookie"]  # no temporary file left


def test_the_cookie_file_is_reused_on_later_boots(home):
    first = resolve_cookie(None)
    assert resolve_cookie(None) == first


def test_an_existing_cookie_file_is_read_stripped(home):
    (home / ".pyotp.cookie").write_text("  SECRET-cookie_42\n")
    os.chmod(home / ".pyotp.cookie", 0o600)
    assert resolve_cookie(None) == "SECRET-cookie_42"


def test_a_cookie_file_readable_by_others_is_used_with_a_warning(home, caplog):
    path = home / ".pyotp.cookie"
    path.write_text("OPENCOOKIE")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="pyotp.transport"):
        assert resolve_cookie(None) == "OPENCOOKIE"
    assert any("chmod 600" in r.getMessage() for r in caplog.records)


def test_a_private_cookie_file_gives_no_warning(home, caplog):
    with caplog.at_level(logging.WARNING, logger="pyotp.transport"):
        resolve_cookie(None)
        resolve_cookie(None)
    assert not caplog.records


def test_the_environment_variable_overrides_the_file(home, monkeypatch):
    (home / ".pyotp.cookie").write_text("FROMFILE")
    monkeypatch.setenv("PYOTP_COOKIE", "FROMENV")
    assert resolve_cookie(None) == "FROMENV"


def test_the_environment_variable_means_no_file_is_created(home, monkeypatch):
    monkeypatch.setenv("PYOTP_COOKIE", "FROMENV")
    resolve_cookie(None)
    assert not (home / ".pyotp.cookie").exists()


def test_an_explicit_cookie_overrides_environment_and_file(home, monkeypatch):
    (home / ".pyotp.cookie").write_text("FROMFILE")
    monkeypatch.setenv("PYOTP_COOKIE", "FROMENV")
    assert resolve_cookie("EXPLICIT") == "EXPLICIT"


@pytest.mark.parametrize(
    "bad",
    ["", "has space", "tab\there", "new\nline", "caf\u00e9", "nul\x00", "x" * 1025, 42, b"bytes"],
)
def test_a_bad_explicit_cookie_is_rejected_with_badarg(home, bad):
    with pytest.raises(pyotp.BadArg, match="cookie"):
        resolve_cookie(bad)


def test_a_bad_cookie_in_the_environment_is_rejected_naming_the_variable(home, monkeypatch):
    monkeypatch.setenv("PYOTP_COOKIE", "two words")
    with pytest.raises(pyotp.BadArg, match="PYOTP_COOKIE"):
        resolve_cookie(None)


def test_an_empty_cookie_file_is_rejected_naming_the_file(home):
    (home / ".pyotp.cookie").write_text("\n")
    with pytest.raises(pyotp.BadArg, match=r"\.pyotp\.cookie"):
        resolve_cookie(None)


def test_a_non_ascii_cookie_file_is_rejected(home):
    (home / ".pyotp.cookie").write_bytes(b"\xff\xfe")
    with pytest.raises(pyotp.BadArg, match="ASCII"):
        resolve_cookie(None)


def test_an_unwritable_home_gives_a_clear_error(home):
    os.chmod(home, 0o500)
    try:
        if os.access(home, os.W_OK):  # root ignores permissions
            pytest.skip("running as root: directory permissions are not enforced")
        with pytest.raises(pyotp.BadArg, match="cannot create the cookie file"):
            resolve_cookie(None)
    finally:
        os.chmod(home, 0o700)


def test_validate_cookie_accepts_every_printable_ascii_character():
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    assert validate_cookie(printable) == printable


def test_nodes_booting_at_once_agree_on_one_cookie(home):
    results: list[str] = []
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            results.append(resolve_cookie(None))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=boot) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert [p.name for p in home.iterdir()] == [".pyotp.cookie"]
