"""The command line: `app` (Typer) and `run` (the console script). One module per command, each a thin call into
the library; common.py holds what they share."""
import sys

try:
    from .app import app, run
except KeyboardInterrupt:   # Ctrl-C while the command line is still being imported: the same one line as later
    sys.stderr.write("error: interrupted\n")
    sys.exit(130)

__all__ = ["app", "run"]
