"""The run API: a trained run directory loaded (``load_run``), evaluated (``evaluate``), reported (``report``) and
plotted (``plots``). Only the loader is imported here, so ``from genbits.runs import load_run`` stays light."""

from genbits.runs.load import Run, load_run

__all__ = ["Run", "load_run"]
