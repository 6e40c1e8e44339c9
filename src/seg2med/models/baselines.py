"""Baseline generators, discriminators, the segmenter network and the prior-only map (MONAI), as JSON-ready specs.

Every network of a non-diffusion run is stored in its ``config.json`` as a
*network spec* ``{"class": NAME, "args": {...}}``: NAME is one of
:data:`NETWORK_CLASSES` (``monai.networks.nets``) and ``args`` are exactly the
constructor's keyword arguments, so a run folder rebuilds its networks
without relying on code defaults.

Methods (``seg2med train --method``):

* ``unet``: ``AttentionUnet`` regression prior -> image (L1).
* ``pix2pix``: the same generator + a conditional ``PatchDiscriminator``
  (input: prior and image channels).
* ``cyclegan``: generators prior -> image and image -> prior, one
  ``PatchDiscriminator`` per domain.
* ``prior``: no network; :class:`PriorMap`, an affine intensity map of the
  prior fitted on the training split.

All generators work in the diffusion model's units: condition (prior) and
image mapped from [0, 1] to [-1, 1]. ``output_activation`` (``tanh`` for the
GANs, ``none`` for the regression U-Net) is applied to the raw network output.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from seg2med.data.normalize import to_signed, to_unit
from seg2med.errors import ConfigError
from seg2med.models.registry import BASELINE_METHODS, REGISTRY, check_method

NETWORK_CLASSES = ("AttentionUnet", "UNet", "PatchDiscriminator", "FlexibleUNet")
#: Encoders of the segmenter's ``FlexibleUNet`` (MONAI ResNets, randomly initialised: nothing is downloaded)
SEGMENTER_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50")
#: Down-sampling of a FlexibleUNet (its encoders halve the slices five times)
FLEXIBLE_UNET_FACTOR = 32
OUTPUT_ACTIVATIONS = ("none", "tanh")

#: Networks of each baseline method (names in config.json "model.networks"), from the method registry.
METHOD_NETWORKS: dict[str, tuple[str, ...]] = {n: REGISTRY[n].networks for n in BASELINE_METHODS}

#: Sizes of the baseline networks (``--preset``): generator channels per level and discriminator width / depth.
BASELINE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"generator": (64, 128, 256, 512), "discriminator": 64, "discriminator_layers": 3},
    "small": {"generator": (32, 64, 128, 256), "discriminator": 32, "discriminator_layers": 3},
    "tiny": {"generator": (16, 32, 64, 128), "discriminator": 16, "discriminator_layers": 2},
}


# --------------------------------------------------------------------------- network specs
def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def network_spec(cls: str, **args: Any) -> dict[str, Any]:
    """A JSON-ready ``{"class", "args"}`` spec (tuples become lists)."""
    if cls not in NETWORK_CLASSES:
        raise ConfigError(f"unknown network class {cls!r} (known: {', '.join(NETWORK_CLASSES)})")
    return {"class": cls, "args": _jsonable(args)}


def _constructor_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to what MONAI expects (an activation/norm given as [name, {options}] is a tuple)."""
    out = {}
    for k, v in args.items():
        if k in ("activation", "act", "norm") and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def build_network(spec: Mapping[str, Any]) -> torch.nn.Module:
    """Instantiate a network spec (see module docstring); a bad spec is a :class:`ConfigError`."""
    from monai.networks import nets

    if not isinstance(spec, Mapping) or spec.get("class") not in NETWORK_CLASSES or not isinstance(spec.get("args"), Mapping):
        raise ConfigError(f"network spec must be {{class: one of {', '.join(NETWORK_CLASSES)}, args: {{...}}}}, got {spec!r}")
    try:
        return getattr(nets, spec["class"])(**_constructor_args(spec["args"]))
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"network {spec['class']}: invalid arguments ({msg})") from None


def downsampling(spec: Mapping[str, Any]) -> int:
    """Total down-sampling factor of a U-Net spec (slices must be divisible by it)."""
    if spec.get("class") == "FlexibleUNet":
        return FLEXIBLE_UNET_FACTOR
    f = 1
    for s in spec["args"].get("strides", ()):
        f *= int(s)
    return f


def generator_spec(in_channels: int, out_channels: int, channels: tuple[int, ...],
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A 2D ``AttentionUnet`` (or, with ``class: UNet`` in ``overrides``, a MONAI ``UNet``) generator spec."""
    over = dict(overrides or {})
    cls = over.pop("class", "AttentionUnet")
    if cls not in ("AttentionUnet", "UNet"):
        raise ConfigError(f"generator class must be AttentionUnet or UNet, got {cls!r}")
    fixed = {"spatial_dims", "in_channels", "out_channels"} & set(over)
    if fixed:
        raise ConfigError(f"generator: {sorted(fixed)} are set by the method and cannot be overridden")
    chans = tuple(int(c) for c in over.pop("channels", channels))
    args: dict[str, Any] = {"spatial_dims": 2, "in_channels": int(in_channels), "out_channels": int(out_channels),
                            "channels": chans, "strides": (2,) * (len(chans) - 1), "kernel_size": 3,
                            "up_kernel_size": 3, "dropout": 0.0}
    if cls == "UNet":
        args["num_res_units"] = 2
    args.update(over)
    return network_spec(cls, **args)


def discriminator_spec(in_channels: int, channels: int, num_layers_d: int,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A 2D ``PatchDiscriminator`` spec (pix2pix 70x70-style: 4x4 convolutions, LeakyReLU 0.2, batch norm)."""
    over = dict(overrides or {})
    over.pop("class", None)
    fixed = {"spatial_dims", "in_channels"} & set(over)
    if fixed:
        raise ConfigError(f"discriminator: {sorted(fixed)} are set by the method and cannot be overridden")
    args: dict[str, Any] = {"spatial_dims": 2, "in_channels": int(in_channels), "out_channels": 1,
                            "channels": int(channels), "num_layers_d": int(num_layers_d), "kernel_size": 4,
                            "activation": ["LEAKYRELU", {"negative_slope": 0.2}], "norm": "BATCH", "bias": False,
                            "padding": 1, "dropout": 0.0, "last_conv_kernel_size": 4}
    args.update(over)
    return network_spec("PatchDiscriminator", **args)


def segmenter_spec(n_classes: int, channels: tuple[int, ...] = (16, 32, 64, 128), strides: tuple[int, ...] | None = None,
                   num_res_units: int = 2, in_channels: int = 1, backbone: str | None = None) -> dict[str, Any]:
    """The auxiliary segmenter: a 2D MONAI ``UNet`` image slice (``in_channels``: one per contrast) -> ``n_classes``
    logits; with ``backbone`` a ``FlexibleUNet`` with that ResNet encoder (``pretrained`` off: nothing is downloaded)
    and ``channels`` as its decoder widths (five, deepest first; the default ``UNet`` widths are not used)."""
    if n_classes < 2:
        raise ConfigError(f"segmenter: need at least 2 classes (background and one label), got {n_classes}")
    if backbone is not None:
        if backbone not in SEGMENTER_BACKBONES:
            raise ConfigError(f"segmenter: backbone must be one of {', '.join(SEGMENTER_BACKBONES)}, got {backbone!r}")
        decoder = tuple(int(c) for c in channels) if len(channels) == 5 else (128, 64, 32, 16, 8)
        return network_spec("FlexibleUNet", in_channels=int(in_channels), out_channels=int(n_classes), backbone=backbone,
                            pretrained=False, spatial_dims=2, decoder_channels=decoder)
    chans = tuple(int(c) for c in channels)
    if len(chans) < 2:
        raise ConfigError(f"segmenter: need at least 2 channel levels, got {list(chans)}")
    return network_spec("UNet", spatial_dims=2, in_channels=int(in_channels), out_channels=int(n_classes), channels=chans,
                        strides=tuple(strides) if strides is not None else (2,) * (len(chans) - 1),
                        num_res_units=int(num_res_units))


# --------------------------------------------------------------------------- the "model" block of a baseline run
@dataclass
class BaselineConfig:
    """The networks of a ``unet`` / ``pix2pix`` / ``cyclegan`` run (config.json ``model`` block)."""

    method: str
    preset: str = "small"
    neighbours: int = 0
    output_activation: str = "none"
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_channels: int = 1

    def __post_init__(self) -> None:
        self.method = check_method(self.method, BASELINE_METHODS)
        self.neighbours = int(self.neighbours)
        if self.neighbours < 0:
            raise ConfigError("model: neighbours must be >= 0")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(f"model: unknown output_activation {self.output_activation!r} (known: {', '.join(OUTPUT_ACTIVATIONS)})")
        want = METHOD_NETWORKS[self.method]
        if sorted(self.networks) != sorted(want):
            raise ConfigError(f"model: method {self.method} needs networks {list(want)}, got {sorted(self.networks)}")
        for name, spec in self.networks.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("args"), Mapping):
                raise ConfigError(f"model: network {name!r} must be {{class: ..., args: {{...}}}}")
        self.networks = {k: network_spec(str(v.get("class")), **v["args"]) for k, v in self.networks.items()}

    @property
    def condition_channels(self) -> int:
        return 1 + 2 * self.neighbours

    @classmethod
    def create(cls, method: str, preset: str = "small", neighbours: int = 0, generator: Mapping[str, Any] | None = None,
               discriminator: Mapping[str, Any] | None = None, output_activation: str | None = None) -> BaselineConfig:
        """The networks of ``method`` at ``preset`` size; ``generator`` / ``discriminator`` override their arguments."""
        method = check_method(method, BASELINE_METHODS)
        if preset not in BASELINE_PRESETS:
            raise ConfigError(f"unknown model preset {preset!r} (known: {', '.join(BASELINE_PRESETS)})")
        if discriminator and method == "unet":
            raise ConfigError("model: method unet has no discriminator")
        p = BASELINE_PRESETS[preset]
        c = 1 + 2 * int(neighbours)

        def gen(i: int, o: int) -> dict[str, Any]:
            return generator_spec(i, o, p["generator"], generator)

        def disc(i: int) -> dict[str, Any]:
            return discriminator_spec(i, p["discriminator"], p["discriminator_layers"], discriminator)

        if method == "unet":
            nets = {"generator": gen(c, 1)}
        elif method == "pix2pix":
            nets = {"generator": gen(c, 1), "discriminator": disc(c + 1)}
        else:
            nets = {"generator": gen(c, 1), "generator_inverse": gen(1, c), "discriminator_image": disc(1),
                    "discriminator_prior": disc(c)}
        act = output_activation if output_activation is not None else ("none" if method == "unet" else "tanh")
        return cls(method, preset, int(neighbours), act, nets)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], method: str | None = None) -> BaselineConfig:
        """Read a run's ``model`` block (``method`` from the run's top level when not in the block)."""
        names = {f.name for f in dataclasses.fields(cls)} | {"condition_channels"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"baseline model config: unknown keys {unknown} (known: {sorted(names)})")
        d = {k: v for k, v in data.items() if k != "condition_channels"}
        if method is not None:
            d.setdefault("method", method)
        return cls(**copy.deepcopy(d))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "preset": self.preset, "neighbours": self.neighbours,
                "image_channels": self.image_channels, "condition_channels": self.condition_channels,
                "output_activation": self.output_activation, "networks": copy.deepcopy(self.networks)}

    def build(self, name: str) -> torch.nn.Module:
        return build_network(self.networks[name])

    def check_slice_size(self, size: int | tuple[int, int], where: str) -> None:
        """The U-Nets halve the slices per level: the slice size must divide evenly."""
        h, w = (size, size) if isinstance(size, int) else size
        for name, spec in self.networks.items():
            f = downsampling(spec) if spec["class"] != "PatchDiscriminator" else 1
            if h % f or w % f:
                raise ConfigError(f"slice size {h}x{w} of {where} is not divisible by {f} (down-sampling of the {name})")


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The output activation of a generator (``none`` or ``tanh``)."""
    return torch.tanh(x) if activation == "tanh" else x


class OneShotGenerator(torch.nn.Module):
    """Inference wrapper: condition in [-1, 1] -> image in [-1, 1] (activation, then clamped)."""

    def __init__(self, net: torch.nn.Module, activation: str = "none") -> None:
        super().__init__()
        self.net, self.activation = net, activation

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return apply_activation(self.net(cond), self.activation).clamp(-1.0, 1.0)


# --------------------------------------------------------------------------- the prior-only floor
class PriorMap(torch.nn.Module):
    """The ``prior`` method: ``image01 = clip(scale * prior01 + offset, 0, 1)`` on the centre prior channel.

    Works in the dataset's normalised [0, 1] units (prior and image windows of
    the training data); takes and returns [-1, 1] like the generators so
    generation treats every one-shot method alike.
    """

    def __init__(self, scale: float = 1.0, offset: float = 0.0, neighbours: int = 0) -> None:
        super().__init__()
        self.scale, self.offset, self.neighbours = float(scale), float(offset), int(neighbours)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        p01 = to_unit(cond[:, self.neighbours : self.neighbours + 1].float())
        return to_signed((self.scale * p01 + self.offset).clamp(0.0, 1.0))

    def map01(self, prior01: Any) -> Any:
        """The map on [0, 1] arrays or tensors (what :meth:`forward` does, without the [-1, 1] round trip)."""
        y = self.scale * prior01 + self.offset
        return y.clamp(0.0, 1.0) if hasattr(y, "clamp") else y.clip(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "affine", "scale": self.scale, "offset": self.offset, "neighbours": self.neighbours,
                "formula": "image01 = clip(scale * prior01 + offset, 0, 1) on the centre prior slice",
                "units": "normalised [0, 1]: data.image_normalization maps image01 back to image units"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorMap:
        if data.get("kind") != "affine":
            raise ConfigError(f"prior model: unknown kind {data.get('kind')!r} (expected 'affine')")
        try:
            return cls(float(data["scale"]), float(data["offset"]), int(data.get("neighbours", 0)))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("prior model: needs numeric 'scale' and 'offset'") from None
