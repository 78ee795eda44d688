"""One module per case study: ``run(run_dir, seeds, steps) -> results`` writes a figure and a table."""

from genbits.experiments import divergences, mode_seeking

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences}

__all__ = ["EXPERIMENTS"]
