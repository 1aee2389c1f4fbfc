"""The console-script entry point: ``mvgraph --version`` answers before typer is imported.

Everything else goes to :func:`mvgraph.cli.main` (typer, then the command's own imports).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run ``mvgraph``: the version fast path, else the typer application."""
    if sys.argv[1:] == ["--version"]:
        from mvgraph.version import __version__

        sys.stdout.write(f"mvgraph {__version__}\n")
        sys.exit(0)
    from mvgraph.cli import main as cli_main

    cli_main()
