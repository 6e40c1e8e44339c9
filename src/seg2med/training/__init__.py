"""Training of the conditional diffusion model (prior -> image) on prepared 2D slices, the baselines and the segmenter."""

from seg2med.training.baselines import (
    BaselineTrainConfig,
    resolve_baseline_configs,
    train_baseline,
    train_prior,
)
from seg2med.training.config import (
    TrainConfig,
    check_blocks,
    model_config_from_run,
    resolve_configs,
)
from seg2med.training.methods import read_config_file, resolve_method, train_method
from seg2med.training.segmenter import SegmenterConfig, train_segmenter
from seg2med.training.state import load_checkpoint
from seg2med.training.diffusion import train

__all__ = ["BaselineTrainConfig", "SegmenterConfig", "TrainConfig", "check_blocks", "load_checkpoint", "model_config_from_run", "read_config_file",
           "resolve_baseline_configs", "resolve_configs", "resolve_method", "train", "train_baseline", "train_method",
           "train_prior", "train_segmenter"]
