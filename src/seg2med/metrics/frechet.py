"""Fréchet distances between feature distributions, and FID with Inception-v3.

* :func:`frechet_distance` - the Fréchet (2-Wasserstein) distance between two
  Gaussians, ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, with
  :func:`scipy.linalg.sqrtm` and the usual eps-offset fallback (as pytorch-fid).
* :func:`feature_statistics` - mean and covariance of a feature matrix.
* :func:`frechet_from_features` - the Fréchet distance between the Gaussians
  fitted to two feature sets from *any* extractor (e.g. a segmentation
  network). It is FID only when the features are Inception-v3 pool features.
* :func:`fid` - Fréchet Inception Distance between two sets of 2D slices,
  features from torch-fidelity's ``FeatureExtractorInceptionV3`` (2048-d
  pool3, TF-compatible). Weights are never downloaded: pass ``weights=PATH``
  or set ``SEG2MED_FID_WEIGHTS`` to torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` (:data:`FID_WEIGHTS_URL`) or
  to pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (:data:`PYTORCH_FID_WEIGHTS_URL`).
  Both are conversions of the same TF 2015-12-05 graph, and pytorch-fid's
  network (torchvision ``Inception3`` with its FID blocks) has exactly
  torch-fidelity's state-dict layout (566 tensors, same names and shapes;
  checked against torchvision 0.29's source), so either file loads into the
  same extractor; the resize and scaling are torch-fidelity's.
  Install the package with ``pip install --no-deps torch-fidelity==0.4.0``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg

from seg2med.errors import InputError
from seg2med.metrics._thirdparty import import_bare

#: Environment variable naming the Inception-v3 weights file used by :func:`fid`.
FID_WEIGHTS_ENV = "SEG2MED_FID_WEIGHTS"
#: File name of the supported weights (torch-fidelity's TF-converted Inception-v3).
FID_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
#: Where to get that file by hand (seg2med never downloads it).
FID_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{FID_WEIGHTS_NAME}"
#: pytorch-fid's file of the same network (same state-dict layout, accepted too).
PYTORCH_FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
#: Dimension of the Inception-v3 pool features FID uses.
FID_FEATURE_DIM = 2048


# --------------------------------------------------------------------------- Fréchet distance


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of an (n, d) feature matrix, n >= 2."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be an (n, d) matrix, got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

    ``(S1 S2)^(1/2)`` comes from :func:`scipy.linalg.sqrtm`; if it is not
    finite (singular product) ``eps * I`` is added to both covariances, and a
    negligible imaginary part (diagonal |imag| <= 1e-3) is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary component {np.max(np.abs(covmean.imag)):g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (n, d) feature sets (any feature extractor).

    Not FID unless the features are Inception-v3 pool features (:func:`fid`).
    When a set has fewer vectors than dimensions (the usual case for 2048-d
    features and a few hundred slices), ``Tr (S1 S2)^(1/2)`` is computed
    exactly from the centred feature matrices A, B: it equals the sum of the
    singular values of ``A B^T`` divided by ``sqrt((n1-1)(n2-1))`` - cheap and
    free of the d x d square root of a singular matrix. Otherwise
    :func:`frechet_distance` on :func:`feature_statistics` is used.
    """
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
    if min(n1, n2) > d:
        return frechet_distance(mu1, s1, mu2, s2)
    ac, bc = a - mu1, b - mu2
    tr_covmean = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------- FID (Inception-v3)


def _weights_hint() -> str:
    return (f"pass weights=PATH or set {FID_WEIGHTS_ENV} to torch-fidelity's {FID_WEIGHTS_NAME} ({FID_WEIGHTS_URL}) "
            f"or pytorch-fid's pt_inception-2015-12-05-6726825d.pth")


def resolve_fid_weights(weights: str | os.PathLike[str] | None = None) -> Path:
    """The Inception-v3 weights file: ``weights``, else ``$SEG2MED_FID_WEIGHTS``; never downloaded.

    Raises:
        InputError: none given, or the file does not exist.
    """
    if weights is None or str(weights) == "":
        weights = os.environ.get(FID_WEIGHTS_ENV) or None
    if weights is None:
        raise InputError(f"FID needs the Inception-v3 weights file (nothing is downloaded): {_weights_hint()}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(f"FID weights file not found: {path}; {_weights_hint()}")
    return path


def _inception_module() -> Any:
    return import_bare("torch_fidelity", "feature_extractor_inceptionv3")


@functools.lru_cache(maxsize=2)
def _load_inception(path: str, mtime: float, device: str) -> Any:
    import torch

    mod = _inception_module()
    try:  # reject anything that is not a plain tensor state dict before torch-fidelity unpickles it
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise InputError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}); {_weights_hint()}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state or "fc.weight" not in state:
        raise InputError(f"{path}: not FID Inception-v3 weights; {_weights_hint()}")
    try:
        net = mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit torch-fidelity's Inception-v3 ({str(exc).splitlines()[0]})") from None
    return net.to(device)


def load_inception(weights: str | os.PathLike[str] | None = None, device: str = "cpu") -> Any:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (2048-d pool features) from a local weights file."""
    path = resolve_fid_weights(weights)
    return _load_inception(str(path.resolve()), path.stat().st_mtime, str(device))


def _as_slices(slices: np.ndarray | Sequence[np.ndarray], name: str) -> np.ndarray:
    try:
        arr = np.asarray(slices, dtype=np.float64)
    except ValueError:
        raise ValueError(f"{name}: slices of one set must all have the same shape") from None
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected (n, H, W) single-channel slices, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 slices for FID, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: slices contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{name}: FID slices must be scaled to [0, 1], got [{lo:g}, {hi:g}]")
    return arr


def inception_features(
    slices: np.ndarray | Sequence[np.ndarray],
    weights: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 16,
    device: str = "cpu",
) -> np.ndarray:
    """(n, 2048) Inception-v3 pool features of n single-channel slices in [0, 1].

    Each slice becomes an 8-bit image (``round(255 x)``) repeated over the
    three RGB channels - the input torch-fidelity's extractor expects; it
    resizes to 299 x 299 itself (TF-1.x-compatible bilinear).
    """
    import torch

    arr = _as_slices(slices, "slices")
    net = load_inception(weights, device)
    out = []
    with torch.no_grad():
        for i in range(0, arr.shape[0], int(batch_size)):
            u8 = np.clip(np.rint(arr[i:i + int(batch_size)] * 255.0), 0, 255).astype(np.uint8)
            x = torch.from_numpy(u8)[:, None].expand(-1, 3, -1, -1).contiguous().to(device)
            (feats,) = net(x)
            out.append(feats.double().cpu().numpy())
    return np.concatenate(out)


def fid(
    pred_slices: np.ndarray | Sequence[np.ndarray],
    ref_slices: np.ndarray | Sequence[np.ndarray],
    weights: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 16,
    device: str = "cpu",
) -> float:
    """Fréchet Inception Distance between two sets of single-channel slices in [0, 1].

    ``weights``: path of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
    (else ``$SEG2MED_FID_WEIGHTS``); a missing file raises
    :class:`~seg2med.errors.InputError`, nothing is downloaded. Slices of each
    set must share one shape (the two sets may differ).
    """
    path = resolve_fid_weights(weights)  # fail on missing weights before looking at the data
    a = inception_features(pred_slices, path, batch_size=batch_size, device=device)
    b = inception_features(ref_slices, path, batch_size=batch_size, device=device)
    return frechet_from_features(a, b)
