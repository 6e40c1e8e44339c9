"""The auxiliary 2D segmenter (``seg2med train-segmenter``): load it, segment volumes, extract slice features.

Used to measure anatomical fidelity of synthetic images (Dice of the
re-segmented image against the input labels) and, through
:meth:`Segmenter.features`, a Fréchet distance in the segmenter's feature
space.

:func:`segment_volume` runs exactly the preprocessing of the training data:
normalisation of the modality (CT window / MR percentile window inside the
body), closest-RAS reorientation, in-plane resampling and pad/crop to the
segmenter's slice size, then argmax per slice and the geometry undone by
nearest neighbour, so the labels lie on the input grid (same affine and shape).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg2med.data.codec import SliceCodec
from seg2med.data.spec import DataSpec
from seg2med.errors import ConfigError, InputError
from seg2med.io import Volume, check_same_grid
from seg2med.io.checkpoints import WEIGHTS, load_weights_into, read_checkpoint_config
from seg2med.io.nifti import smallest_int_dtype
from seg2med.models.baselines import build_network, downsampling
from seg2med.models.registry import SEGMENTER

log = logging.getLogger(__name__)


def _bottleneck(net: torch.nn.Module) -> torch.nn.Module:
    """The deepest block of a MONAI ``UNet`` (inside the nested skip connections); of a ``FlexibleUNet`` its encoder
    (whose last output is the deepest stage)."""
    from monai.networks.layers import SkipConnection

    if hasattr(net, "encoder") and not hasattr(net, "model"):
        return net.encoder
    m = net.model
    while isinstance(m, torch.nn.Sequential) and len(m) == 3 and isinstance(m[1], SkipConnection):
        m = m[1].submodule
    return m


def _as_batch(slices: Any, channels: int = 1) -> torch.Tensor:
    """[N, H, W] or [N, C, H, W] (numpy or torch) -> float32 tensor [N, C, H, W] (``C`` = ``channels``)."""
    x = slices.detach().cpu() if isinstance(slices, torch.Tensor) else torch.from_numpy(np.asarray(slices))
    x = x.float()
    if x.ndim == 3 and channels == 1:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != channels:
        raise InputError(f"expected image slices [N, {channels}, H, W]{' or [N, H, W]' if channels == 1 else ''}, "
                         f"got shape {tuple(x.shape)}")
    return x


def _pooled(out: Any) -> torch.Tensor:
    """Global average pool of a block's output (an encoder's list of stages: its deepest)."""
    deepest = out[-1] if isinstance(out, (list, tuple)) else out
    return deepest.float().mean(dim=(-2, -1)).cpu()


@dataclass
class Segmenter:
    """A trained segmenter: network channel ``c`` predicts label id ``classes[c]`` (``classes[0]`` = 0, background)."""

    network: torch.nn.Module
    classes: list[int]
    class_names: dict[int, str] | None
    config: dict[str, Any]
    path: Path
    device: torch.device

    @property
    def data(self) -> dict[str, Any]:
        return self.config.get("data", {})

    @property
    def spec(self) -> DataSpec:
        """The data block of its training run, typed (its defaults applied)."""
        return DataSpec.from_dict(self.data, source=self.path / "config.json")

    @property
    def factor(self) -> int:
        return downsampling(self.config["model"]["network"])

    @property
    def in_channels(self) -> int:
        """Input channels: one per contrast of a multi-contrast segmenter (its data block's ``contrasts``), else 1."""
        return int(self.config["model"]["network"]["args"].get("in_channels", 1))

    def _padded(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Zero-pad H and W (bottom/right) up to a multiple of the down-sampling factor."""
        f, (h, w) = self.factor, x.shape[-2:]
        ph, pw = (-h) % f, (-w) % f
        return (torch.nn.functional.pad(x, (0, pw, 0, ph)) if ph or pw else x), h, w

    @torch.no_grad()
    def logits(self, slices: Any) -> torch.Tensor:
        """Class logits ``[N, C, H, W]`` (CPU) for image slices in [0, 1] normalised like the training data."""
        x, h, w = self._padded(_as_batch(slices, self.in_channels))
        return self.network(x.to(self.device)).float().cpu()[..., :h, :w]

    @torch.no_grad()
    def predict(self, slices: Any, batch: int = 16) -> np.ndarray:
        """Label ids ``[N, H, W]`` (argmax over the classes) for image slices in [0, 1]."""
        x = _as_batch(slices, self.in_channels)
        lut = torch.as_tensor(self.classes, dtype=torch.int64)
        out = [lut[self.logits(x[i : i + batch]).argmax(1)] for i in range(0, x.shape[0], max(1, batch))]
        return torch.cat(out).numpy() if out else np.zeros((0, *x.shape[-2:]), np.int64)

    @torch.no_grad()
    def features(self, slices: Any, batch: int = 16) -> np.ndarray:
        """Per-slice feature vectors ``[N, D]`` for a Fréchet distance in the segmenter's feature space.

        ``D`` = channels of the deepest U-Net level (``channels[-1]``): the
        bottleneck block's activations, global-average-pooled over space.
        Inputs are image slices in [0, 1] normalised like the training data
        (dataset window, 0 outside the body), any size: they are zero-padded
        to a multiple of the down-sampling factor. float64 output.
        """
        x = _as_batch(slices, self.in_channels)
        feats: list[torch.Tensor] = []
        hook = _bottleneck(self.network).register_forward_hook(lambda mod, inp, out: feats.append(_pooled(out)))
        try:
            for i in range(0, x.shape[0], max(1, batch)):
                xb, _, _ = self._padded(x[i : i + batch])
                self.network(xb.to(self.device))
        finally:
            hook.remove()
        return torch.cat(feats).double().numpy() if feats else np.zeros((0, 0))


def _shipped_dir():
    from importlib import resources

    return resources.files("seg2med") / "resources" / "segmenters"


def list_segmenters() -> tuple[str, ...]:
    """Names of the segmenters shipped inside the package (``--segmenter ct-seg-demo``)."""
    root = _shipped_dir()
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()))


def resolve_segmenter(path: str | Path) -> Path:
    """A segmenter run folder, or the name of a shipped segmenter."""
    p = Path(path)
    if not p.exists() and str(path) in list_segmenters():
        return Path(str(_shipped_dir() / str(path)))
    return p


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """Load a ``seg2med train-segmenter`` run folder (config.json + model.safetensors) or a shipped segmenter by
    name (:func:`list_segmenters`)."""
    p = resolve_segmenter(path)
    cfg = read_checkpoint_config(p)
    if cfg.get("method") != SEGMENTER:
        raise InputError(f"{p}: not a segmenter run (method {cfg.get('method')!r}; train one with seg2med train-segmenter)")
    model = cfg["model"]
    try:
        net = build_network(model["network"])
        classes = [int(c) for c in model["classes"]]
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{p / 'config.json'}: invalid segmenter model block ({exc})") from None
    name = cfg.get("weights", {}).get("model", WEIGHTS)
    load_weights_into(net, p / name, "network")
    names = model.get("class_names")
    dev = torch.device(device)
    net.eval().to(dev)
    return Segmenter(net, classes, {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None,
                     cfg, p, dev)


def _body_mask(volume: Volume, modality: str) -> np.ndarray:
    from seg2med.anatomy.contour import body_mask_from_ct, body_mask_from_mr

    arr = np.asarray(volume.array, dtype=np.float32)
    if modality == "ct":
        return body_mask_from_ct(arr, volume.spacing, affine=volume.affine)
    return body_mask_from_mr(arr, volume.spacing, affine=volume.affine)


def _segmenter_slices(volume: Volume | Sequence[Volume], segmenter: Segmenter, axis: str, body: np.ndarray | None
                      ) -> tuple[dict[str, np.ndarray], SliceCodec]:
    """The segmenter's input slices of ``volume`` (a multi-contrast segmenter: one volume per contrast, in its
    order): its training normalisation (each contrast on its own), reorientation, resampling and size; ``image``
    ``[N, H, W]``, or ``[N, C, H, W]`` for several contrasts."""
    vols = [volume] if isinstance(volume, Volume) else list(volume)
    spec = segmenter.spec
    if len(vols) != segmenter.in_channels:
        names = f" ({', '.join(spec.contrast_names)})" if spec.contrasts else ""
        raise InputError(f"segment: the segmenter {segmenter.path.name} takes {segmenter.in_channels} image(s){names}, "
                         f"got {len(vols)}")
    ref = vols[0]
    arr = np.asarray(ref.array, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"segment: expected a 3D volume, got shape {arr.shape}")
    for v in vols[1:]:
        check_same_grid(ref, v)
    body = _body_mask(ref, spec.modality) if body is None else np.asarray(body, dtype=bool)
    if body.shape != arr.shape:
        raise InputError(f"segment: body mask shape {body.shape} does not match the image {arr.shape}")
    norms = [spec.normalize(np.asarray(v.array, dtype=np.float32), body, blank_outside=True)[0] for v in vols]
    codec = spec.codec(ref.affine, arr.shape, axis)
    sliced = codec.encode({f"image{c}": n for c, n in enumerate(norms)}, body)
    images = [sliced.pop(f"image{c}") for c in range(len(norms))]
    sliced["image"] = images[0] if len(images) == 1 else np.stack(images, axis=1)
    return sliced, codec


def volume_features(volume: Volume | Sequence[Volume], segmenter: Segmenter, body: np.ndarray | None = None, *,
                    axis: str = "axial",
                    batch: int = 16) -> np.ndarray:
    """Segmenter features ``[N, C]`` of the slices of ``volume`` that hold body, prepared exactly as for segmentation.

    What the Fréchet distance in the segmenter's feature space (Fréchet-Seg) is computed from.
    """
    sliced, _ = _segmenter_slices(volume, segmenter, axis, body)
    keep = sliced["mask"].reshape(len(sliced["mask"]), -1).any(1)
    if not keep.any():
        raise InputError(f"{(volume if isinstance(volume, Volume) else volume[0]).name}: no slice holds any body voxel")
    return segmenter.features(sliced["image"][keep], batch=batch)


def segment_volume(
    volume: Volume | Sequence[Volume],
    segmenter: Segmenter,
    batch: int = 16,
    *,
    axis: str = "axial",
    body: np.ndarray | None = None,
) -> Volume:
    """Integer label volume (the dataset's label ids) on ``volume``'s grid (see module docstring).

    ``volume`` is in image units (HU for CT); a multi-contrast segmenter takes one volume per contrast, in the order
    of its data block's ``contrasts``. ``body`` (bool, same shape) is
    the body mask used for the MR window and outside which every label is 0;
    without it the body contour is computed from the image.
    """
    sliced, codec = _segmenter_slices(volume, segmenter, axis, body)
    pred = segmenter.predict(sliced["image"], batch=batch)
    pred[sliced["mask"] == 0] = 0
    labels = codec.decode(pred.astype(np.int32), order=0, fill=0)
    ref = volume if isinstance(volume, Volume) else volume[0]
    return ref.like(labels.astype(smallest_int_dtype(np.asarray(segmenter.classes))))


def slice_features(segmenter: Segmenter, slices: Any, batch: int = 16) -> np.ndarray:
    """:meth:`Segmenter.features` as a function."""
    return segmenter.features(slices, batch=batch)
