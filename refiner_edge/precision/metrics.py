"""How far a model's logits are from a reference's: top-1 agreement, cosine, SQNR, max abs error, accuracy."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Defaults of `validate`, per precision of the candidate graph; each can be overridden on the command line.
# INT8/FP16 accuracy drops follow what users accept for a deployed classifier (1 point INT8, 0.2 points FP16).
THRESHOLDS = {
    "fp32": {"min_agreement": 99.0, "min_cosine": 0.99999, "min_sqnr_db": 60.0, "max_accuracy_drop": 0.1},
    "fp16": {"min_agreement": 99.0, "min_cosine": 0.9995, "min_sqnr_db": 30.0, "max_accuracy_drop": 0.2},
    "int8": {"min_agreement": 95.0, "min_cosine": 0.98, "min_sqnr_db": 15.0, "max_accuracy_drop": 1.0},
}


@dataclass
class LogitComparison:
    images: int
    agreement: float          # % of images whose top-1 class equals the reference's
    cosine: float             # mean per-image cosine similarity of the logit vectors
    sqnr_db: float            # 10 log10(sum ref^2 / sum (out - ref)^2) over all logits
    max_abs: float
    accuracy: float | None = None            # % correct against labels, candidate
    reference_accuracy: float | None = None  # % correct against labels, reference

    @property
    def accuracy_drop(self) -> float | None:
        return None if self.accuracy is None else self.reference_accuracy - self.accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop}

    def failures(self, thresholds: dict) -> list[str]:
        """Each threshold this comparison misses, as a readable sentence (empty when all pass)."""
        out = []
        if self.agreement < thresholds["min_agreement"]:
            out.append(f"top-1 agreement {self.agreement:.2f}% < {thresholds['min_agreement']}%")
        if self.cosine < thresholds["min_cosine"]:
            out.append(f"cosine {self.cosine:.6f} < {thresholds['min_cosine']}")
        if self.sqnr_db < thresholds["min_sqnr_db"]:
            out.append(f"SQNR {self.sqnr_db:.2f} dB < {thresholds['min_sqnr_db']} dB")
        drop = self.accuracy_drop
        if drop is not None and drop > thresholds["max_accuracy_drop"]:
            out.append(f"accuracy drop {drop:.2f} points > {thresholds['max_accuracy_drop']}")
        return out


def compare_logits(out: np.ndarray, ref: np.ndarray, labels: np.ndarray | None = None) -> LogitComparison:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape or out.ndim != 2:
        raise ValueError(f"logit shapes differ: {out.shape} vs {ref.shape}")
    err = out - ref
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    sqnr = float("inf") if noise == 0.0 else float(10.0 * np.log10(max(signal, 1e-300) / noise))
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cosine = float(np.mean(np.sum(out * ref, axis=1) / np.maximum(norms, 1e-300)))
    top_out, top_ref = out.argmax(axis=1), ref.argmax(axis=1)
    result = LogitComparison(images=len(out), agreement=100.0 * float(np.mean(top_out == top_ref)), cosine=cosine,
                             sqnr_db=sqnr, max_abs=float(np.max(np.abs(err))) if err.size else 0.0)
    if labels is not None:
        result.accuracy = 100.0 * float(np.mean(top_out == labels))
        result.reference_accuracy = 100.0 * float(np.mean(top_ref == labels))
    return result
