"""Units of the numbers genbits logs and evaluates, for labels in reports and plots.

The keys of metrics.jsonl and eval.json stay bare (``test_nll``, ``kid_mean``) so that scripts read them unchanged;
a reader needs the unit beside the number, and KID, whose values are around 1e-3, is easier to compare scaled.
"""

from __future__ import annotations

UNITS = {
    **dict.fromkeys(("nll", "test_nll", "test_nll_stderr", "true_nll", "gap", "gap_stderr", "jsd"), "nats"),
    **dict.fromkeys(("test_nelbo", "test_nelbo_stderr", "elbo_gap", "elbo_gap_stderr"), "nats"),
    **dict.fromkeys(("bits_per_dim", "elbo_bits_per_dim"), "bits/dim"),
    **dict.fromkeys(("time", "wall_time"), "s"),
}
SCALES = {"kid_mean": 1000, "kid_std": 1000}


def label(name: str) -> str:
    """``name`` with its unit, or with the factor its value is shown multiplied by: ``kid_mean (×1000)``."""
    if name in SCALES:
        return f"{name} (×{SCALES[name]})"
    return f"{name} ({UNITS[name]})" if name in UNITS else name


def scaled(name: str, value: float) -> float:
    """The value as :func:`label` announces it."""
    return value * SCALES.get(name, 1)
