"""The method registry: one entry per method, used by the CLI, training, inference and evaluation.

An entry names what the method is (its kind and networks), how it is trained
(``recipe``: ``(preset, blocks, model, scheduler, training, base) -> Recipe``,
see :mod:`seg2med.training.loop`) and how a run of it is loaded for generation
(``loader``: ``(path, config, method, ema, device) -> LoadedModel``, see
:mod:`seg2med.inference.generate`). The two are given as ``"module:function"``
import paths and resolved when first used, because the registry sits below
the layers that implement them (``training`` and ``inference`` import it;
it may not import them). Adding a method = one entry here + its learner and loader.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seg2med.errors import ConfigError

KIND_DIFFUSION, KIND_ONE_SHOT, KIND_SEGMENTATION = "diffusion", "one-shot", "segmentation"


@dataclass(frozen=True)
class Method:
    """One method: name, kind (diffusion sampler / one-shot prior -> image / segmenter) and where its parts live."""

    name: str
    kind: str
    summary: str  # one line, for --help and docs
    recipe: str  # "module:function" building its training Recipe
    loader: str | None = None  # "module:function" loading a run for generation (image generators only)
    networks: tuple[str, ...] = ()  # networks saved with a run (config.json "model.networks"; baselines)
    takes_scheduler: bool = False  # accepts --scheduler / --prediction / scheduler: options

    @property
    def generates_images(self) -> bool:
        return self.loader is not None

    def part(self, which: str) -> Callable[..., Any]:
        """The ``recipe`` or ``loader`` function (imported on first use)."""
        path = getattr(self, which)
        if path is None:
            raise ConfigError(f"method {self.name} has no {which}")
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("ddpm", KIND_DIFFUSION, "conditional diffusion prior -> image (DDPM/DDIM/RFlow sampling)",
           "seg2med.training.diffusion:recipe_from_options", "seg2med.inference.generate:load_diffusion",
           takes_scheduler=True),
    Method("unet", KIND_ONE_SHOT, "AttentionUnet regression prior -> image, L1",
           "seg2med.training.baselines:recipe_from_options", "seg2med.inference.generate:load_one_shot",
           networks=("generator",)),
    Method("pix2pix", KIND_ONE_SHOT, "conditional GAN: the UNet generator + a PatchGAN discriminator, LSGAN + L1",
           "seg2med.training.baselines:recipe_from_options", "seg2med.inference.generate:load_one_shot",
           networks=("generator", "discriminator")),
    Method("cyclegan", KIND_ONE_SHOT, "unpaired cycle-consistent GAN prior <-> image",
           "seg2med.training.baselines:recipe_from_options", "seg2med.inference.generate:load_one_shot",
           networks=("generator", "generator_inverse", "discriminator_image", "discriminator_prior")),
    Method("prior", KIND_ONE_SHOT, "no learning: the prior mapped by a least-squares affine intensity map (the floor)",
           "seg2med.training.baselines:prior_recipe_from_options", "seg2med.inference.generate:load_one_shot"),
    Method("segmenter", KIND_SEGMENTATION, "auxiliary 2D MONAI UNet, real image slices -> labels (DiceCE), for Dice / Frechet-Seg",
           "seg2med.training.segmenter:recipe_from_options"),
)}

def generators() -> tuple[str, ...]:
    """The image generators: what ``seg2med train --method`` trains and ``generate`` / ``benchmark`` use."""
    return tuple(n for n, m in REGISTRY.items() if m.generates_images)


#: :func:`generators` when the package loads (for help texts and defaults).
GENERATORS: tuple[str, ...] = generators()
#: The one-shot baselines with networks (``unet``, ``pix2pix``, ``cyclegan``).
BASELINE_METHODS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.kind == KIND_ONE_SHOT and m.networks)
DEFAULT_METHOD = "ddpm"

#: sampling steps of ``generate`` unless asked otherwise: DDIM-8 is within SSIM 0.999 of DDIM-50 on the shipped
#: x0-prediction models and 6x faster (benchmarks/results/sampling-cpu.md)
DEFAULT_STEPS = 8
#: How the start noise of the slices of one volume is drawn (``--slice-noise``): each slice its own noise,
#: neighbouring slices' noise correlated (:mod:`seg2med.sampling.noise`), or one noise for every slice.
SLICE_NOISE = ("independent", "correlated", "shared")
#: ``--slice-correlation``: correlation of the start noise of two slices one model spacing apart (``correlated``).
DEFAULT_SLICE_CORRELATION = 0.9
SEGMENTER = "segmenter"


def get_method(name: str, allowed: tuple[str, ...] | None = None) -> Method:
    """The registry entry of ``name`` (case-insensitive) if it is one of ``allowed`` (default: the image
    generators); a :class:`ConfigError` otherwise."""
    allowed = generators() if allowed is None else allowed
    m = str(name).lower()
    if m not in allowed:
        raise ConfigError(f"unknown method {name!r} (known: {', '.join(allowed)})")
    return REGISTRY[m]


def check_method(method: str, allowed: tuple[str, ...] | None = None) -> str:
    """``method`` (lower case) if it is one of ``allowed``; a :class:`ConfigError` otherwise."""
    return get_method(method, allowed).name


def methods_help(names: tuple[str, ...] = GENERATORS) -> str:
    """``ddpm | unet | ...`` for option help texts."""
    return " | ".join(names)
