"""Turn a label volume into a synthetic CT / MR volume with a trained checkpoint.

Pipeline (exactly the training preprocessing, then its inverse):
labels -> physics prior (the sequence and parameters the model was trained
with) -> normalisation (the checkpoint's :class:`~seg2med.data.spec.DataSpec`)
-> :class:`~seg2med.data.codec.SliceCodec` encode: closest-RAS reorientation,
in-plane resampling and padding to the model's slice size (a wider plane gets a
larger canvas, never a crop) -> the model's :class:`SliceGenerator`, batched:
reverse diffusion (``ddpm``) or one forward pass of the generator (``unet``,
``pix2pix``, ``cyclegan``; the fitted intensity map for ``prior``) -> decode
(the geometry undone) -> undo the normalisation (HU for CT) -> a float32 volume
with the input's affine, shape and spacing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg2med.data.codec import SliceCodec, VolumeCodec, stack_neighbours
from seg2med.data.geometry import AXES, check_axis
from seg2med.data.normalize import denormalize, to_signed, to_unit
from seg2med.data.spec import DataSpec
from seg2med.errors import ConfigError, InputError
from seg2med.inference.qc import organ_qc, qc_warning
from seg2med.io import Volume
from seg2med.io.checkpoints import (
    CONFIG,
    EMA_WEIGHTS,
    WEIGHTS,
    load_weights_into,
    read_checkpoint_config,
)
from seg2med.io.sidecars import GENERATED_KIND
from seg2med.labels import LabelScheme, TissueTable
from seg2med.models import ModelConfig, SchedulerConfig, build_model, build_scheduler, for_inference
from seg2med.models.baselines import BaselineConfig, OneShotGenerator, PriorMap, downsampling
from seg2med.models.registry import (
    DEFAULT_METHOD,
    DEFAULT_SLICE_CORRELATION,
    DEFAULT_STEPS,
    KIND_DIFFUSION,
    REGISTRY,
    SLICE_NOISE,
    get_method,
)
from seg2med.models.precision import autocast_dtype, parse_device
from seg2med.physics import sequence_from_config, simulate_prior
from seg2med.physics.sequences import ImagingSequence
from seg2med.sampling import (
    PriorAnchor,
    X0Parametrisation,
    autocast_denoiser,
    check_strength,
    conditional_denoiser,
    default_sampler,
    plane_cycling_denoiser,
    prior_anchored_steps,
    sample,
    x0_corrected_denoiser,
)
from seg2med.sampling.noise import check_correlation, correlated_slice_noise
from seg2med.sampling.planes import neighbour_slices, slices_of

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model registry and loading
def _builtin_dir():
    return resources.files("seg2med") / "resources" / "models"


def list_models() -> tuple[str, ...]:
    """Names of the models shipped inside the package (``--model ct-demo``)."""
    root = _builtin_dir()
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()))


def resolve_model(model: str | Path) -> Path:
    """A run/checkpoint folder path, or the name of a shipped model."""
    p = Path(model)
    if p.is_dir():
        return p.resolve()  # the sidecar records where the weights came from, not a relative name
    if str(model) in list_models():
        return Path(str(_builtin_dir() / str(model)))
    if p.exists():
        raise InputError(f"{p}: not a checkpoint folder")
    known = ", ".join(list_models()) or "none shipped"
    raise InputError(f"{model}: no such checkpoint folder or shipped model (shipped: {known})")


Tick = Callable[[int], None]


@dataclass(frozen=True)
class SliceGenerator:
    """A loaded model as one function, whatever its method.

    ``generator(cond, noise, step, tick)``: conditions ``[b, 1 + 2k, h, w]`` in [-1, 1] on the model's
    device -> image slices ``[b, c, h, w]`` in [-1, 1]. ``noise`` (a CPU generator) draws the start noise, or is
    the start noise itself (a ``[b, c, h, w]`` tensor); ``step`` (a generator on the device) draws the noise of
    each step; ``tick(i)`` follows unit ``i`` of ``units`` (a diffusion step, or the one forward pass). Not
    ``stochastic``: the same output for every seed. ``channels``: the image channels ``c``.
    """

    run: Callable[[torch.Tensor, torch.Generator | torch.Tensor, torch.Generator, Tick], torch.Tensor]
    units: int
    stochastic: bool
    channels: int = 1

    def __call__(self, cond: torch.Tensor, noise: torch.Generator | torch.Tensor, step: torch.Generator,
                 tick: Tick | None = None) -> torch.Tensor:
        return self.run(cond, noise, step, tick or (lambda i: None))


@dataclass(frozen=True)
class VolumeGenerator:
    """A loaded diffusion model as one function of a whole volume (tri-planar sampling).

    ``generator(prior, noise, step, tick)``: the condition canvas ``[D0, D1, D2]`` in [-1, 1] (canonical RAS axes, on
    the model's device) -> the image canvas ``[C, D0, D1, D2]`` in [-1, 1]; ``tick(i)`` after step ``i`` of ``units``.
    ``slices_run`` (a list) collects how many slices each step ran through the network (the cost of a volume).
    """

    run: Callable[[torch.Tensor, torch.Generator, torch.Generator, Tick], torch.Tensor]
    units: int
    axes: tuple[str, ...]
    slices_run: list[int] = field(default_factory=list)

    def __call__(self, prior: torch.Tensor, noise: torch.Generator, step: torch.Generator,
                 tick: Tick | None = None) -> torch.Tensor:
        return self.run(prior, noise, step, tick or (lambda i: None))


@dataclass
class LoadedModel:
    """A network with the checkpoint config it was built from.

    For ``ddpm`` the network is the denoiser (``model_cfg`` / ``scheduler_cfg``
    set); for the other methods it is a one-shot module mapping the condition
    in [-1, 1] to the image in [-1, 1] (``model_cfg`` / ``scheduler_cfg`` None,
    ``weights`` None for ``prior``).
    """

    network: torch.nn.Module
    config: dict[str, Any]
    model_cfg: ModelConfig | None
    scheduler_cfg: SchedulerConfig | None
    path: Path
    weights: str | None
    method: str = DEFAULT_METHOD

    @property
    def data(self) -> dict[str, Any]:
        return self.config.get("data", {})

    @property
    def spec(self) -> DataSpec:
        """The checkpoint's data block, typed (its defaults applied)."""
        return DataSpec.from_dict(self.data, source=self.path)

    @property
    def is_diffusion(self) -> bool:
        return REGISTRY[self.method].kind == KIND_DIFFUSION

    @property
    def neighbours(self) -> int:
        """Prior slices on each side in the condition (2.5D)."""
        if self.model_cfg is not None:
            return int(self.model_cfg.neighbours)
        return int(self.config.get("model", {}).get("neighbours", 0))

    @property
    def size_multiple(self) -> int:
        """The network's total down-sampling: a slice side must be a multiple of it."""
        if self.model_cfg is not None:
            return 2 ** (len(self.model_cfg.channels) - 1)
        if not REGISTRY[self.method].networks:  # no network (the prior map): any size
            return 1
        nets = BaselineConfig.from_dict(self.config["model"], self.method).networks
        return downsampling(nets["generator"])

    @property
    def sequence_config(self) -> dict[str, Any]:
        seq = self.spec.sequence
        if not isinstance(seq, dict) or "name" not in seq:
            raise InputError(f"{self.path}: checkpoint config does not say which sequence it was trained with")
        return seq

    def slice_generator(self, steps: int = DEFAULT_STEPS, sampler: str | None = None, device: torch.device | str = "cpu",
                        precision: str = "fp32", strength: float = 1.0, anchor: PriorAnchor | None = None) -> SliceGenerator:
        """The model as one :class:`SliceGenerator`: ``steps`` of reverse diffusion with ``sampler`` (its
        default when None) for ``ddpm``, one forward pass of the network for the other methods. A
        ``strength`` < 1 starts the diffusion from the prior (the condition's centre slice) noised to the
        timestep of the last ``ceil(strength * steps)`` steps (SDEdit), which alone run. ``anchor``: at every
        step the network's clean-image estimate is corrected towards the prior (prior-consistency guidance,
        :mod:`seg2med.sampling.anchor`); one-shot methods ignore it."""
        sampler = check_sampling(self, steps, sampler, strength=strength)
        device = torch.device(device)
        amp_dtype = autocast_dtype(precision, device)
        net = self.network
        if not self.is_diffusion:
            def forward(cond: torch.Tensor, noise: torch.Generator, step: torch.Generator, tick: Tick) -> torch.Tensor:
                with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    x = net(cond).float()
                tick(1)
                return x

            return SliceGenerator(forward, 1, stochastic=False)
        model_cfg, sched = self.model_cfg, self.scheduler_cfg
        make_denoiser = self._denoiser_factory(device, precision, anchor)

        def diffuse(cond: torch.Tensor, noise: torch.Generator | torch.Tensor, step: torch.Generator,
                    tick: Tick) -> torch.Tensor:
            start = noise if isinstance(noise, torch.Tensor) else torch.randn(
                (cond.shape[0], model_cfg.image_channels, *cond.shape[-2:]), generator=noise)  # on the CPU
            init = model_cfg.prior_start(cond) if strength < 1.0 else None
            x = sample(make_denoiser(cond), tuple(start.shape), sched, sampler, steps, generator=step, device=device,
                       noise=start, callback=lambda i, n: tick(i), init=init, strength=strength)
            return model_cfg.from_sample(x.float(), cond.to(x.device).float())

        return SliceGenerator(diffuse, prior_anchored_steps(steps, strength), stochastic=True,
                              channels=model_cfg.image_channels)

    def _denoiser_factory(self, device: torch.device, precision: str, anchor: PriorAnchor | None):
        """``make(cond)``: the diffusion network with the condition slices ``cond`` ``[n, 1 + 2k, H, W]`` bound, under
        autocast, its clean-image estimate corrected by ``anchor`` (when given): a denoiser of those n slices."""
        net, model_cfg, sched = self.network, self.model_cfg, self.scheduler_cfg
        amp_dtype = autocast_dtype(precision, device)

        def make(cond: torch.Tensor):
            denoiser = autocast_denoiser(conditional_denoiser(net, cond), device.type, amp_dtype)
            if anchor is None:
                return denoiser
            prior = model_cfg.prior_centre(cond).float()
            inside = prior > -1.0 + 1e-3  # the body in slice space: the prior above its background value
            return x0_corrected_denoiser(denoiser, sched, lambda x0: model_cfg.to_sample(
                anchor(model_cfg.from_sample(x0, cond), prior, inside), cond))

        return make

    def volume_generator(self, steps: int = DEFAULT_STEPS, sampler: str | None = None, device: torch.device | str = "cpu",
                         precision: str = "fp32", strength: float = 1.0, anchor: PriorAnchor | None = None,
                         axes: tuple[str, ...] = ("axial", "coronal", "sagittal"), batch: int = 8) -> VolumeGenerator:
        """The diffusion model as one :class:`VolumeGenerator`: tri-planar sampling (:mod:`seg2med.sampling.planes`),
        each step denoising the whole canvas along the next of ``axes`` (the last step along ``axes[0]``), ``batch``
        slices per network call. ``steps``, ``sampler``, ``strength`` and ``anchor`` as in :meth:`slice_generator`
        (the anchor acts on the slices of each step's axis)."""
        check_planes(self, tri_planar=True)
        sampler = check_sampling(self, steps, sampler, batch=batch, strength=strength)
        device = torch.device(device)
        model_cfg, sched, k = self.model_cfg, self.scheduler_cfg, self.neighbours
        make_denoiser = self._denoiser_factory(device, precision, anchor)
        axis_ids = tuple(AXES[check_axis(a)] for a in axes)
        units = prior_anchored_steps(steps, strength)
        slices_run: list[int] = []

        def slicewise(fn, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            """``fn(image slices, condition slices)`` along the axial axis of ``[C, D0, D1, D2]``, as a volume."""
            return fn(slices_of(image, 2), cond).movedim(0, 3)

        def planes(prior: torch.Tensor, noise: torch.Generator, step: torch.Generator, tick: Tick) -> torch.Tensor:
            c = model_cfg.image_channels
            start = torch.randn((1, c, *prior.shape), generator=noise)  # on the CPU
            prior = prior.to(device).float()
            axial = neighbour_slices(prior, 2, k)
            air = -torch.ones((c, *prior.shape), device=device)
            background = slicewise(model_cfg.to_sample, air, axial)[None]
            denoiser = plane_cycling_denoiser(make_denoiser, prior, X0Parametrisation(sched), background, axis_ids,
                                              units, neighbours=k, batch=batch, on_slices=slices_run.append)
            init = slicewise(lambda x, cond: model_cfg.prior_start(cond), air, axial)[None] if strength < 1.0 else None
            x = sample(denoiser, tuple(start.shape), sched, sampler, steps, generator=step, device=device, noise=start,
                       callback=lambda i, n: tick(i), init=init, strength=strength,
                       image_numel=int(prior.shape[0] * prior.shape[1]))
            return slicewise(model_cfg.from_sample, x[0].float(), axial)

        return VolumeGenerator(planes, units, tuple(check_axis(a) for a in axes), slices_run)


def _check_timesteps(path: Path, cfg: dict[str, Any]) -> None:
    """A diffusion model's config.json must say how many timesteps it was trained with (an integer >= 1)."""
    sched = cfg.get("scheduler")
    if not isinstance(sched, dict) or "num_train_timesteps" not in sched:
        raise InputError(f"{path / CONFIG}: scheduler.num_train_timesteps is missing (the diffusion schedule the "
                         f"weights were trained with)")
    value = sched["num_train_timesteps"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{path / CONFIG}: scheduler.num_train_timesteps must be an integer >= 1, got {value!r}")


def _weights_name(path: Path, cfg: dict[str, Any], ema: bool) -> str:
    weights = cfg.get("weights", {})
    return weights.get("ema", EMA_WEIGHTS) if ema and (path / weights.get("ema", EMA_WEIGHTS)).is_file() else weights.get("model", WEIGHTS)


def load_one_shot(path: Path, cfg: dict[str, Any], method: str, ema: bool, device: str | torch.device) -> LoadedModel:
    """The registry's loader of the one-shot methods: a baseline generator (prior -> image) or the prior-only
    intensity map."""
    try:
        if method == "prior":
            net: torch.nn.Module = PriorMap.from_dict(cfg["model"])
            return LoadedModel(net.eval(), cfg, None, None, path, None, method)
        bcfg = BaselineConfig.from_dict(cfg["model"], method)
        gen = bcfg.build("generator")
    except ConfigError as exc:
        raise InputError(f"{path / 'config.json'}: {exc}") from None
    name = _weights_name(path, cfg, ema)
    load_weights_into(gen, path / name, "generator")
    net = for_inference(OneShotGenerator(gen, bcfg.output_activation), device)
    return LoadedModel(net, cfg, None, None, path, name, method)


def load_diffusion(path: Path, cfg: dict[str, Any], method: str, ema: bool, device: str | torch.device) -> LoadedModel:
    """The registry's loader of ``ddpm``: the denoiser with its model and scheduler configs."""
    _check_timesteps(path, cfg)
    try:
        model_cfg = ModelConfig.from_dict(cfg["model"])
        sched_cfg = SchedulerConfig.from_dict(cfg.get("scheduler", {}))
    except ConfigError as exc:
        raise InputError(f"{path / 'config.json'}: {exc}") from None
    name = _weights_name(path, cfg, ema)
    net = build_model(model_cfg)
    load_weights_into(net, path / name, "model")
    return LoadedModel(for_inference(net, device), cfg, model_cfg, sched_cfg, path, name, method)


def load_model(model: str | Path, ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network from ``config.json`` and load its (EMA) safetensors weights.

    Dispatches on ``config["method"]`` through the method registry (:mod:`seg2med.models.registry`):
    ``ddpm`` (the denoiser), ``unet`` / ``pix2pix`` / ``cyclegan`` (the prior -> image generator) or
    ``prior`` (the fitted intensity map, no weights). A segmenter run is refused.
    """
    path = resolve_model(model)
    cfg = read_checkpoint_config(path)
    method = cfg.get("method", DEFAULT_METHOD)
    if method not in REGISTRY:
        raise InputError(f"{path}: unknown method {method!r} in config.json")
    entry = get_method(method, tuple(REGISTRY))
    if not entry.generates_images:
        raise InputError(f"{path}: a {entry.name} run (method {entry.name!r}), not an image generator")
    return entry.part("loader")(path, cfg, entry.name, ema, device)


def pick_device(device: str = "auto") -> torch.device:
    """The device a ``--device`` value names (see :func:`seg2med.models.precision.parse_device`)."""
    return parse_device(device)


# --------------------------------------------------------------------------- generation
@dataclass
class GenerationResult:
    """K sampled volumes on the input grid, their voxel-wise standard deviation and provenance.

    A multi-contrast model (``contrasts`` non-empty, in channel order): ``channels`` holds, per contrast, its K
    samples, ``channel_priors`` / ``channel_stds`` its prior and std map; ``samples`` / ``prior`` / ``std`` are those
    of the first contrast."""

    samples: list[Volume]
    prior: Volume
    std: Volume | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    contrasts: tuple[str, ...] = ()
    channels: dict[str, list[Volume]] = field(default_factory=dict)
    channel_priors: dict[str, Volume] = field(default_factory=dict)
    channel_stds: dict[str, Volume | None] = field(default_factory=dict)


#: Seeds of the samples of one run: ``seed * SAMPLE_SEED_STRIDE + k``. The stride is a prime larger than any
#: ``--samples``, so sample k of seed s never reuses the noise of another (seed, sample) pair of nearby seeds.
SAMPLE_SEED_STRIDE = 1_000_003


def sample_seed(seed: int, k: int) -> int:
    """The generator seed of sample ``k`` of a run with ``seed`` (bit-identical outputs rest on it)."""
    return int(seed) * SAMPLE_SEED_STRIDE + k


def check_sampling(model: LoadedModel, steps: int, sampler: str | None, samples: int = 1, batch: int = 1,
                   strength: float = 1.0) -> str | None:
    """The sampler ``model`` will use (its default when None), after refusing, before any work, sampling
    options it cannot run: ``samples`` / ``batch`` < 1, ``steps`` outside 1..training timesteps, a sampler
    its scheduler does not support, ``strength`` outside (0, 1]. One-shot methods ignore steps, sampler
    and strength (None)."""
    if samples < 1 or batch < 1:
        raise ConfigError("--samples and --batch must be >= 1")
    try:
        check_strength(strength)
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None
    if not model.is_diffusion:
        return sampler
    sampler = sampler or default_sampler(model.scheduler_cfg)  # rflow for an rflow model, else ddim
    build_scheduler(model.scheduler_cfg, sampler)  # a sampler the model cannot use fails here
    top = int(model.scheduler_cfg.num_train_timesteps)
    if not 1 <= int(steps) <= top:
        raise ConfigError(f"--steps must be in 1..{top} for {model.path.name}, got {steps}")
    return sampler


def _slicing_axis(model: LoadedModel, axis: str | None) -> str:
    """``axis`` (default: the model's first training axis); another axis than it was trained on is a warning."""
    trained = list(model.spec.axes)
    axis = check_axis(axis) if axis is not None else trained[0]
    if axis not in trained:
        log.warning("%s was trained on %s slices only: %s slices are outside its training data",
                    model.path.name, " and ".join(trained), axis)
    return axis


def _plan_codec(model: LoadedModel, labels: Volume, axis: str, margin: int = 0) -> SliceCodec:
    """The model's slices of ``labels``' grid. A field of view wider than the training slices (with ``margin`` px
    around it) is sampled on a larger canvas (the network is convolutional), not cropped: a crop would turn the
    body outside it into air."""
    codec = model.spec.codec(labels.affine, labels.shape, axis, grow_multiple=model.size_multiple, margin=margin)
    geo = codec.geometry
    if codec.grown:
        log.info("%s slices of %s mm%s exceed the model's %s px at %g mm: sampled on %s px",
                 axis, " x ".join(f"{r * geo.spacing:.0f}" for r in geo.resampled_shape),
                 f" with a {margin} px field-of-view margin" if margin else "",
                 " x ".join(map(str, codec.nominal_size)), geo.spacing, " x ".join(map(str, geo.size)))
    return codec


class _Progress:
    """Counts the progress units of a run (diffusion steps or forward passes) and reports ``(done, total)``."""

    def __init__(self, report: Callable[[int, int], None] | None, total: int) -> None:
        self.report, self.total, self.done = report, total, 0

    def batch(self, units: int) -> Callable[[int], None]:
        """The tick of the next batch: ``tick(i)`` after its unit ``i`` (1-based) of ``units``."""
        base, self.done = self.done, self.done + units
        return lambda i: self.report(base + i, self.total) if self.report is not None else None


def _seeded_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The start-noise generator (on the CPU: the same noise on every device) and the step-noise one of a run
    with ``seed``: the ancestral (DDPM) noise of each step is drawn on the sampling device, from a generator seeded
    there too (the same one on the CPU)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return gen, gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)


def slice_noise_correlation(slice_noise: str, correlation: float, slice_spacing: float,
                            model_spacing: float) -> float | None:
    """The correlation of neighbouring slices' start noise for ``slice_noise`` (None: independent). ``correlated``:
    ``correlation`` holds for slices ``model_spacing`` mm apart, so slices ``slice_spacing`` mm apart correlate by
    ``correlation ** (slice_spacing / model_spacing)`` (thin slices correlate more: the same physical length)."""
    if slice_noise == "independent":
        return None
    if slice_noise == "shared":
        return 1.0
    return float(correlation) ** (slice_spacing / model_spacing)


def _sample_slices(generator: SliceGenerator, cond: np.ndarray, batch: int, seed: int, device: torch.device,
                   progress: _Progress, noise_correlation: float | None = None) -> np.ndarray:
    """Image slices ``[N, c, H, W]`` in [0, 1] (``c`` the generator's image channels) for conditions
    ``[N, C, H, W]`` in [-1, 1], ``batch`` at a time.
    ``noise_correlation`` (None: every slice its own noise, drawn batch by batch): the start noise of neighbouring
    slices correlated by it (:func:`seg2med.sampling.noise.correlated_slice_noise`; 1: the same noise on every slice;
    measured in ``benchmarks/results/throughplane-defaults-cpu.md``)."""
    gen, step_gen = _seeded_generators(seed, device)
    n, _, h, w = cond.shape
    start = None if noise_correlation is None else correlated_slice_noise(n, (generator.channels, h, w),
                                                                         noise_correlation, gen)
    slices = np.empty((n, generator.channels, h, w), dtype=np.float32)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        c = torch.from_numpy(np.ascontiguousarray(cond[lo:hi])).to(device)
        x = generator(c, gen if start is None else start[lo:hi], step_gen, progress.batch(generator.units))
        slices[lo:hi] = to_unit(x[:, :generator.channels].float().cpu().numpy()).clip(0.0, 1.0)
    return slices


def check_planes(model: "LoadedModel", tri_planar: bool, slice_noise: str = "independent",
                 slice_correlation: float = DEFAULT_SLICE_CORRELATION) -> None:
    """Refuse, before any work, plane options ``model`` cannot run: tri-planar sampling of a one-shot model,
    a ``--slice-noise`` not in :data:`SLICE_NOISE`, a ``--slice-correlation`` outside [0, 1], slice noise other than
    independent with tri-planar sampling."""
    if tri_planar and not model.is_diffusion:
        raise ConfigError(f"--tri-planar needs a diffusion model; {model.path.name} is a {model.method} model")
    if slice_noise not in SLICE_NOISE:
        raise ConfigError(f"--slice-noise must be one of {', '.join(SLICE_NOISE)}, got {slice_noise!r}")
    try:
        check_correlation(slice_correlation)
    except ValueError as exc:
        raise ConfigError(f"--slice-correlation: {exc}") from None
    if slice_noise != "independent" and tri_planar:
        raise ConfigError(f"--slice-noise {slice_noise} applies to slice-by-slice sampling; tri-planar sampling draws "
                          "the start noise of the whole volume")


def _to_image(grid01: np.ndarray, window: dict[str, Any], body: np.ndarray) -> np.ndarray:
    """[0, 1] on the input grid -> image units (HU for CT); outside the body: air (CT) / background (MR)."""
    img = np.asarray(denormalize(grid01.astype(np.float32), window), dtype=np.float32)
    img[~body] = float(window["low"])
    return img


def _metadata(model: LoadedModel, t0: float, *, sampler: str | None, steps: int, seed: int, strength: float,
              **run: Any) -> dict[str, Any]:
    """The sidecar record of a generation (sampler, steps, seed and strength None for a one-shot model;
    ``seconds`` since ``t0``)."""
    diffusion = model.is_diffusion
    return {"kind": GENERATED_KIND, "model": str(model.path), "method": model.method, "weights": model.weights,
            "sampler": sampler if diffusion else None, "steps": steps if diffusion else None,
            "seed": seed if diffusion else None, "strength": strength if diffusion else None, **run,
            "seconds": round(time.perf_counter() - t0, 3)}


@dataclass(frozen=True)
class Guidance:
    """How a generation keeps the output on the prior and consistent in 3D (the ``sampling`` block of a model's
    config.json holds the model's defaults, chosen from its measured generalisation and through-plane curves;
    options given to generate override them). A model without the block: no guidance (every value 0, off).

    ``anchor_scale`` (mm) > 0: prior-consistency guidance (:mod:`seg2med.sampling.anchor`) with a Gaussian
    low-pass of that sigma and ``anchor_tolerance`` (image units: HU for CT, normalised units for MR).
    ``fov_margin`` (mm): where the body reaches the edge of the field of view, the prior is continued that far
    into the canvas (:meth:`seg2med.data.geometry.SliceGeometry.extend_edges`), so that the network does not
    draw a body outline at the edge of a scan cropped inside the body.
    ``tri_planar``: sample the whole volume on an isotropic canvas, each step along another axis
    (:mod:`seg2med.sampling.planes`; a model trained on axial, coronal and sagittal slices) instead of slice by
    slice along one axis. ``slice_noise`` (slice-by-slice sampling): the start noise of the slices, ``independent``,
    ``correlated`` or ``shared`` (:func:`slice_noise_correlation`); a model's default other than independent gives
    way to tri-planar sampling asked for.
    """

    anchor_scale: float = 0.0
    anchor_tolerance: float = 0.0
    fov_margin: float = 0.0
    tri_planar: bool = False
    slice_noise: str = "independent"

    OPTIONS = {"anchor_scale": "--anchor-scale", "anchor_tolerance": "--anchor-tolerance", "fov_margin": "--fov-margin",
               "tri_planar": "--tri-planar", "slice_noise": "--slice-noise"}

    def __post_init__(self) -> None:
        for name, flag in self.OPTIONS.items():
            value = getattr(self, name)
            if name == "tri_planar":
                if not isinstance(value, bool):
                    raise ConfigError(f"{flag} must be true or false, got {value!r}")
            elif name == "slice_noise":
                if value not in SLICE_NOISE:
                    raise ConfigError(f"{flag} must be one of {', '.join(SLICE_NOISE)}, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{flag} must be a number >= 0 (0: off), got {value!r}")

    @classmethod
    def of_model(cls, model: "LoadedModel", **given: float | bool | None) -> "Guidance":
        """The model's defaults (config.json ``sampling``), each replaced by a value given (not None)."""
        block = model.config.get("sampling", {})
        where = model.path / "config.json"
        if not isinstance(block, dict):
            raise InputError(f"{where}: 'sampling' must be a JSON object")
        unknown = sorted(set(block) - set(cls.OPTIONS))
        if unknown:
            raise InputError(f"{where}: sampling: unknown keys {unknown} (known: {', '.join(cls.OPTIONS)})")
        try:
            defaults = cls(**block)
        except ConfigError as exc:
            raise InputError(f"{where}: sampling: {exc}") from None
        out = replace(defaults, **{k: (v if isinstance(v, (bool, str)) else float(v)) for k, v in given.items()
                                   if v is not None})
        if out.tri_planar and given.get("slice_noise") is None:
            out = replace(out, slice_noise="independent")  # the model's slice-noise default is for slice-by-slice
        return out

    def anchor(self, model: "LoadedModel") -> PriorAnchor | None:
        """The anchor on ``model``'s slice grid (sigma in pixels, tolerance mapped to [-1, 1] through its
        intensity window), or None (off, or a one-shot model)."""
        if self.anchor_scale == 0 or not model.is_diffusion:
            return None
        window = model.spec.image_window()
        span = float(window["high"]) - float(window["low"])
        return PriorAnchor(scale=self.anchor_scale / float(model.spec.spacing), tolerance=2.0 * self.anchor_tolerance / span)

    def margin_px(self, model: "LoadedModel") -> int:
        """``fov_margin`` in pixels of the model's slice grid."""
        return int(round(self.fov_margin / float(model.spec.spacing)))

    def record(self, model: "LoadedModel") -> dict[str, Any]:
        """The sidecar's record: the values used, and whether the anchor was applied."""
        return {"anchor": {"scale_mm": self.anchor_scale, "tolerance": self.anchor_tolerance}
                if self.anchor(model) is not None else None, "fov_margin_mm": self.fov_margin,
                "tri_planar": self.tri_planar}


def model_sequences(model: LoadedModel, contrast_phase: str | None = None) -> list[ImagingSequence]:
    """The sequence of each image channel: a multi-contrast model's contrasts, else :func:`model_sequence`."""
    if not model.spec.contrasts:
        return [model_sequence(model, contrast_phase)]
    if contrast_phase is not None:
        raise ConfigError(f"--contrast-phase applies to CT models; {model.path.name} generates "
                          f"{', '.join(model.spec.contrast_names)}")
    return [sequence_from_config(dict(c)) for c in model.spec.sequences()]


def model_sequence(model: LoadedModel, contrast_phase: str | None = None) -> ImagingSequence:
    """The sequence ``model`` was trained with; for a CT model ``contrast_phase`` replaces its contrast phase
    (the prior's iodine enhancement, :mod:`seg2med.physics.contrast`)."""
    config = dict(model.sequence_config)
    if contrast_phase is not None:
        if config.get("name") != "ct":
            raise ConfigError(f"--contrast-phase applies to CT models; {model.path.name} is a {config.get('name')} model")
        config["contrast_phase"] = contrast_phase
    return sequence_from_config(config)


def _tri_planar_samples(model: LoadedModel, labels: Volume, norm: np.ndarray, body: np.ndarray, margin: int,
                        guidance: Guidance, *, steps: int, sampler: str | None, seed: int, samples: int, batch: int,
                        device: torch.device, precision: str, strength: float,
                        progress: Callable[[int, int], None] | None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``samples`` volumes in [0, 1] on the input grid by tri-planar sampling of the normalised prior ``norm``, and
    the canvas record of the sidecar."""
    trained = tuple(model.spec.axes)
    axes = trained + tuple(a for a in ("axial", "coronal", "sagittal") if a not in trained)
    if len(trained) < 3:
        log.warning("%s was trained on %s slices only: tri-planar sampling also runs it on %s slices, outside its "
                    "training data", model.path.name, " and ".join(trained), " and ".join(axes[len(trained):]))
    generator = model.volume_generator(steps, sampler, device, precision, strength, guidance.anchor(model), axes, batch)
    codec: VolumeCodec = model.spec.volume_codec(labels.affine, labels.shape, model.size_multiple, margin)
    canvas = codec.encode({"prior": norm}, body)
    prior = torch.from_numpy(to_signed(codec.geometry.extend_edges(canvas["prior"], margin))).float()
    log.info("tri-planar sampling on a %s px canvas at %g mm (%s)", " x ".join(map(str, codec.geometry.size)),
             codec.geometry.spacing, ", ".join(axes))
    ticks = _Progress(progress, samples * generator.units)
    outs = []
    for k in range(samples):
        gen, step_gen = _seeded_generators(sample_seed(seed, k), device)
        x = generator(prior.to(device), gen, step_gen, ticks.batch(generator.units))
        vol = to_unit(x[0].float().cpu().numpy()).clip(0.0, 1.0)
        vol[canvas["mask"] == 0] = 0.0
        outs.append(codec.decode(vol, order=1))
    slices = generator.slices_run
    return outs, {"axes": list(axes), "canvas": codec.geometry.to_dict(),
                           "slice_size": list(codec.geometry.size),
                           "network_slices_per_step": round(float(np.mean(slices)), 1) if slices else 0.0}


def generate_volume(
    labels: Volume,
    scheme: LabelScheme,
    model: LoadedModel,
    *,
    tissues: TissueTable | None = None,
    steps: int = DEFAULT_STEPS,
    sampler: str | None = None,
    seed: int = 0,
    samples: int = 1,
    batch: int = 8,
    axis: str | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    strength: float = 1.0,
    anchor_scale: float | None = None,
    anchor_tolerance: float | None = None,
    fov_margin: float | None = None,
    tri_planar: bool | None = None,
    slice_noise: str | None = None,
    slice_correlation: float = DEFAULT_SLICE_CORRELATION,
    contrast_phase: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Sample ``samples`` synthetic volumes for a canonical label volume (see module docstring).

    ``strength`` < 1: prior-anchored start (see :meth:`LoadedModel.slice_generator`). ``anchor_scale``,
    ``anchor_tolerance``, ``fov_margin``, ``tri_planar``, ``slice_noise``: see :class:`Guidance` (None: the model's
    default); tri-planar
    sampling ignores ``axis`` and samples on an isotropic canvas at the model's spacing. ``slice_noise``: ``correlated``
    correlates the start noise of neighbouring slices (``slice_correlation`` for slices one model spacing apart),
    ``shared`` starts every slice from the same noise (slice-by-slice sampling only; :func:`slice_noise_correlation`). ``contrast_phase``
    (CT models): the prior in that phase instead of the model's own (:func:`model_sequence`). For the one-shot
    methods (``unet``, ``pix2pix``, ``cyclegan``, ``prior``) ``steps``, ``sampler``, ``seed`` and
    ``strength`` are ignored (recorded as None in the metadata) and the ``samples`` volumes are
    identical (std map of zeros). The metadata's ``qc`` is the quality check of sample 0
    (:func:`seg2med.inference.qc.organ_qc`; a warning names the organs that fail it).
    """
    sampler = check_sampling(model, steps, sampler, samples, batch, strength)
    device = torch.device(device)
    guidance = Guidance.of_model(model, anchor_scale=anchor_scale, anchor_tolerance=anchor_tolerance,
                                 fov_margin=fov_margin, tri_planar=tri_planar, slice_noise=slice_noise)
    slice_noise = guidance.slice_noise
    check_planes(model, guidance.tri_planar, slice_noise, slice_correlation)
    t0 = time.perf_counter()
    spec = model.spec
    seqs = model_sequences(model, contrast_phase)
    names = spec.contrast_names
    if names and guidance.tri_planar:
        raise ConfigError(f"--tri-planar samples single-contrast models; {model.path.name} generates {', '.join(names)}")
    priors = [simulate_prior(labels.array, scheme, seq, tissues) for seq in seqs]
    body = labels.array != 0
    normed = [spec.normalize_prior(p, body) for p in priors]
    norms, prior_params = [n for n, _ in normed], [p for _, p in normed]
    margin = guidance.margin_px(model)
    if guidance.tri_planar:
        outs, grid = _tri_planar_samples(model, labels, norms[0], body, margin, guidance, steps=steps, sampler=sampler,
                                         seed=seed, samples=samples, batch=batch, device=device,
                                         precision=precision, strength=strength, progress=progress)
        outs = [[o] for o in outs]
        axis = "tri-planar"
    else:
        axis = _slicing_axis(model, axis)
        generator = model.slice_generator(steps, sampler, device, precision, strength, guidance.anchor(model))
        codec = _plan_codec(model, labels, axis, margin)
        sliced = codec.encode({f"prior{c}": n for c, n in enumerate(norms)}, body)
        cond = np.concatenate([to_signed(stack_neighbours(codec.geometry.extend_edges(sliced[f"prior{c}"], margin),
                                                          model.neighbours)) for c in range(len(norms))], axis=1)
        correlation = slice_noise_correlation(slice_noise, slice_correlation, codec.slice_spacing, spec.spacing)
        runs = samples if generator.stochastic else 1  # a one-shot model gives every sample the first one
        ticks = _Progress(progress, runs * int(np.ceil(len(cond) / batch)) * generator.units)
        outs = []
        for k in range(runs):
            slices = _sample_slices(generator, cond, batch, sample_seed(seed, k), device, ticks, correlation)
            slices[np.broadcast_to(sliced["mask"][:, None] == 0, slices.shape)] = 0.0
            outs.append([codec.decode(slices[:, c], order=1, fill=0.0) for c in range(slices.shape[1])])
        grid = {"slice_size": list(codec.geometry.size),
                "slice_noise_correlation": correlation if model.is_diffusion else None}
    windows = [spec.image_window(c) for c in range(len(seqs))]
    outs = [[_to_image(o, windows[c], body) for c, o in enumerate(out)] for out in outs]
    outs += [[o.copy() for o in outs[0]] for _ in range(samples - len(outs))]  # a one-shot model ran once
    stds = [labels.like(np.std(np.stack([out[c] for out in outs]), axis=0).astype(np.float32)) if samples > 1 else None
            for c in range(len(seqs))]
    meta = _metadata(model, t0, sampler=sampler, steps=steps, seed=seed, strength=strength,
                     **guidance.record(model),
                     slice_noise=None if guidance.tri_planar or not model.is_diffusion else slice_noise,
                     slice_correlation=slice_correlation if slice_noise == "correlated" and model.is_diffusion
                     and not guidance.tri_planar else None,
                     samples=samples, batch=batch, axis=axis, **grid, device=str(device), precision=precision,
                     modality=spec.modality, sequence=seqs[0].to_config(),
                     prior_normalization=prior_params[0] if not names else prior_params,
                     image_normalization=windows[0] if not names else windows)
    qcs = [organ_qc(outs[0][c], labels.array, scheme, spec.modality, seq, tissues, prior=priors[c])  # sample 0
           for c, seq in enumerate(seqs)]
    meta["qc"] = qcs[0]
    if names:
        meta["contrasts"] = [{"name": n, "sequence": seq.to_config()} for n, seq in zip(names, seqs)]
        meta["qc_contrasts"] = dict(zip(names, qcs))
    for qc in qcs:
        warning = qc_warning(qc)
        if warning:
            log.warning(warning)
    first = [labels.like(out[0]) for out in outs]
    result = GenerationResult(first, labels.like(priors[0].astype(np.float32)), stds[0], meta)
    if names:
        result.contrasts = names
        result.channels = {n: [labels.like(out[c]) for out in outs] for c, n in enumerate(names)}
        result.channel_priors = {n: labels.like(priors[c].astype(np.float32)) for c, n in enumerate(names)}
        result.channel_stds = dict(zip(names, stds))
    return result
