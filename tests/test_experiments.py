"""Case studies reproduce the talk's claims, asserted from fitted models, not by eye."""

import json

from genbits.cli import main


def test_mode_seeking_forward_covers_reverse_seeks(tmp_path):
    """Forward KL gives each mode its weight (0.7/0.3); reverse KL puts ≥ 95% of its mass on one mode, every seed."""
    assert (
        main(
            [
                "experiment",
                "mode-seeking",
                "--run-dir",
                str(tmp_path),
                "--seeds",
                "3",
                "--steps",
                "300",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    for mass in results["forward KL (max. likelihood)"]["mass_per_mode"]:
        assert abs(mass[0] - 0.7) < 0.05 and abs(mass[1] - 0.3) < 0.05, mass
    for mass in results["reverse KL"]["mass_per_mode"]:
        assert max(mass) > 0.95, mass
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"
