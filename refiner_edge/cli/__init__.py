"""The command line: `app` (Typer) and `run` (the console script). One module per command, each a thin call into
the library; common.py holds what they share."""
from .app import app, run

__all__ = ["app", "run"]
