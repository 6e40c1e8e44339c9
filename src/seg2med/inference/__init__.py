"""Generation: label map -> prior -> batched slice sampling -> volume on the input grid."""

from seg2med.inference.generate import GenerationResult, generate_volume, list_models, load_model, resolve_model

__all__ = ["GenerationResult", "generate_volume", "list_models", "load_model", "resolve_model"]
