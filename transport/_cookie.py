"""The magic cookie: the shared secret that lets two nodes talk, as Erlang's `.erlang.cookie`.

Where it sits: node boot → **cookie** (this module) → handshake (`_handshake`), which proves
both sides hold it without sending it.

Resolution order, first hit wins: the cookie given explicitly (`pyotp.run(cookie=)`, `--cookie`),
the `PYOTP_COOKIE` environment variable, the contents of `~/.pyotp.cookie`. The file is created
on first use with 20 random uppercase letters and mode 0600, like Erlang's; an existing file that
the group or others may read is used anyway, with a warning (Erlang refuses, which only makes
users chmod it in a hurry). `HOME` is honoured so tests can point it at a temporary directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import string

from ._errors import BadArg

__all__ = ["COOKIE_ENV", "COOKIE_FILE", "cookie_path", "resolve_cookie", "validate_cookie"]

log = logging.getLogger("pyotp.transport")

COOKIE_ENV = "PYOTP_COOKIE"
COOKIE_FILE = ".pyotp.cookie"

_MAX_COOKIE = 1024  # bytes; a cookie rides inside the HMAC key only, but keep files sane
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))  # printable ASCII, no space


def validate_cookie(cookie: object, source: str = "cookie") -> str:
    """Return `cookie` if it is a usable cookie.

    Args:
        cookie: the candidate.
        source: where it came from, named in the error message.

    Returns:
        The cookie, unchanged.

    Raises:
        BadArg: it is not a non-empty `str` of at most 1024 printable ASCII characters
            without whitespace.
    """
    if not isinstance(cookie, str):
        raise BadArg(f"{source}: a cookie must be a str, got {type(cookie).__name__}")
    if not cookie:
        raise BadArg(f"{source}: a cookie must not be empty")
    if len(cookie) > _MAX_COOKIE:
        raise BadArg(f"{source}: a cookie must be at most {_MAX_COOKIE} characters")
    bad = next((c for c in cookie if c not in _PRINTABLE), None)
    if bad is not None:
        raise BadArg(
            f"{source}: a cookie must be printable ASCII without whitespace, found {bad!r}"
        )
    return cookie


def cookie_path() -> str:
    """Return the path of the cookie file: `$HOME/.pyotp.cookie`."""
    return os.path.join(os.path.expanduser("~"), COOKIE_FILE)


def resolve_cookie(explicit: str | None = None) -> str:
    """Return the cookie this node uses.

    Behind the scenes:
    1. `explicit`, when not None, is validated and returned.
    2. Else `PYOTP_COOKIE`, when set, is validated and returned.
    3. Else `~/.pyotp.cookie` is read (created first, mode 0600, with 20 random uppercase
       letters, if it does not exist) and its stripped contents validated and returned.

    Args:
        explicit: a cookie given by the caller, or None.

    Returns:
        The cookie.

    Raises:
        BadArg: the chosen cookie is malformed (see `validate_cookie`), or the cookie file
            cannot be read or created.
    """
    if explicit is not None:
        return validate_cookie(explicit, "cookie")
    env = os.environ.get(COOKIE_ENV)
    if env is not None:
        return validate_cookie(env, f"${COOKIE_ENV}")
    return _file_cookie(cookie_path())


def _file_cookie(path: str) -> str:
    try:
        _create(path)
    except FileExistsError:
        pass  # the usual case after the first boot, or another node won the race
    except OSError as e:
        raise BadArg(f"cannot create the cookie file {path}: {e.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise BadArg(f"cannot read the cookie file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read(_MAX_COOKIE + 64)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "cookie file %s is accessible by group or others (mode %o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadArg(f"cookie file {path}: a cookie must be printable ASCII") from None
    return validate_cookie(text, f"cookie file {path}")


def _create(path: str) -> None:
    # The cookie is written to a private temporary file (O_EXCL, mode 0600 from the start, so
    # the secret is never readable by others, not even for an instant) and then hard-linked
    # into place: link fails with FileExistsError if the file exists, so of two nodes booting
    # at once one wins and the other reads the winner's complete cookie, never an empty file.
    cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, cookie.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            # A filesystem without hard links: create the file itself exclusively instead.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, cookie.encode("ascii"))
            finally:
                os.close(fd)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
