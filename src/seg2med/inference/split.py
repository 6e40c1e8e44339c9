"""Generate every subject of one split of a prepared dataset, the way ``seg2med generate`` does.

The one place that walks a held-out split (``plan_split(...).generate(models)``): the stored
labels of each subject are put back on its original grid (``restore_subject``), and each model
generates a volume from them with ``generate_volume``. Used by the model-card evaluation (``seg2med.evaluation.heldout``) and by the
benchmark's test-set generation (``seg2med.evaluation.benchmark``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seg2med.data.prepare import RestoredSubject, load_manifest, restore_subject
from seg2med.errors import InputError
from seg2med.inference.generate import GenerationResult, LoadedModel, generate_volume
from seg2med.labels import LabelScheme, canonical_scheme, get_scheme


@dataclass(frozen=True)
class SplitCase:
    """One subject of the split: its manifest record, its restored volumes and each model's result."""

    record: Mapping[str, Any]
    subject: RestoredSubject
    results: dict[str, GenerationResult]


@dataclass(frozen=True)
class SplitPlan:
    """One split of a prepared dataset: the manifest (read once), its label scheme and the split's records."""

    dataset_dir: Path
    manifest: dict[str, Any]
    scheme: LabelScheme
    records: list[Mapping[str, Any]]

    @property
    def modality(self) -> str:
        return str(self.manifest["config"]["modality"])

    def generate(
        self,
        models: Mapping[str, LoadedModel],
        *,
        steps: int = 50,
        sampler: str | None = None,
        seed: int = 0,
        batch: int = 8,
        axis: str = "axial",
        device: torch.device | str = "cpu",
        progress: Callable[[str], None] | None = None,
    ) -> Iterator[SplitCase]:
        """For each subject of the split (manifest order): restore it, generate with every model.

        ``progress("generate SUBJECT: MODEL")`` is called before each generation.
        """
        for record in self.records:
            subject = restore_subject(self.dataset_dir, record, axis)
            results = {}
            for name, lm in models.items():
                if progress is not None:
                    progress(f"generate {subject.subject_id}: {name}")
                results[name] = generate_volume(subject.labels, self.scheme, lm, steps=steps, sampler=sampler, seed=seed,
                                                batch=batch, axis=axis, device=device)
            yield SplitCase(record, subject, results)


def plan_split(dataset_dir: str | Path, split: str) -> SplitPlan:
    """Read the manifest; refuse a split without subjects (one-line error naming the dataset)."""
    manifest = load_manifest(dataset_dir)
    records = [s for s in manifest["subjects"] if s["split"] == split]
    if not records:
        raise InputError(f"{dataset_dir}: no subject in the {split!r} split")
    return SplitPlan(Path(dataset_dir), manifest, canonical_scheme(get_scheme(manifest["config"]["scheme"])), records)
