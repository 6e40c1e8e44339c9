"""Build the slice datasets the embedded demo models are trained on (see MODEL_CARD.md).

Subject A (CT) and subject C (MR) of the shared TotalSegmentator examples are
each cut along z into blocks with a FIXED split, so that the test block holds
slices the model never trains on:

* CT (subject A, 3 mm, 112 slices, ``example_ct`` + ``example_seg_fast_force_split``):
  z 0-49 and 72-111 train, z 50-57 val, z 58-71 test; plus ``example_ct_sm``
  (= z 82-111) with the full ``example_seg`` labels and the tissue-type masks, train.
* MR (subject C, 3 mm, 20 slices, ``example_mr_sm`` + ``example_seg_mr``, VIBE in-phase prior):
  z 0-7 and 13-19 train, z 12 val, z 8-11 test.
* Brain (``--only brain``; four contrasts T1, T1ce, T2, FLAIR at 1.5 mm, 128 px, labels in ``brats_medddpm``):
  Med-DDPM's BraTS 2021 case 01306 (z 0-59 and 65-143 train, z 60-64 val) and TCGA-DU-7294 (BraTS-Toolkit fusion
  over the brain of its skull-stripped images; z 0-99 and 121-154 train, z 100-115 test: the tumour's upper part,
  z 116-120 val).

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
    ap.add_argument("--only", choices=("ct", "mr", "brain"), help="build only this dataset")
    ap.add_argument("--name", help="dataset folder name (default ct-demo / mr-demo)")
    args = ap.parse_args()
    axes = tuple(a.strip() for a in args.axes.split(",") if a.strip())
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ts = args.data / "totalsegmentator"

    if args.only in (None, "ct"):
        build_ct(ts, args.out / (args.name or "ct-demo"), axes, args.overwrite)
    if args.only in (None, "mr"):
        build_mr(ts, args.out / (args.name or "mr-demo"), axes, args.overwrite)
    if args.only in (None, "brain"):
        build_brain(args.data, args.out / (args.name or "brain-demo"), axes, args.overwrite)


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


BRAIN_SPACING, BRAIN_SIZE = 1.5, 128


def build_brain(data: Path, out: Path, axes: tuple[str, ...], overwrite: bool) -> None:
    from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map, brain_mask_from_images
    from seg2med.api import BRAIN_CONTRASTS, ContrastSubject, prepare_contrasts

    mdd = data / "med-ddpm" / "brats2021"
    seg = load_volume(mdd / "seg" / "BraTS2021_01306_seg.nii.gz", kind="labels")
    a = {n: load_volume(mdd / n / f"BraTS2021_01306_{n}.nii.gz") for n in BRAIN_CONTRASTS}
    tc = data / "brainlesion-tutorials" / "TCGA-DU-7294"
    files = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}
    b = {n: load_volume(tc / "raw_bet" / f"TCGA-DU-7294_{f}_bet.nii.gz") for n, f in files.items()}
    b_labels = brain_label_map(load_volume(tc / "fusion" / "mav.nii.gz", kind="labels"), "brats2021",
                               brain_mask_from_images(list(b.values())))
    subjects = []
    for name, images, labels, blocks in (
            ("brats01306", a, seg, [(0, 60, "train"), (60, 65, "val"), (65, 144, "train")]),
            ("tcga7294", b, b_labels, [(0, 100, "train"), (100, 116, "test"), (116, 121, "val"), (121, 155, "train")])):
        for z0, z1, split in blocks:
            subjects.append(ContrastSubject(f"{name}_z{z0:03d}-{z1 - 1:03d}",
                                            {n: crop_z(v, z0, z1) for n, v in images.items()}, crop_z(labels, z0, z1),
                                            split=split, extra={"z_range": [z0, z1]}))
    prepare_contrasts(subjects, out, BRAIN_CONTRASTS, scheme=BRAIN_SCHEME, axes=axes, spacing=BRAIN_SPACING,
                      size=BRAIN_SIZE, mr_percentiles=(0.5, 99.5), overwrite=overwrite)


if __name__ == "__main__":
    main()
