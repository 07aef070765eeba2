"""The ``peer`` command (``peer up``, ``peer status``, ``peer down``) for the installed package.

The command line itself is Rust (``peer_node::cli``); this entry point hands it the arguments, the
interpreter that should run workers (this one) and ``sys.path``, so a daemon started from a venv
runs its workers in that venv.
"""

from __future__ import annotations

import sys

from . import _native


def main() -> None:
    """Entry point of the ``peer`` console script."""
    sys.exit(_native.cli_main(["peer", *sys.argv[1:]], sys.executable, [p for p in sys.path if p]))


if __name__ == "__main__":
    main()
