"""Reading label inputs: what :func:`seg2med.anatomy.build_label_volume` merges, from files, and the scheme they are in.

* a seg2med label volume (a ``.json`` label table beside it) is canonical already: it is read as it is
  (:func:`read_seg2med_labels`);
* TotalSegmentator output, a multilabel file or a per-class mask folder (:func:`read_organs`), is in the
  scheme given, else the built-in scheme its class names belong to, else the default one
  (:func:`organ_scheme`; a file without its own label table is checked against the anatomy);
* the tissue types, the image for the body contour and a body mask (:func:`read_tissues`,
  :func:`read_contour_image`, :func:`read_body`).

A value that is not a path (a :class:`Volume`, a ``{name: mask Volume}`` mapping) is taken as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seg2med.anatomy.labelvolume import LabelVolume, check_known_ids
from seg2med.anatomy.plausibility import check_numbering
from seg2med.errors import ConfigError
from seg2med.io import Volume, embedded_label_table, load_volume, read_json, read_yaml
from seg2med.io.nifti import sidecar_path
from seg2med.io.segmentations import load_body_mask, load_segmentation
from seg2med.io.sidecars import read_label_table
from seg2med.labels import (
    LabelScheme,
    canonical_scheme,
    get_scheme,
    guess_scheme_by_names,
    list_schemes,
    scheme_from_mapping,
)

Organs = Volume | Mapping[str, Volume]


def resolve_scheme(scheme: str | LabelScheme | None, default: str = "total") -> LabelScheme:
    """A built-in scheme name, a scheme YAML path, or a LabelScheme."""
    if isinstance(scheme, LabelScheme):
        return scheme
    if isinstance(scheme, str) and not scheme.strip():
        raise ConfigError("--scheme: empty; give a scheme name (seg2med labels lists them) or a scheme YAML file")
    name = scheme or default
    if name in list_schemes():
        return get_scheme(name)
    p = Path(name)
    if p.suffix in (".yaml", ".yml", ".json"):
        data = read_json(p) if p.suffix == ".json" else read_yaml(p)
        return scheme_from_mapping(data, str(p))
    return get_scheme(name)  # raises ConfigError listing known schemes


def read_seg2med_labels(
    labels: Any,
    *,
    scheme: str | LabelScheme | None = None,
    strict: bool = False,
    tissue_masks: Any = None,
    image: Any = None,
    body: Any = None,
) -> LabelVolume | None:
    """The label volume seg2med wrote at ``labels`` (a file with its label table beside it), as it is; None when
    ``labels`` is no such file.

    Its tissues and body are in it already: ``tissue_masks``, ``image`` or ``body`` given too, or a ``scheme``
    other than its own, is a :class:`ConfigError`; ids its table lacks are refused with ``strict``, else warned
    about (:func:`seg2med.anatomy.check_known_ids`).
    """
    if not isinstance(labels, (str, Path)):
        return None
    p = Path(labels)
    table = read_label_table(p) if p.is_file() else None
    if table is None:
        return None
    given = [n for n, v in (("--tissue-masks", tissue_masks), ("--image", image), ("--body", body)) if v is not None]
    if given:
        raise ConfigError(f"{p}: a seg2med label volume already holds its tissues and body; "
                          f"{', '.join(given)} would be ignored (give the TotalSegmentator output instead)")
    if scheme is not None and canonical_scheme(resolve_scheme(scheme)).name != table.name:
        raise ConfigError(f"{p}: a seg2med label volume in scheme {table.name!r} (its {sidecar_path(p).name}); "
                          f"--scheme {scheme} contradicts it (leave --scheme out)")
    vol = load_volume(p, kind="labels")
    check_known_ids(vol, table, strict)
    return LabelVolume(vol, table, {"source": "seg2med label volume", "path": str(p)})


def read_organs(labels: str | Path | Organs) -> Organs:
    """Organ labels: a multilabel file -> integer label :class:`Volume`, a per-class folder -> ``{name: mask}``."""
    return load_segmentation(labels) if isinstance(labels, (str, Path)) else labels


def organ_scheme(organs: Organs, scheme: str | LabelScheme | None = None,
                 default: str = "total") -> tuple[LabelScheme, str | None]:
    """The scheme of ``organs``, and the name of the built-in scheme their class names chose (None when they
    chose none other than ``default``).

    ``scheme`` when given (:func:`resolve_scheme`). Otherwise the class names of the file's own label table
    (TotalSegmentator ``--ml``) or of the masks choose the built-in scheme they belong to (``default`` on
    ties); a label file without a table is read in ``default``, which its anatomy must fit
    (:func:`seg2med.anatomy.check_numbering` refuses ids of another scheme).
    """
    base = resolve_scheme(scheme, default=default)
    if scheme is not None:
        return base, None
    table = embedded_label_table(organs.header) if isinstance(organs, Volume) else None
    names = table.values() if table is not None else organs.keys() if isinstance(organs, Mapping) else None
    if names is not None:
        guess = guess_scheme_by_names(names, prefer=base.name)
        if guess != base.name:
            return get_scheme(guess), guess
    elif isinstance(organs, Volume):  # no table: the ids could be of any scheme, ask the anatomy
        check_numbering(organs, base)
    return base, None


def source_name(organs: Organs, labels: Any) -> str:
    """How messages name the organ labels: the file, the folder the masks came from, else ``<masks>``."""
    return organs.name if isinstance(organs, Volume) else str(labels) if isinstance(labels, (str, Path)) else "<masks>"


def read_tissues(tissue_masks: str | Path | Organs | None) -> Organs | None:
    """Tissue types: a TotalSegmentator ``tissue_types`` folder or multilabel file, read as :func:`read_organs`."""
    return load_segmentation(tissue_masks) if isinstance(tissue_masks, (str, Path)) else tissue_masks


def read_contour_image(image: str | Path | Volume | None, modality: str | None) -> Volume | None:
    """The image whose threshold is the body contour; an image and its ``modality`` go together
    (:class:`ConfigError` for one without the other)."""
    img = load_volume(image, kind="image") if isinstance(image, (str, Path)) else image
    if img is not None and modality is None:
        raise ConfigError("an image for the body contour needs its modality ('ct' or 'mr')")
    if img is None and modality is not None:
        raise ConfigError(f"--modality {modality} describes --image, which is not given")
    return img


def read_body(body: str | Path | Volume | np.ndarray | None) -> Volume | np.ndarray | None:
    """A body mask: a mask or label file, or TotalSegmentator's ``--task body`` folder
    (:func:`seg2med.io.segmentations.load_body_mask`)."""
    return load_body_mask(body) if isinstance(body, (str, Path)) else body
