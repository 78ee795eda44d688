"""Orchestration: a grid × seeds as independent resumable runs (``sweep``), their stability report (``report``) and
the process pool that sweeps and experiments share (``parallel``)."""
