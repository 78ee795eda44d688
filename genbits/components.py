"""Importing this module fills every registry (datasets, models, objectives, update rules)."""

import genbits.data
import genbits.models
import genbits.objectives
import genbits.optim  # noqa: F401
