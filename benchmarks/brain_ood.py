"""Four-contrast brain models on inputs unlike their training data (the brain-demo model card's robustness numbers).

Usage::

    python benchmarks/brain_ood.py --models brain-demo,runs/brain-demo-resim [--segmenter brain-seg-demo]
        [--data ../shared/data] [--cases heldout,spacing,interior,aseg,aseg-tumour] [--seeds 0,1] [--steps 8]
        [--anchor-scale MM] [--fov-margin MM] [--slice-noise independent|shared] [--out benchmarks/results/brain-ood-cpu.md]

Every model runs on the same cases in one run (ratios, not absolute timings). Cases, built from the shared data only:

* ``heldout``     TCGA-DU-7294 z 100-115 (1 mm; kept out of every brain training by ``scripts/build_demo_datasets.py``):
                  its BraTS-Toolkit fusion over the brain of its skull-stripped images; its four real contrasts;
* ``spacing``     that block resampled to 2 mm voxels (images linear, labels nearest; the models trained at 1.5 mm);
* ``interior``    that block cropped to the largest centred in-plane box lying inside the brain (no brain outline in
                  view: another field of view);
* ``aseg``        a subject no brain model saw (niivue's FreeSurfer ``aparc.a2009s+aseg``, cortex parcels read as
                  cortex; 16 axial slices through the lateral ventricles) with grey / white matter / CSF labelled
                  (``aseg`` scheme: a prior with tissue contrast the BraTS-trained models never had), scored against
                  its real T1 (``norm.mgz``, bias-corrected, skull-stripped) only;
* ``aseg-tumour`` the same brain with a random tumour inserted in white matter (``seg2med lesion --insert --seed 0``:
                  the map becomes ``brats_medddpm``): no real image exists, only the segmenter's Dice of the inserted
                  compartments on the synthetic contrasts (``--segmenter``).

Per case and contrast: SSIM (axial) and PSNR inside the brain after each image's own 0.5-99.5th percentile window
(:mod:`seg2med.evaluation.brain`) for each model (mean +- SD over the seeds) and for the prior alone (the floor a model
must beat), and the roughness across slices (:func:`seg2med.metrics.image.roughness_ratio` along the voxel axis
nearest superior-inferior, both images in their windows: 1 = as smooth as the real image; a slice-wise model's
independent slices streak, > 1). ``--anchor-scale`` / ``--fov-margin`` / ``--slice-noise``: the sampling options of ``seg2med
generate`` for every model (default: each model's own ``sampling`` block). With ``--segmenter``: whole-tumour and tumour-core Dice on each model's synthetic contrasts, on the real
ones where they exist, and on the priors alone.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import seg2med
from seg2med.anatomy.brain import BRAIN_SCHEME, brain_label_map, brain_mask_from_images
from seg2med.api import BRAIN_CONTRASTS
from seg2med.evaluation.brain import WINDOW_PERCENTILES, contrast_similarity, evaluate_brain, unit_in_brain
from seg2med.io import Volume, load_volume
from seg2med.metrics.image import roughness_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization import interior_box, resample  # noqa: E402  (one resampler and one interior crop for both suites)

HELD_OUT = (100, 116)
FILES = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "fla"}
CASES = ("heldout", "spacing", "interior", "aseg", "aseg-tumour")
REGIONS = ("whole_tumor", "tumor_core")


@dataclass
class Case:
    name: str
    labels: Volume
    scheme: str
    real: dict[str, Volume] = field(default_factory=dict)  # contrast -> real image on the labels' grid
    note: str = ""


def _niivue(data: Path) -> tuple[Volume, Volume]:
    """niivue's aparc.a2009s+aseg (cortex parcels -> left / right cerebral cortex) and its norm T1, cut to 16 axial
    slices through the lateral ventricles and to the brain's in-plane bounding box (+4 voxels)."""
    lab = load_volume(data / "niivue" / "aparc.a2009s+aseg.mgz", kind="labels")
    t1 = load_volume(data / "niivue" / "norm.mgz")
    a = np.asarray(lab.array).astype(np.int32)
    a[(a >= 11100) & (a < 12000)], a[a >= 12100] = 3, 42  # Destrieux cortex parcels: left / right cortex
    axial = int(np.argmax(np.abs(lab.affine[2, :3])))  # the voxel axis along S-I (LIA: axis 1)
    centre = int(round(np.argwhere(np.isin(a, (4, 43)))[:, axial].mean()))  # lateral ventricles
    box = [slice(None)] * 3
    for ax in range(3):
        if ax == axial:
            box[ax] = slice(centre - 8, centre + 8)
        else:
            idx = np.nonzero(np.moveaxis(a > 0, ax, 0).reshape(a.shape[ax], -1).any(axis=1))[0]
            box[ax] = slice(max(idx[0] - 4, 0), idx[-1] + 5)
    box = tuple(box)
    return Volume(a, lab.affine, None, lab.path).crop(box), t1.crop(box)


def build_cases(data: Path, names: list[str]) -> list[Case]:
    tc = data / "brainlesion-tutorials" / "TCGA-DU-7294"
    raw = {n: load_volume(tc / "raw_bet" / f"TCGA-DU-7294_{f}_bet.nii.gz") for n, f in FILES.items()}
    labels = brain_label_map(load_volume(tc / "fusion" / "mav.nii.gz", kind="labels"), "brats2021",
                             brain_mask_from_images(list(raw.values())))
    block = np.s_[:, :, slice(*HELD_OUT)]
    labels, real = labels.crop(block), {n: v.crop(block) for n, v in raw.items()}
    cases = []
    if "heldout" in names:
        cases.append(Case("heldout", labels, BRAIN_SCHEME, real, "TCGA z 100-115, 1 mm"))
    if "spacing" in names:
        cases.append(Case("spacing", resample(labels, 0.5, 0), BRAIN_SCHEME,
                          {n: resample(v, 0.5, 1) for n, v in real.items()}, "2 mm voxels"))
    if "interior" in names:
        box = interior_box(np.asarray(labels.array) != 0)
        cases.append(Case("interior", labels.crop(box), BRAIN_SCHEME, {n: v.crop(box) for n, v in real.items()},
                          "field of view inside the brain"))
    if "aseg" in names or "aseg-tumour" in names:
        aseg, t1 = _niivue(data)
        if "aseg" in names:
            cases.append(Case("aseg", aseg, "aseg", {"t1": t1}, "unseen subject, FreeSurfer aseg labels"))
        if "aseg-tumour" in names:
            edited = seg2med.edit_lesion(aseg, scheme="aseg", insert=True, seed=0)
            cases.append(Case("aseg-tumour", edited.volume, BRAIN_SCHEME, {}, "unseen brain + inserted tumour"))
    return cases


def _cell(v: list[float], digits: int = 3) -> str:
    a = np.asarray(v, dtype=float)
    if a.size == 0:
        return "-"
    return f"{a.mean():.{digits}f}" + (f" ± {a.std(ddof=1):.{digits}f}" if a.size > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated shipped names or run folders")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--segmenter", default=None, help="four-contrast segmenter run or shipped name (Dice per region)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--anchor-scale", type=float, default=None)
    ap.add_argument("--fov-margin", type=float, default=None)
    ap.add_argument("--slice-noise", default=None, choices=("independent", "shared"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/brain-ood-cpu.md"))
    args = ap.parse_args()
    from seg2med.inference import load_model
    from seg2med.inference.segment import load_segmenter
    from seg2med.labels import get_scheme

    seeds, models = [int(s) for s in args.seeds.split(",")], args.models.split(",")
    unknown = sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)} (known: {', '.join(CASES)})")
    cases = build_cases(args.data, args.cases.split(","))
    seg = load_segmenter(args.segmenter) if args.segmenter else None
    order = list(seg.spec.contrast_names) if seg is not None else None
    ssim: dict[tuple[str, str, str], list[float]] = {}  # (case, contrast, model or "prior") -> values
    psnr: dict[tuple[str, str, str], list[float]] = {}
    rough: dict[tuple[str, str, str], list[float]] = {}
    dice: dict[tuple[str, str, str], list[float]] = {}  # (case, region, model / "real" / "prior")
    seconds: dict[str, list[float]] = {}

    def add_dice(case: Case, ev, who: str, key: str = "synthetic") -> None:
        for region in REGIONS:
            v = ev.regions.get(region, {}).get(key)
            if v is not None and np.isfinite(v):
                dice.setdefault((case.name, region, who), []).append(float(v))

    for name in models:
        model = load_model(name)
        for case in cases:
            lv = seg2med.build_anatomy(case.labels, scheme=case.scheme)
            brain = np.asarray(case.labels.array) != 0
            axial = int(np.argmax(np.abs(case.labels.affine[2, :3])))  # the voxel axis across axial slices

            def roughness(vol: Volume, ref: Volume) -> float:
                return roughness_ratio(unit_in_brain(vol, brain), unit_in_brain(ref, brain), brain, axis=axial)
            for seed in seeds:
                t0 = time.perf_counter()
                res = seg2med.generate(lv, model=model, steps=args.steps, seed=seed, precision="auto",
                                       anchor_scale=args.anchor_scale, fov_margin=args.fov_margin,
                                       **({"slice_noise": args.slice_noise} if args.slice_noise else {}))
                seconds.setdefault(name, []).append(time.perf_counter() - t0)
                for n, ref in case.real.items():
                    sim = contrast_similarity(res.channels[n][0], ref, brain)
                    ssim.setdefault((case.name, n, name), []).append(sim["ssim"])
                    psnr.setdefault((case.name, n, name), []).append(sim["psnr"])
                    rough.setdefault((case.name, n, name), []).append(roughness(res.channels[n][0], ref))
                if seg is not None and case.scheme == BRAIN_SCHEME:
                    first = {n: v[0] for n, v in res.channels.items()}
                    real = case.real if len(case.real) == len(BRAIN_CONTRASTS) and name == models[0] and seed == seeds[0] else None
                    ev = evaluate_brain(first, case.labels, get_scheme(BRAIN_SCHEME), seg, real=real, contrasts=order)
                    add_dice(case, ev, name)
                    if real is not None:
                        add_dice(case, ev, "real", "real")
            if name == models[0]:  # the priors (the same contrasts and windows for every brain model)
                for n, ref in case.real.items():
                    sim = contrast_similarity(res.channel_priors[n], ref, brain)
                    ssim[(case.name, n, "prior")], psnr[(case.name, n, "prior")] = [sim["ssim"]], [sim["psnr"]]
                    rough[(case.name, n, "prior")] = [roughness(res.channel_priors[n], ref)]
                if seg is not None and case.scheme == BRAIN_SCHEME:
                    add_dice(case, evaluate_brain(res.channel_priors, case.labels, get_scheme(BRAIN_SCHEME), seg,
                                                  contrasts=order), "prior")
    lines = [f"# Brain models out of distribution ({_dt.date.today().isoformat()})", "",
             f"`python benchmarks/brain_ood.py --models {args.models}"
             + (f" --segmenter {args.segmenter}" if args.segmenter else "")
             + f" --cases {args.cases} --seeds {args.seeds} --steps {args.steps}"
             + "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in (("anchor_scale", args.anchor_scale),
                                                                      ("fov_margin", args.fov_margin)) if v is not None)
             + (f" --slice-noise {args.slice_noise}" if args.slice_noise else "")
             + f"` on {platform.machine()} (cpu), "
             f"seg2med {seg2med.__version__}. Metrics inside the brain, each image in its own "
             f"{WINDOW_PERCENTILES[0]}-{WINDOW_PERCENTILES[1]}th percentile window; mean ± SD over {len(seeds)} seeds. "
             "Cases (see the script): " + "; ".join(f"`{c.name}` {c.note} ({' x '.join(map(str, c.labels.shape))} "
                                                       f"voxels)" for c in cases) + ".", "",
             "Seconds per volume (four contrasts, mean over cases and seeds): "
             + ", ".join(f"`{m}` {np.mean(seconds[m]):.1f}" for m in models) + ".", ""]
    for title, table in (("SSIM", ssim), ("PSNR dB", psnr), ("Roughness across slices (1 = as the real image)", rough)):
        lines += [f"## {title}", "", "| case | contrast | prior alone | " + " | ".join(f"`{m}`" for m in models) + " |",
                  "|---|---|---|" + "---|" * len(models)]
        for case in cases:
            for n in case.real:
                digits = 2 if title == "PSNR dB" else 3
                lines.append(f"| {case.name} | {n} | {_cell(table[(case.name, n, 'prior')], digits)} | "
                             + " | ".join(_cell(table[(case.name, n, m)], digits) for m in models) + " |")
        lines.append("")
    if seg is not None:
        lines += [f"## Dice of `{args.segmenter}` against the mask", "",
                  "| case | region | real images | priors alone | " + " | ".join(f"`{m}`" for m in models) + " |",
                  "|---|---|---|---|" + "---|" * len(models)]
        for case in cases:
            if case.scheme != BRAIN_SCHEME:
                continue
            for region in REGIONS:
                lines.append(f"| {case.name} | {region} | {_cell(dice.get((case.name, region, 'real'), []))} | "
                             f"{_cell(dice.get((case.name, region, 'prior'), []))} | "
                             + " | ".join(_cell(dice.get((case.name, region, m), [])) for m in models) + " |")
        lines.append("")
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
