"""Build the slice datasets the embedded demo models are trained on (see MODEL_CARD.md).

Subject A (CT) and subject C (MR) of the shared TotalSegmentator examples are
each cut along z into blocks with a FIXED split, so that the test block holds
slices the model never trains on:

* CT (subject A, 3 mm, 112 slices, ``example_ct`` + ``example_seg_fast_force_split``):
  z 0-49 and 72-111 train, z 50-57 val, z 58-71 test; plus ``example_ct_sm``
  (= z 82-111) with the full ``example_seg`` labels and the tissue-type masks, train.
* MR (subject C, 3 mm, 20 slices, ``example_mr_sm`` + ``example_seg_mr``, VIBE in-phase prior):
  z 0-7 and 13-19 train, z 12 val, z 8-11 test.

Usage: python scripts/build_demo_datasets.py [--data ../shared/data] [--out runs/datasets] [--overwrite]
       [--axes axial,coronal,sagittal --only ct --name ct-demo-3ax]   (the tri-planar model's dataset)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

import seg2med
from seg2med.data.prepare import PrepareConfig, SubjectInput, prepare_dataset
from seg2med.io import Volume, load_volume

SPACING, SIZE = 3.0, 128


def crop_z(vol: Volume, z0: int, z1: int) -> Volume:
    """Slices z0..z1-1 of voxel axis 2 with the affine shifted accordingly (geometry stays exact)."""
    shift = np.eye(4)
    shift[2, 3] = z0
    return Volume(vol.array[:, :, z0:z1], vol.affine @ shift, None, vol.path)


def subject_blocks(name, image_path, labels_path, scheme, sequence, modality, blocks, tissue_masks=None):
    img = load_volume(image_path)
    lv = seg2med.build_anatomy(labels_path, scheme=scheme, image=img, modality=modality, tissue_masks=tissue_masks)
    prior = seg2med.simulate_prior(lv, sequence).volume
    out = []
    for z0, z1, split in blocks:
        labels = crop_z(lv.volume, z0, z1)
        out.append(SubjectInput(
            subject_id=f"{name}_z{z0:03d}-{z1 - 1:03d}", image=crop_z(img, z0, z1), prior=crop_z(prior, z0, z1),
            body=labels.array != 0, labels=labels, split=split,
            extra={"source_image": str(image_path), "source_labels": str(labels_path), "z_range": [z0, z1]},
        ))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("runs/datasets"))
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--axes", default="axial", help="slicing axes, comma-separated (prepare --axes)")
    ap.add_argument("--only", choices=("ct", "mr"), help="build only this modality's dataset")
    ap.add_argument("--name", help="dataset folder name (default ct-demo / mr-demo)")
    args = ap.parse_args()
    axes = tuple(a.strip() for a in args.axes.split(",") if a.strip())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ts = args.data / "totalsegmentator"

    if args.only != "mr":
        build_ct(ts, args.out / (args.name or "ct-demo"), axes, args.overwrite)
    if args.only != "ct":
        build_mr(ts, args.out / (args.name or "mr-demo"), axes, args.overwrite)


def build_ct(ts: Path, out: Path, axes: tuple[str, ...], overwrite: bool) -> None:
    ct = subject_blocks("A", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz", "total", "ct", "ct",
                        [(0, 50, "train"), (50, 58, "val"), (58, 72, "test"), (72, 112, "train")])
    ct += subject_blocks("A-sm", ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz", "total", "ct", "ct",
                         [(0, 30, "train")], tissue_masks=ts / "example_seg_tissue_types")
    cfg = PrepareConfig(modality="ct", spacing=SPACING, size=SIZE, sequence=seg2med.get_sequence("ct").to_config(), scheme="total",
                        axes=axes)
    prepare_dataset(ct, out, cfg, overwrite=overwrite)


def build_mr(ts: Path, out: Path, axes: tuple[str, ...], overwrite: bool) -> None:
    mr = subject_blocks("C", ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", "total_mr", "vibe-in", "mr",
                        [(0, 8, "train"), (8, 12, "test"), (12, 13, "val"), (13, 20, "train")])
    cfg = PrepareConfig(modality="mr", spacing=SPACING, size=SIZE, sequence=seg2med.get_sequence("vibe-in").to_config(),
                        scheme="total_mr", axes=axes)
    prepare_dataset(mr, out, cfg, overwrite=overwrite)


if __name__ == "__main__":
    main()
