"""Prior-consistency guidance: keep the coarse intensities of a sample on the physics prior.

ILVR (Choi et al., "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models", ICCV 2021)
conditions a diffusion model on a reference image by replacing the low frequencies of every iterate with the
reference's. Here the same correction acts on the network's estimate of the clean image at each step (as the
data-consistency steps of diffusion reconstruction do, e.g. DDNM, Wang et al. 2023), softened by a tolerance::

    x0 <- x0 + w * shrink(G_sigma * (prior - x0), tau),   shrink(d, tau) = sign(d) * max(|d| - tau, 0)

``G_sigma`` a Gaussian low-pass (sigma in pixels of the slice grid). The model keeps every detail finer than
sigma, and any coarse departure from the prior up to ``tau`` (the patient's own HU against the literature
values of the prior); larger departures (an organ at an impossible value, air or a body outline hallucinated
inside the body, the blur of an input unlike the training data) are pulled back onto the prior. ``tau = 0``
and ``w = 1`` is ILVR's hard low-pass replacement. Intensities are in the image range [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seg2med.errors import ConfigError


@dataclass(frozen=True)
class PriorAnchor:
    """The correction of an image estimate towards the prior (see the module docstring).

    ``scale``: sigma of the Gaussian low-pass in pixels (> 0); ``tolerance``: tau, the coarse departure
    from the prior left free, in image-range units ([-1, 1] spans the model's intensity window; >= 0);
    ``weight``: w in (0, 1].
    """

    scale: float
    tolerance: float = 0.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"prior anchor: scale (Gaussian sigma in pixels) must be > 0, got {self.scale}")
        if not self.tolerance >= 0:
            raise ConfigError(f"prior anchor: tolerance must be >= 0, got {self.tolerance}")
        if not 0 < self.weight <= 1:
            raise ConfigError(f"prior anchor: weight must be in (0, 1], got {self.weight}")

    def lowpass(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian low-pass of ``[B, C, H, W]``: MONAI's separable filter (kernel truncated at 4 sigma), the
        border replicated so that a constant stays constant up to the slice edge."""
        from monai.networks.layers import gaussian_1d, separable_filtering

        kernel = gaussian_1d(torch.tensor(float(self.scale)), truncated=4.0, normalize=True).to(device=x.device)
        return separable_filtering(x.float(), [kernel, kernel], mode="replicate").to(x.dtype)

    def correction(self, image: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What is added to ``image`` (``[B, C, H, W]``, same shape as ``prior``).

        With ``mask`` (1 inside the body) the low-pass is a normalised convolution (Knutsson & Westin 1993):
        ``G * (m d) / G * m``, the mean departure of the nearby body voxels only, so that the air around a
        small body does not dilute it."""
        d = prior - image
        if mask is None:
            d = self.lowpass(d)
        else:
            m = mask.to(d.dtype).expand_as(d)
            d = self.lowpass(d * m) / self.lowpass(m).clamp(min=1e-3)
        if self.tolerance > 0:
            d = torch.sign(d) * torch.clamp(d.abs() - self.tolerance, min=0.0)
        return self.weight * d

    def __call__(self, image: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` moved towards ``prior``: every change finer than ``scale`` is kept."""
        return image + self.correction(image, prior, mask)
