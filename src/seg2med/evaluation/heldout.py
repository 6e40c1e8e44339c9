"""Evaluate a trained model on the held-out subjects of a prepared dataset.

For every subject of ``split`` the stored labels are put back on the
subject's original grid, a volume is generated from them exactly as
``seg2med generate`` does, and the result is compared inside the body with
the real image and with the physics prior alone (the no-learning floor).
Intensities are compared in the dataset's normalised [0, 1] units (so CT and
MR read alike) and, for CT, MAE is also given in HU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seg2med.data.prepare import MANIFEST
from seg2med.data.spec import DataSpec
from seg2med.inference.generate import LoadedModel
from seg2med.inference.split import plan_split
from seg2med.metrics.image import mae, psnr, ssim


def _to01(img: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    lo, hi = float(params["low"]), float(params["high"])
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def evaluate_split(
    model: LoadedModel,
    dataset_dir: str | Path,
    split: str = "test",
    *,
    steps: int = 50,
    sampler: str | None = None,
    seed: int = 0,
    batch: int = 8,
    axis: str = "axial",
) -> dict[str, Any]:
    """Per-subject and pooled SSIM / PSNR / MAE of the model and of the prior alone."""
    plan = plan_split(dataset_dir, split)
    spec, modality = DataSpec.from_dict(plan.manifest["config"], Path(dataset_dir) / MANIFEST, "config"), plan.modality
    rows, used_sampler = [], sampler
    for case in plan.generate({"model": model}, steps=steps, sampler=sampler, seed=seed, batch=batch, axis=axis):
        rs, res, subj = case.subject, case.results["model"], case.record
        used_sampler = res.metadata.get("sampler")  # the one generate_volume used (its default resolved)
        labels, body, real = rs.labels.array, rs.body, rs.image.array
        image_params = subj["normalization"]["image"]
        real01 = _to01(real, image_params)
        gen01 = _to01(res.samples[0].array, image_params)
        prior01 = np.asarray(spec.normalize_prior(res.prior.array, body)[0], dtype=np.float64)
        row: dict[str, Any] = {"subject": subj["id"], "slices": int(labels.shape[2]), "voxels": int(body.sum())}
        for name, pred in (("model", gen01), ("prior", prior01)):
            row[f"{name}_ssim"] = ssim(pred, real01, data_range=1.0, mask=body)
            row[f"{name}_psnr"] = psnr(pred, real01, data_range=1.0, mask=body)
            row[f"{name}_mae01"] = mae(pred, real01, body)
            if modality == "ct":
                lo, hi = float(image_params["low"]), float(image_params["high"])
                row[f"{name}_mae_hu"] = mae(pred * (hi - lo) + lo, real01 * (hi - lo) + lo, body)
        rows.append(row)
    keys = [k for k in rows[0] if k.startswith(("model_", "prior_"))]
    weights = np.array([r["voxels"] for r in rows], float)
    pooled = {k: float(np.average([r[k] for r in rows], weights=weights)) for k in keys}
    return {"split": split, "steps": steps, "sampler": used_sampler, "seed": seed, "subjects": rows, "pooled": pooled}
