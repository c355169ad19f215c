"""What a stage of the pipeline returns: export, calibrate, fuse and build each return one StageResult."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .compare import Comparison
from .manifest import Manifest


@dataclass
class StageResult:
    """The artifact a stage wrote, the manifest beside it, the comparison it was verified by, and what it did."""

    artifact: Path
    manifest: Manifest | None          # None: calibrate or fuse of a graph that came without a manifest
    comparison: Comparison | None      # None: nothing was compared (build; fuse without verification)
    report: dict = field(default_factory=dict)   # the stage's own account (calibrate: the manifest's report;
    #                                              fuse: fused_nodes, form; build: the manifest's report)
