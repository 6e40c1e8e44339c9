"""Training-time augmentation of slice batches: the prior re-simulated from the stored labels, and joint geometry.

Two batch transforms over a collated batch of :class:`~seg2med.data.dataset.SliceDataset` items (the
MONAI dictionary-transform pattern, on a whole batch), each in the style of
:class:`~seg2med.physics.randomize.RandomPrior`: ``sample(batch, g)`` draws every random quantity from
the ``torch.Generator`` ``g`` into parameters (the same number of draws for every batch of a given
size, whatever its content), ``apply(batch, params)`` is deterministic given them, and calling the
transform does both. A training step that seeds ``g`` from ``(seed, step)`` therefore resumes exactly.

* :class:`PriorResimulation` (needs the stored ``labels``): per slice, the physics prior of its
  labels (centre and neighbour slices) is recomputed with the dataset's scheme, sequence and tissue
  table under a :class:`~seg2med.physics.randomize.RandomPrior` draw (tissue spread, bias field,
  noise sd uniform in [0, noise], blur sigma uniform in [0, blur] mm), after a class ablation (each
  organ class present is relabelled ``body`` with probability ``class_drop``, each tissue class
  201-204 with probability ``tissue_drop``), then normalised with the subject's stored prior window
  (see :class:`PriorSource`) and set to 0 where the labels are background, as preparation did. A
  multi-contrast dataset (e.g. T1, T1ce, T2, FLAIR) gets one prior per contrast, each with its own
  sequence and stored window, from the same draw: the tissues' T1/T2/T2*/PD jitter, the ablation, the
  blur and the bias field (one receive coil) are shared by the contrasts, the noise is independent.
* :class:`RandomGeometry`: a random in-plane zoom (a factor on the slice spacing, log-uniform),
  rotation, field-of-view shift and, with probability ``p_inside``, a view centred and scaled so that
  it lies entirely inside the body (mask all ones); one ``affine_grid`` / ``grid_sample`` per batch,
  image and prior bilinear, mask and labels nearest, 0 (air, background) outside the field of view,
  image and prior 0 outside the warped body mask (the dataset's invariant).

:func:`ablate_classes` is the array transform of the ablation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, maximum_filter, minimum_filter

from seg2med.checks import check_non_negative
from seg2med.errors import ConfigError
from seg2med.labels.schemes import EXTENSION_CLASSES, LabelScheme, canonical_scheme
from seg2med.labels.tissues import TissueTable, load_default_tissue_table
from seg2med.physics.randomize import PriorParams, RandomPrior, check_amplitudes
from seg2med.physics.sequences import ImagingSequence, sequence_from_config

log = logging.getLogger(__name__)

#: Canonical id of unlabelled soft tissue inside the body: what an ablated class becomes.
BODY_ID = EXTENSION_CLASSES["body"]
#: Canonical ids of the TotalSegmentator tissue types (subcutaneous / torso fat, muscle, intermuscular fat).
TISSUE_IDS = tuple(i for name, i in EXTENSION_CLASSES.items() if name != "body")
#: Per-slice seeds are drawn from [0, 2**62) (numpy generators are seeded with them).
SEED_RANGE = 2**62
#: Zoom factors (on the slice spacing) allowed: beyond 4x the view is mostly padding or one pixel blown up.
ZOOM_LIMITS = (0.25, 4.0)
#: An inside-the-body view is at least this wide (zoom factor): a smaller body cross-section keeps the plain geometry.
MIN_INSIDE_ZOOM = 0.2
#: An inside-the-body view spans this fraction (drawn uniformly up to 1) of the largest one that fits.
INSIDE_SCALE = 0.6
#: Median |re-simulated - stored| prior (normalised units, interior pixels) above which a warning says the
#: dataset's priors were made otherwise (another tissue table).
MISMATCH_WARNING = 0.01
DEFAULT_NAMES = {"tissue_spread": "PriorResimulation: tissue_spread", "bias_field": "PriorResimulation: bias_field",
                 "noise": "PriorResimulation: noise", "blur": "PriorResimulation: blur",
                 "class_drop": "PriorResimulation: class_drop", "tissue_drop": "PriorResimulation: tissue_drop",
                 "zoom_range": "RandomGeometry: zoom_range", "rotate_deg": "RandomGeometry: rotate_deg",
                 "shift": "RandomGeometry: shift", "p_inside": "RandomGeometry: p_inside",
                 "phases": "PriorResimulation: phases"}


def check_fraction(value: Any, option: str, upper: float = 1.0) -> float:
    """A number in [0, upper] (a probability by default); one-line :class:`ConfigError` naming ``option``."""
    value = check_non_negative(value, option)
    if value > upper:
        raise ConfigError(f"{option} must be in [0, {upper:g}], got {value!r}")
    return value


def check_phases(value: Any, sequence: ImagingSequence | None, option: str) -> tuple[str, ...]:
    """CT contrast phases to draw the re-simulated prior's phase from (uniformly; empty: the dataset's phase).

    Known phases (:data:`~seg2med.physics.contrast.PHASES`), no repeats; refused for a non-CT ``sequence``."""
    from seg2med.physics.contrast import check_phase

    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{option} must be a list of contrast phases, got {value!r}")
    phases = tuple(check_phase(str(p)) for p in value)
    if len(set(phases)) != len(phases):
        raise ConfigError(f"{option} lists a phase twice: {list(phases)}")
    if phases and sequence is not None and "contrast_phase" not in sequence.parameters():
        raise ConfigError(f"{option}: contrast phases apply to CT priors, not to the {sequence.name!r} sequence")
    return phases


def check_zoom_range(value: Any, option: str) -> tuple[float, float]:
    """``(low, high)`` zoom factors with ``0.25 <= low <= high <= 4``."""
    lo_lim, hi_lim = ZOOM_LIMITS
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{option} must be two numbers [min, max] (factors on the slice spacing), got {value!r}")
    lo, hi = (check_non_negative(v, option) for v in value)
    if not lo_lim <= lo <= hi <= hi_lim:
        raise ConfigError(f"{option} must satisfy {lo_lim:g} <= min <= max <= {hi_lim:g}, got {list(value)!r}")
    return lo, hi


def ablate_classes(labels: np.ndarray, dropped: Sequence[int], body: int = BODY_ID) -> np.ndarray:
    """``labels`` with every id in ``dropped`` relabelled ``body`` (the array itself when nothing is dropped)."""
    if not len(dropped):
        return labels
    lut = np.arange(max(int(labels.max()), *map(int, dropped)) + 1, dtype=labels.dtype)
    lut[np.asarray(dropped, dtype=np.int64)] = body
    return lut[labels]


def interior(labels: np.ndarray, size: int = 3) -> np.ndarray:
    """Pixels inside the body whose ``size`` x ``size`` neighbourhood holds one label (away from every edge)."""
    return (minimum_filter(labels, size, mode="nearest") == maximum_filter(labels, size, mode="nearest")) & (labels != 0)


# --------------------------------------------------------------------------- the prior
@dataclass(frozen=True)
class PriorSource:
    """How a dataset's stored priors were made: the canonical label scheme, the sequence of each prior
    channel (one per contrast of a multi-contrast dataset, in channel order; one otherwise), the tissue
    table of the physics, the in-plane slice spacing (mm) and each subject's prior window ``(low, high)``
    per channel (the manifest's ``subjects`` order, which a batch's ``subject_index`` points into).

    The window is the one preparation stored (``normalization.prior``): the fixed CT window, or for MR
    the percentile (or ``signal``: ``[0, upper percentile]``) window fitted on the subject's whole prior
    volume. Re-normalising with it (rather than with each slice's own percentiles) reproduces the stored
    prior exactly when nothing is drawn, and keeps a bias field or tissue change visible instead of
    normalising it away. The manifest does not record a ``--tissues`` table: the built-in one is used (a
    dataset prepared with another table is warned about, see :meth:`PriorResimulation.stored_mismatch`).
    """

    name: str  # the dataset, as messages name it
    scheme: LabelScheme
    sequences: tuple[ImagingSequence, ...]
    spacing: float
    windows: tuple[tuple[tuple[float, float] | None, ...], ...]  # [subject][channel]
    tissues: TissueTable = field(default_factory=load_default_tissue_table)
    contrasts: tuple[str, ...] = ()  # the contrasts' names (multi-contrast data), for messages

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], name: str, split: str = "train",
                      tissues: TissueTable | None = None) -> PriorSource:
        """The source of a prepared dataset's manifest; one-line :class:`ConfigError` naming ``name`` when
        the ``split`` subjects have no stored labels or the manifest does not say how the priors were made."""
        cfg, records = manifest.get("config", {}), manifest.get("subjects", [])
        what = "prior augmentation re-simulates the prior from the stored label maps"
        lacking = [str(r.get("id")) for r in records if r.get("split") == split and not r.get("has_labels")]
        if lacking:
            more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
            raise ConfigError(f"{name}: {what}, but the dataset was prepared without labels (subject(s) "
                              f"{', '.join(lacking[:5])}{more}); prepare it with labels (seg2med prepare --labels)")
        contrasts = cfg.get("contrasts") or []
        configs = [c.get("sequence") if isinstance(c, Mapping) else None for c in contrasts] or [cfg.get("sequence")]
        if not cfg.get("scheme") or not all(isinstance(c, Mapping) for c in configs):
            raise ConfigError(f"{name}: {what}, but its manifest records no label scheme and sequence of the priors "
                              f"(prepare it again with seg2med prepare)")
        try:
            scheme, sequences = canonical_scheme(str(cfg["scheme"])), tuple(sequence_from_config(c) for c in configs)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if len({s.modality for s in sequences}) > 1:
            raise ConfigError(f"{name}: the contrasts' priors mix modalities ({', '.join(s.modality for s in sequences)})")
        windows = []
        for r in records:
            stored = (r.get("normalization") or {}).get("prior") or {}
            stored = list(stored) if isinstance(stored, (list, tuple)) else [stored]
            stored = stored if len(stored) == len(sequences) else [{}] * len(sequences)
            windows.append(tuple((float(p["low"]), float(p["high"])) if isinstance(p, Mapping) and "low" in p and "high" in p
                                 else None for p in stored))
        names = tuple(str(c.get("name")) for c in contrasts)
        return cls(name, scheme, sequences, float(cfg.get("spacing", 1.0)), tuple(windows),
                   tissues or load_default_tissue_table(), names)

    @property
    def sequence(self) -> ImagingSequence:
        """The sequence of the first (for single-contrast data: the only) prior channel."""
        return self.sequences[0]

    @property
    def modality(self) -> str:
        return self.sequence.modality

    @property
    def channels(self) -> int:
        """Prior channels per slice (contrasts; 1 for single-contrast data)."""
        return len(self.sequences)

    def window(self, subject_index: int, channel: int = 0) -> tuple[float, float]:
        wins = self.windows[subject_index] if 0 <= subject_index < len(self.windows) else ()
        win = wins[channel] if 0 <= channel < len(wins) else None
        if win is None or not win[1] > win[0]:
            what = f" (contrast {self.contrasts[channel]})" if channel < len(self.contrasts) else ""
            raise ConfigError(f"{self.name}: subject #{subject_index} has no prior normalisation window{what} in the manifest")
        return win


@dataclass(frozen=True)
class SliceDraw:
    """The draws of one slice of :class:`PriorResimulation`: its prior parameters and the ids relabelled ``body``."""

    prior: PriorParams
    dropped: tuple[int, ...] = ()
    phase: str | None = None  # the CT contrast phase of the re-simulated prior (None: the dataset's)


def _label_stacks(batch: Mapping[str, torch.Tensor]) -> np.ndarray:
    """``[B, 1 + 2k, H, W]`` labels of each slice and its neighbours (``neighbour_labels``, else ``labels``)."""
    key = "neighbour_labels" if "neighbour_labels" in batch else "labels"
    if key not in batch or "subject_index" not in batch:
        raise ConfigError("prior re-simulation needs the slices' labels and subject indices in the batch "
                          "(a dataset prepared with labels, collated by seg2med.training.data.collate)")
    return batch[key].numpy()


class PriorResimulation:
    """Batch transform: the prior of every slice recomputed from its (ablated) labels under random physics.

    ``tissue_spread``, ``bias_field``, ``noise`` (the largest noise sd: HU for CT, a fraction of the
    slice's range for MR) and ``blur`` (the largest Gaussian sigma, mm) are the amplitudes of
    :class:`~seg2med.physics.randomize.RandomPrior` (same bounds); per slice the noise sd and the blur
    are drawn uniformly up to them. ``class_drop`` / ``tissue_drop``: probability that an organ class
    / a tissue class (ids 201-204) present in the slice stack becomes ``body``. One draw per slice
    serves its centre and neighbour channels (the same ablation, tissue values and bias field; an
    independent noise realisation and an in-plane blur per channel). With every amplitude 0 the
    result equals the stored prior except near label edges (preparation resampled the prior linearly,
    the labels by nearest neighbour). ``names`` maps each option to how messages name it.
    """

    def __init__(self, source: PriorSource, tissue_spread: float = 0.0, bias_field: float = 0.0, noise: float = 0.0,
                 blur: float = 0.0, class_drop: float = 0.0, tissue_drop: float = 0.0,
                 names: Mapping[str, str] | None = None, phases: Sequence[str] = ()) -> None:
        n = {**DEFAULT_NAMES, **dict(names or {})}
        amplitudes = check_amplitudes(source.modality, tissue_spread, bias_field, noise, blur, n)
        self.class_drop = check_fraction(class_drop, n["class_drop"])
        self.tissue_drop = check_fraction(tissue_drop, n["tissue_drop"])
        self.source = source
        self.random_priors = tuple(RandomPrior(seq, *amplitudes) for seq in source.sequences)
        self.random_prior = self.random_priors[0]
        self.phases = check_phases(phases, source.sequence, n["phases"])
        if self.phases and source.channels > 1:
            raise ConfigError(f"{n['phases']}: contrast phases apply to single-contrast CT data, not to "
                              f"{source.channels} contrasts")
        seq = source.sequence.to_config()
        self.phase_priors = {p: RandomPrior(sequence_from_config({**seq, "contrast_phase": p}), *amplitudes)
                             for p in self.phases}
        self.checked = False  # whether the stored priors were compared with a re-simulation (once)

    def sample(self, batch: Mapping[str, torch.Tensor], g: torch.Generator) -> list[SliceDraw]:
        """One :class:`SliceDraw` per slice (one int64 draw from ``g`` per slice seeds all of its draws)."""
        stacks = _label_stacks(batch)
        seeds = torch.randint(SEED_RANGE, (stacks.shape[0],), generator=g).tolist()
        return [self.sample_slice(stack, seed) for stack, seed in zip(stacks, seeds)]

    def sample_slice(self, stack: np.ndarray, seed: int) -> SliceDraw:
        """The draws of one slice stack (``[1 + 2k, H, W]`` labels) from the numpy generator seeded with ``seed``."""
        rng = np.random.default_rng(seed)
        src = self.source
        params = self.random_prior.sample(src.scheme, src.tissues, ndim=2, rng=rng)
        u_noise, u_blur = rng.random(2)
        params = dataclasses.replace(params, noise_sd=float(u_noise) * params.noise_sd, blur_mm=float(u_blur) * params.blur_mm)
        present = [int(i) for i in np.unique(stack)]
        organs = [i for i in present if i not in (0, BODY_ID, *TISSUE_IDS)]
        tissues = [i for i in present if i in TISSUE_IDS]
        drop = [*(rng.random(len(organs)) < self.class_drop), *(rng.random(len(tissues)) < self.tissue_drop)]
        phase = self.phases[int(rng.integers(len(self.phases)))] if self.phases else None  # drawn last: off = as before
        return SliceDraw(params, tuple(i for i, d in zip(organs + tissues, drop) if d), phase)

    def prior_stack(self, draw: SliceDraw, stack: np.ndarray, subject_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(prior, labels)`` of one slice stack (``[1 + 2k, H, W]`` labels) under ``draw``: the normalised prior
        ``[C (1 + 2k), H, W]`` in [0, 1] (0 on background; contrast-major as the dataset stores it, C = 1 for
        single-contrast data) and the ablated labels. Every channel gets its own noise realisation."""
        src = self.source
        labels = ablate_classes(stack, draw.dropped)
        n = labels.shape[0]
        prior = np.empty((src.channels * n, *labels.shape[1:]), dtype=np.float32)
        priors = (self.phase_priors[draw.phase],) if draw.phase in self.phase_priors else self.random_priors
        for c, random_prior in enumerate(priors):
            low, high = src.window(subject_index, c)
            for j in range(n):
                params = draw.prior
                if params.noise_seed is not None and c * n + j:
                    params = dataclasses.replace(params, noise_seed=params.noise_seed + c * n + j)
                raw = random_prior.apply(params, labels[j], src.scheme, src.tissues, (src.spacing, src.spacing))
                prior[c * n + j] = np.where(labels[j] != 0, np.clip((raw - low) / (high - low), 0.0, 1.0), 0.0)
        return prior, labels

    def apply(self, batch: Mapping[str, torch.Tensor], draws: Sequence[SliceDraw]) -> dict[str, torch.Tensor]:
        """The batch with ``prior`` re-simulated and ``labels`` (and ``neighbour_labels``) ablated."""
        stacks = _label_stacks(batch)
        if batch["prior"].shape[1] != self.source.channels * stacks.shape[1]:
            per = f" x {self.source.channels} contrasts" if self.source.channels > 1 else ""
            raise ConfigError(f"prior re-simulation: the batch has {batch['prior'].shape[1]} prior channels but labels for "
                              f"{stacks.shape[1]} slices{per} (neighbour labels missing?)")
        subjects = batch["subject_index"].tolist()
        out = [self.prior_stack(d, s, i) for d, s, i in zip(draws, stacks, subjects)]
        res = dict(batch)
        res["prior"] = torch.from_numpy(np.stack([p for p, _ in out]))
        labels = np.stack([lab for _, lab in out])
        k = labels.shape[1] // 2
        res["labels"] = torch.from_numpy(np.ascontiguousarray(labels[:, k : k + 1])).to(batch["labels"].dtype)
        if "neighbour_labels" in batch:
            res["neighbour_labels"] = torch.from_numpy(labels).to(batch["neighbour_labels"].dtype)
        return res

    def __call__(self, batch: Mapping[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        if not self.checked:
            self.checked = True
            diff = self.stored_mismatch(batch)
            if diff > MISMATCH_WARNING:
                log.warning("%s: the stored priors differ from their re-simulation with the built-in tissue table by "
                            "%.3f (median inside organs): was the dataset prepared with another --tissues table? The "
                            "augmented priors use the built-in one", self.source.name, diff)
        return self.apply(batch, self.sample(batch, g))

    def stored_mismatch(self, batch: Mapping[str, torch.Tensor]) -> float:
        """Median ``|re-simulated - stored|`` centre prior of every contrast (nothing drawn) over the interior pixels
        of ``batch``."""
        stacks = _label_stacks(batch)
        n = stacks.shape[1]
        k = n // 2
        centres = [c * n + k for c in range(self.source.channels)]
        diffs = []
        for stack, stored, s in zip(stacks, batch["prior"].numpy(), batch["subject_index"].tolist()):
            prior, _ = self.prior_stack(SliceDraw(PriorParams()), stack[k : k + 1], s)
            inner = interior(stack[k])
            diffs.extend(np.abs(prior[c] - stored[i])[inner] for c, i in enumerate(centres))
        d = np.concatenate(diffs) if diffs else np.zeros(0)
        return float(np.median(d)) if d.size else 0.0


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class GeometryParams:
    """The draws of :class:`RandomGeometry` for a batch: per slice the ``[2, 3]`` affine of
    :func:`torch.nn.functional.affine_grid` (output -> input normalised coordinates) and whether the
    view was placed inside the body."""

    theta: torch.Tensor  # [B, 2, 3] float64
    inside: torch.Tensor  # [B] bool


def affine_theta(zoom: float, angle: float, centre: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """``[2, 3]`` float64 affine mapping an output pixel ``p`` (pixels from the slice centre, ``x`` along the
    width) to the input pixel ``zoom * R(angle) p + centre``, in the normalised coordinates of
    :func:`~torch.nn.functional.affine_grid` (``align_corners=False``). ``zoom`` > 1 samples coarser
    (the anatomy looks smaller); ``angle`` in radians."""
    h, w = size
    c, s = math.cos(angle), math.sin(angle)
    sx, sy = w / 2.0, h / 2.0
    return torch.tensor([[zoom * c, -zoom * s * sy / sx, centre[0] / sx],
                         [zoom * s * sx / sy, zoom * c, centre[1] / sy]], dtype=torch.float64)


def inside_view(mask: np.ndarray, u_centre: float, u_scale: float) -> tuple[tuple[float, float], float] | None:
    """``(centre, zoom)`` of a view of ``mask``'s size lying entirely inside the body, or None when the body is too small.

    The centre is a pixel at least half as deep inside the body as the deepest one (``u_centre`` picks
    it, row-major order); the view's corners stay at least one pixel inside the largest disc around it
    that holds no background (the slice border counts as background), whatever the rotation, so that
    nearest-neighbour sampling of the mask gives all ones. ``u_scale`` sets the zoom between
    :data:`INSIDE_SCALE` and 1 times the largest that fits.
    """
    h, w = mask.shape
    depth = distance_transform_edt(np.pad(mask > 0.5, 1))[1:-1, 1:-1]
    deepest = float(depth.max())
    half = math.hypot((w - 1) / 2.0, (h - 1) / 2.0)
    if deepest <= 1.0 or half <= 0:
        return None
    candidates = np.flatnonzero(depth.ravel() >= 0.5 * deepest)
    j = int(candidates[min(int(u_centre * len(candidates)), len(candidates) - 1)])
    row, col = divmod(j, w)
    zoom = (float(depth[row, col]) - 1.0) / half * (INSIDE_SCALE + (1.0 - INSIDE_SCALE) * u_scale)
    if zoom < MIN_INSIDE_ZOOM:
        return None
    return (col + 0.5 - w / 2.0, row + 0.5 - h / 2.0), zoom


class RandomGeometry:
    """Batch transform: joint random zoom, rotation, field-of-view shift and inside-the-body views.

    ``zoom_range`` ``(low, high)``: factor on the in-plane spacing, drawn log-uniformly (the effective
    spacing of the slice is the dataset's times it; > 1 shows more of the body, smaller). ``rotate_deg``:
    rotation uniform in +-it. ``shift``: field-of-view shift uniform in +-it times the slice size, per
    direction. ``p_inside``: probability that a slice gets a view centred inside the body and scaled so
    that it lies entirely inside it (:func:`inside_view`; its rotation is kept, zoom and shift are not;
    a body cross-section too small for it keeps the plain draw). ``bilinear`` / ``nearest`` name the
    keys resampled each way (those present); ``masked`` the ones set to 0 where the warped ``mask_key``
    is 0 (the unpaired CycleGAN batches leave their prior out: it belongs to another slice).
    """

    def __init__(self, zoom_range: Sequence[float] = (1.0, 1.0), rotate_deg: float = 0.0, shift: float = 0.0,
                 p_inside: float = 0.0, bilinear: Sequence[str] = ("image", "prior"),
                 nearest: Sequence[str] = ("mask", "labels", "neighbour_labels"), masked: Sequence[str] = ("image", "prior"),
                 mask_key: str = "mask", names: Mapping[str, str] | None = None) -> None:
        n = {**DEFAULT_NAMES, **dict(names or {})}
        self.zoom_range = check_zoom_range(zoom_range, n["zoom_range"])
        self.rotate_deg = check_fraction(rotate_deg, n["rotate_deg"], 180.0)
        self.shift = check_fraction(shift, n["shift"], 0.5)
        self.p_inside = check_fraction(p_inside, n["p_inside"])
        self.bilinear, self.nearest, self.masked, self.mask_key = tuple(bilinear), tuple(nearest), tuple(masked), mask_key

    def sample(self, batch: Mapping[str, torch.Tensor], g: torch.Generator) -> GeometryParams:
        """Seven uniform draws per slice from ``g`` (zoom, angle, two shifts, inside?, its centre and scale)."""
        mask = batch[self.mask_key]
        b, _, h, w = mask.shape
        u = torch.rand(b, 7, generator=g, dtype=torch.float64).tolist()
        lo, hi = (math.log(z) for z in self.zoom_range)
        thetas, inside = [], []
        for i, (uz, ua, ux, uy, ui, uc, us) in enumerate(u):
            zoom = math.exp(lo + uz * (hi - lo))
            angle = math.radians((2.0 * ua - 1.0) * self.rotate_deg)
            centre = ((2.0 * ux - 1.0) * self.shift * w, (2.0 * uy - 1.0) * self.shift * h)
            view = inside_view(mask[i, 0].numpy(), uc, us) if ui < self.p_inside else None
            if view is not None:
                centre, zoom = view
            thetas.append(affine_theta(zoom, angle, centre, (h, w)))
            inside.append(view is not None)
        return GeometryParams(torch.stack(thetas), torch.tensor(inside, dtype=torch.bool))

    def apply(self, batch: Mapping[str, torch.Tensor], params: GeometryParams) -> dict[str, torch.Tensor]:
        """Every present ``bilinear`` / ``nearest`` key resampled on the grid of ``params``; ``masked`` keys 0 off the body."""
        out = dict(batch)
        b, _, h, w = batch[self.mask_key].shape
        grid = F.affine_grid(params.theta.to(torch.float32), [b, 1, h, w], align_corners=False)
        for keys, mode in ((self.bilinear, "bilinear"), (self.nearest, "nearest")):
            keys = [k for k in keys if k in batch]
            if not keys:
                continue
            stacked = torch.cat([batch[k].to(torch.float32) for k in keys], dim=1)
            warped = F.grid_sample(stacked, grid, mode=mode, padding_mode="zeros", align_corners=False)
            for k, part in zip(keys, warped.split([batch[k].shape[1] for k in keys], dim=1)):
                out[k] = part if batch[k].is_floating_point() else part.round().to(batch[k].dtype)
        body = out[self.mask_key] > 0
        for k in self.masked:
            if k in out:
                out[k] = torch.where(body, out[k], torch.zeros((), dtype=out[k].dtype))
        return out

    def __call__(self, batch: Mapping[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
        return self.apply(batch, self.sample(batch, g))


__all__ = [
    "BODY_ID",
    "TISSUE_IDS",
    "GeometryParams",
    "PriorResimulation",
    "PriorSource",
    "RandomGeometry",
    "SliceDraw",
    "ablate_classes",
    "affine_theta",
    "check_fraction",
    "check_zoom_range",
    "inside_view",
    "interior",
]
