"""Where this package's files are: the one lookup of the package folder and of the source checkout around it.

In a source checkout (`pip install -e .`, or PYTHONPATH at the repository root) SOURCE_ROOT is the repository root,
holding plugins/, cpp/ and build/; in an installed wheel it is site-packages, where those folders are absent and
whoever looks for them says so.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent   # the refiner_edge folder
SOURCE_ROOT = PACKAGE_DIR.parent                # the folder that holds it: the repository root in a checkout
