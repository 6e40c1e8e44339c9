"""The JSON sidecars seg2med writes beside its volumes (``name.nii.gz`` -> ``name.json``): their formats, in one place.

* ``seg2med-labels``: a canonical label volume's table (scheme, id -> class name, how it was built);
* ``seg2med-prior`` / ``seg2med-generated``: the provenance of a prior or a synthetic volume.

Every sidecar lists the ``files`` of its set and their ``sha256`` (how ``--overwrite`` tells a file
seg2med wrote from one the user put there, :mod:`seg2med.io.outputs`). A generated volume's set is
``S.nii.gz`` (sample 0), ``S_sample1.nii.gz``…, ``S_std.nii.gz`` and ``S.json`` (:func:`generated_paths`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seg2med._version import __version__
from seg2med.io.files import read_json
from seg2med.errors import InputError
from seg2med.io.nifti import check_nifti_output, is_nifti_path, nifti_stem, sidecar_path
from seg2med.io.outputs import check_output_file, digests
from seg2med.labels import LabelScheme

LABELS_KIND = "seg2med-labels"
PRIOR_KIND = "seg2med-prior"
#: The kind of a generated volume's sidecar (its entries from generation are made by :mod:`seg2med.inference`).
GENERATED_KIND = "seg2med-generated"


def label_table(scheme: LabelScheme, report: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar of a canonical label volume (its files are added by :func:`describe_set` when written)."""
    return {"kind": LABELS_KIND, "seg2med_version": __version__, **scheme.to_table(), "report": dict(report)}


def _tissue_table_name(tissues: str | Path | None) -> str:
    return str(tissues) if tissues else "default"


def prior_sidecar(
    *,
    sequence: Mapping[str, Any],
    modality: str,
    scheme: str,
    body_contour: str | None,
    tissues: str | Path | None,
    seed: int | None,
    tissue_spread: float,
    bias_field: float,
    noise: float,
    blur: float,
    sampled: Any,
    seconds: float,
) -> dict[str, Any]:
    """The sidecar of a prior: the sequence (its config), the label scheme, where the body contour came from, the
    tissue table (a file, or ``default``), the randomisation and the parameters it sampled (``sampled.to_dict()``;
    None for the deterministic prior), the time taken and the units."""
    return {
        "kind": PRIOR_KIND,
        "seg2med_version": __version__,
        "sequence": sequence,
        "modality": modality,
        "scheme": scheme,
        "body_contour": body_contour,
        "tissue_table": _tissue_table_name(tissues),
        "seed": seed,
        "randomisation": {"tissue_spread": tissue_spread, "bias_field": bias_field, "noise": noise, "blur": blur},
        "sampled_parameters": sampled.to_dict() if sampled is not None and hasattr(sampled, "to_dict") else None,
        "seconds": round(seconds, 4),
        "units": "HU" if modality == "ct" else "a.u. (relative signal)",
    }


def generated_provenance(
    *, model_name: str, scheme: str, body_contour: str | None, tissues: str | Path | None
) -> dict[str, Any]:
    """What a generated volume's sidecar adds to the entries generation made (kind :data:`GENERATED_KIND`, model,
    sampler, normalisations…): the seg2med version, the model as named, the label scheme, the body contour's source
    and the tissue table."""
    return {"seg2med_version": __version__, "model_name": model_name, "scheme": scheme, "body_contour": body_contour,
            "tissue_table": _tissue_table_name(tissues)}


#: sidecar of a multi-contrast generation written into a folder
GENERATED_FOLDER_SIDECAR = "generated.json"


def generated_paths(out: str | Path, samples: int, contrasts: Sequence[str] = ()) -> dict[str, Path]:
    """Output names: ``S.nii.gz`` (sample 0), ``S_sample1.nii.gz``…, ``S_std.nii.gz`` and ``S.json``.

    A multi-contrast model (``contrasts``): per contrast C the keys ``C`` (sample 0), ``C_sampleK`` and ``C_std``:
    ``S_C.nii.gz``… beside ``S.json`` when ``out`` is a NIfTI name ``S.nii.gz``, else ``out/C.nii.gz``… with
    ``out/generated.json`` (``out`` a folder)."""
    out = Path(out)
    if not contrasts:
        stem = nifti_stem(out)
        paths = {"sample0": out, "sidecar": sidecar_path(out)}
        for k in range(1, samples):
            paths[f"sample{k}"] = out.with_name(f"{stem}_sample{k}.nii.gz")
        if samples > 1:
            paths["std"] = out.with_name(f"{stem}_std.nii.gz")
        return paths
    if is_nifti_path(out):
        name, sidecar = (lambda tail: out.with_name(f"{nifti_stem(out)}_{tail}.nii.gz")), sidecar_path(out)
    else:
        name, sidecar = (lambda tail: out / f"{tail}.nii.gz"), out / GENERATED_FOLDER_SIDECAR
    paths = {}
    for c in contrasts:
        paths[c] = name(c)
        for k in range(1, samples):
            paths[f"{c}_sample{k}"] = name(f"{c}_sample{k}")
        if samples > 1:
            paths[f"{c}_std"] = name(f"{c}_std")
    paths["sidecar"] = sidecar
    return paths


def check_volume_outputs(out: str | Path, overwrite: bool = False, inputs: Sequence[Any] = (), samples: int = 1,
                         contrasts: Sequence[str] = ()) -> None:
    """Before any work: refuse an output that is not a NIfTI name (a multi-contrast model: or a folder), or any file
    of its set (the image, its ``.json`` sidecar and, for ``samples`` > 1, ``_sampleK`` / ``_std``; per contrast)
    that may not be written (:func:`seg2med.io.outputs.check_output_file`: a folder there, not writable, an input,
    exists without ``overwrite``, not seg2med's)."""
    if not contrasts or is_nifti_path(out):
        check_nifti_output(out, overwrite, inputs)
    elif Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"{out}: exists and is not a folder (a model of {len(contrasts)} contrasts writes one file "
                         "per contrast into --out)")
    for p in generated_paths(out, samples, contrasts).values():
        check_output_file(p, overwrite, inputs)


def describe_set(meta: Mapping[str, Any], images: Mapping[str, Path]) -> dict[str, Any]:
    """``meta`` with the ``files`` of its set and their ``sha256``; ``images`` maps each final file name to the
    (temporary) file just written, whose digest :func:`seg2med.io.outputs.written_by_seg2med` checks later."""
    return {**meta, "files": list(images), "sha256": digests(images)}


def read_label_table(path: str | Path) -> LabelScheme | None:
    """The scheme a seg2med label volume's sidecar holds, or None when ``path`` has no such sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    data = read_json(side)
    if isinstance(data, Mapping) and "labels" in data and data.get("kind") == LABELS_KIND:
        return LabelScheme.from_table(data)
    return None
