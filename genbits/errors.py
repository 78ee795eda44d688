"""The errors genbits raises for things a user can fix; the CLI prints them without a traceback."""


class GenbitsError(Exception):
    """Base class: a message meant for the user, not a bug report."""


class ConfigError(GenbitsError):
    """An invalid configuration value; the message names the dotted field, the value and what is allowed."""


class DatasetNotFound(GenbitsError):
    """A dataset's files are missing; the message says how to install them or which option sets the path."""


class CheckpointError(GenbitsError):
    """A checkpoint that is truncated, foreign or belongs to another configuration."""


class NonFiniteLoss(GenbitsError):
    """A loss became NaN/inf; raised before the offending update is applied."""


class TrainingDiverged(GenbitsError):
    """Training stopped on a non-finite loss (after any allowed rollbacks): a result for sweeps, not a crash."""
