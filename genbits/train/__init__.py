"""The one training loop and what it needs: checkpoints, EMA, the batch stream, the run directory."""

from genbits.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
