"""Networks and noise schedules (MONAI): presets, configs and builders."""

from seg2med.models.config import PRESETS, ModelConfig, SchedulerConfig, build_model, build_scheduler, count_parameters, for_inference

__all__ = ["PRESETS", "ModelConfig", "SchedulerConfig", "build_model", "build_scheduler", "count_parameters", "for_inference"]
