"""Training of the conditional diffusion model (prior -> image) on prepared 2D slices."""

from seg2med.training.config import (
    TrainConfig,
    check_blocks,
    model_config_from_run,
    resolve_configs,
)
from seg2med.training.state import load_checkpoint
from seg2med.training.trainer import train

__all__ = ["TrainConfig", "check_blocks", "load_checkpoint", "model_config_from_run", "resolve_configs", "train"]
