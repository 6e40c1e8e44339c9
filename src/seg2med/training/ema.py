"""Exponential moving average of the network weights (the weights used for sampling)."""

from __future__ import annotations

import copy

import torch


class EMA:
    """A frozen fp32 copy of a network, updated as ``ema = d * ema + (1 - d) * weights``.

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` so that
    short runs are not dominated by the random initialisation. Non-float
    buffers are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = self.decay_at(step)
        src = model.state_dict()
        for name, ema in self.module.state_dict().items():
            cur = src[name].detach()
            if ema.is_floating_point():
                ema.lerp_(cur.to(ema.dtype), 1.0 - d)
            else:
                ema.copy_(cur)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
