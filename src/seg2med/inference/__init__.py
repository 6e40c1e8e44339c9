"""Generation: label map -> prior -> batched slice sampling -> volume on the input grid; the auxiliary segmenter."""

from seg2med.inference.generate import (
           GenerationResult,
           generate_volume,
           list_models,
           load_model,
           resolve_model,
)
from seg2med.inference.segment import (
           Segmenter,
           load_segmenter,
           segment_volume,
           slice_features,
)

__all__ = ["GenerationResult", "Segmenter", "generate_volume", "list_models", "load_model", "load_segmenter", "resolve_model",
           "segment_volume", "slice_features"]
