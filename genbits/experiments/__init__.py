"""One module per case study: ``run(run_dir, seeds, steps, progress, full) -> results`` writes figures and tables
into the run directory (the CLI adds report.html); ``full`` selects the larger GPU-sized setting."""

from genbits.experiments import divergences, mode_seeking

EXPERIMENTS = {"mode-seeking": mode_seeking, "divergences": divergences}

__all__ = ["EXPERIMENTS"]
