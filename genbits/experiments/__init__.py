"""One module per case study: ``run(run_dir, seeds, steps) -> results`` writes a figure and a table."""

from genbits.experiments import mode_seeking

EXPERIMENTS = {"mode-seeking": mode_seeking}

__all__ = ["EXPERIMENTS"]
