"""genbits: generative models as objective × model × update rule, with the deep learning bits as small parts.

from genbits import load_config, load_run
from genbits.train import train
train(load_config("flow-ring", ["train.steps=500"]), "runs/ring")
run = load_run("runs/ring")          # config, model (EMA weights), metrics
"""

from genbits.config import Config, load_config
from genbits.runs import Run, load_run

__version__ = "0.1.0"

__all__ = ["Config", "Run", "load_config", "load_run"]
