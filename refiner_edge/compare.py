"""How far a model's outputs are from a reference's, and whether that is close enough: one result type for every
check (export vs PyTorch, fused vs plain graph, calibrated graph vs FP32, engine vs PyTorch).

A Comparison holds the metrics and the thresholds it is judged by; it is truthy when every threshold holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Defaults of `validate` (and of fusion checks on calibrated graphs), per precision of the candidate; each can be
# overridden on the command line. INT8/FP16 accuracy drops follow what users accept for a deployed classifier
# (1 point INT8, 0.2 points FP16).
THRESHOLDS = {
    "fp32": {"min_agreement": 99.0, "min_cosine": 0.99999, "min_sqnr_db": 60.0, "max_accuracy_drop": 0.1},
    "fp16": {"min_agreement": 99.0, "min_cosine": 0.9995, "min_sqnr_db": 30.0, "max_accuracy_drop": 0.2},
    "int8": {"min_agreement": 95.0, "min_cosine": 0.98, "min_sqnr_db": 15.0, "max_accuracy_drop": 1.0},
}
# Each threshold: its bounds as a user may set it, and how a failure reads.
THRESHOLD_RANGES = {"min_agreement": (0.0, 100.0), "min_cosine": (-1.0, 1.0), "min_sqnr_db": (None, None),
                    "max_accuracy_drop": (None, None), "max_rel_error": (0.0, None)}


def row_cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair [N, D]. Where both rows are all zeros they are identical, and count as 1
    (a zero-initialised head against itself must pass); where only one is, as 0. NaN stays NaN (it fails)."""
    no, nr = np.linalg.norm(out, axis=1), np.linalg.norm(ref, axis=1)
    cos = np.sum(out * ref, axis=1) / np.maximum(no * nr, 1e-300)
    return np.where((no == 0) & (nr == 0), 1.0, cos)


@dataclass
class Comparison:
    images: int               # rows compared
    max_abs: float            # largest |out - ref|
    max_rel: float            # max_abs / largest |ref|
    agreement: float          # % of rows whose argmax equals the reference's
    cosine: float             # mean per-row cosine similarity (row_cosines: two zero rows count as 1)
    sqnr_db: float            # 10 log10(sum ref^2 / sum (out - ref)^2)
    accuracy: float | None = None            # % correct against labels, candidate
    reference_accuracy: float | None = None  # % correct against labels, reference
    thresholds: dict = field(default_factory=dict)

    @classmethod
    def of(cls, out: np.ndarray, ref: np.ndarray, thresholds: dict | None = None,
           labels: np.ndarray | None = None) -> "Comparison":
        out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
        if out.shape != ref.shape:
            raise ValueError(f"output shapes differ: {out.shape} vs {ref.shape}")
        out2, ref2 = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
        err = out2 - ref2
        noise, signal = float(np.sum(err * err)), float(np.sum(ref2 * ref2))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # non-finite outputs report as such
            sqnr = float("inf") if noise == 0.0 else float(10.0 * np.log10(max(signal, 1e-300) / noise))
            cosine = float(np.mean(row_cosines(out2, ref2))) if len(out2) else 1.0
        max_abs = float(np.max(np.abs(err))) if err.size else 0.0
        scale = float(np.max(np.abs(ref2))) if ref2.size else 0.0
        top_out, top_ref = out2.argmax(axis=1), ref2.argmax(axis=1)
        result = cls(images=len(out2), max_abs=max_abs, max_rel=max_abs / max(scale, 1e-12),
                     agreement=100.0 * float(np.mean(top_out == top_ref)) if len(out2) else 100.0,
                     cosine=cosine, sqnr_db=sqnr, thresholds=dict(thresholds or {}))
        if labels is not None:
            result.accuracy = 100.0 * float(np.mean(top_out == labels))
            result.reference_accuracy = 100.0 * float(np.mean(top_ref == labels))
        return result

    @property
    def accuracy_drop(self) -> float | None:
        return None if self.accuracy is None else self.reference_accuracy - self.accuracy

    def failures(self) -> list[str]:
        """Each threshold this comparison misses, as a readable phrase (empty when all hold)."""
        t, out = self.thresholds, []
        if "max_rel_error" in t and not (np.isfinite(self.max_rel) and self.max_rel <= t["max_rel_error"]):
            out.append(f"max relative error {self.max_rel:.3e} > {t['max_rel_error']:.0e}")
        if "min_agreement" in t and self.agreement < t["min_agreement"]:
            out.append(f"top-1 agreement {self.agreement:.2f}% < {t['min_agreement']}%")
        if "min_cosine" in t and not self.cosine >= t["min_cosine"]:
            out.append(f"cosine {self.cosine:.6f} < {t['min_cosine']}")
        if "min_sqnr_db" in t and not self.sqnr_db >= t["min_sqnr_db"]:
            out.append(f"SQNR {self.sqnr_db:.2f} dB < {t['min_sqnr_db']} dB")
        drop = self.accuracy_drop
        if "max_accuracy_drop" in t and drop is not None and drop > t["max_accuracy_drop"]:
            out.append(f"accuracy drop {drop:.2f} points > {t['max_accuracy_drop']}")
        return out

    def __bool__(self) -> bool:
        return not self.failures()

    def __str__(self) -> str:
        parts = [f"max abs error {self.max_abs:.3e}", f"max relative error {self.max_rel:.3e}"]
        if any(k in self.thresholds for k in ("min_agreement", "min_cosine", "min_sqnr_db")):
            parts += [f"top-1 agreement {self.agreement:.2f}%", f"cosine {self.cosine:.6f}",
                      f"SQNR {self.sqnr_db:.1f} dB"]
        verdict = "PASS" if self else "FAIL: " + "; ".join(self.failures())
        return f"{', '.join(parts)} over {self.images} inputs: {verdict}"

    def metrics(self) -> dict:
        """The figures, as manifests and JSON reports record them."""
        return {"images": self.images, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "agreement": self.agreement, "cosine": self.cosine, "sqnr_db": self.sqnr_db,
                "accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "accuracy_drop": self.accuracy_drop}

    def to_dict(self) -> dict:
        return {**self.metrics(), "thresholds": self.thresholds, "failures": self.failures(), "passed": bool(self)}


def check_thresholds(thresholds: dict) -> dict:
    """Refuse thresholds outside their meaningful range (a 101% agreement can never pass), one line each."""
    from .errors import InputError

    for name, value in thresholds.items():
        lo, hi = THRESHOLD_RANGES.get(name, (None, None))
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi) or value != value:
            option = "--" + name.replace("_db", "").replace("_", "-")
            raise InputError(f"{option} {value} is outside [{lo if lo is not None else '-inf'}, "
                             f"{hi if hi is not None else 'inf'}]")
    return thresholds
