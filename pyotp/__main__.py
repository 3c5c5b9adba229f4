"""`python -m pyotp`: the same command line as the `pyotp` script (see `pyotp.cli`)."""

from __future__ import annotations

from pyotp.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
