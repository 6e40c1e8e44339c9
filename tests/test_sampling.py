"""The samplers: respaced MONAI DDPM/DDIM reach the right distribution; the denoiser-callable interface.

Exact-score check: for Gaussian data x0 ~ N(0, s0^2) the optimal epsilon-denoiser is known in
closed form, eps(x_t, t) = sqrt(1 - a_t) x_t / (a_t s0^2 + 1 - a_t). A correct sampler driven by it
must return samples whose standard deviation approaches s0 as the step count grows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seg2med.models.config import SchedulerConfig, build_scheduler, spaced_scheduler
from seg2med.sampling.sampler import sample

S0 = 0.5
SHAPE = (1, 1, 200, 200)  # 40 000 independent pixels: the std is estimated to about +-0.002
CFG = SchedulerConfig(clip_sample=False)


@pytest.fixture(scope="module")
def gaussian_denoiser():
    cum = build_scheduler(CFG).alphas_cumprod.double()
    seen: list[int] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        a = cum[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * S0**2 + 1 - a)

    denoise.seen = seen  # type: ignore[attr-defined]
    return denoise


def _sample_std(denoiser, sampler: str, steps: int) -> float:
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = sample(denoiser, SHAPE, CFG, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(1), noise=noise)
    return float(x.std())


def test_spaced_scheduler_is_the_training_schedule_at_full_steps_and_a_subsequence_otherwise():
    full = build_scheduler(CFG)
    sched, grid = spaced_scheduler(CFG, "ddpm", 1000)
    assert torch.equal(grid, torch.arange(1000)) and torch.equal(sched.timesteps, torch.arange(999, -1, -1))
    assert torch.allclose(sched.alphas_cumprod, full.alphas_cumprod, rtol=1e-5, atol=0)
    sched, grid = spaced_scheduler(CFG, "ddim", 10)
    assert grid.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]  # MONAI's own grid, linspace(999, 0, 10)
    assert torch.allclose(sched.alphas_cumprod, full.alphas_cumprod[grid], rtol=1e-5, atol=0)
    assert sched.num_train_timesteps == 10 and sched.timesteps.tolist() == list(range(9, -1, -1))


def test_strided_ddpm_and_ddim_sample_the_data_distribution(gaussian_denoiser):
    """MONAI's DDPM step always goes from t to t-1: a 100-step strided run with it leaves std ~0.88
    here (most of the noise). The respaced sampler converges to s0 = 0.5."""
    assert _sample_std(gaussian_denoiser, "ddpm", 1000) == pytest.approx(S0, abs=0.01)
    assert _sample_std(gaussian_denoiser, "ddpm", 100) == pytest.approx(S0, abs=0.05)
    assert _sample_std(gaussian_denoiser, "ddim", 100) == pytest.approx(S0, abs=0.02)
    assert _sample_std(gaussian_denoiser, "ddim", 1000) == pytest.approx(S0, abs=0.01)


def test_the_network_is_asked_about_the_original_timesteps(gaussian_denoiser):
    gaussian_denoiser.seen.clear()
    _sample_std(gaussian_denoiser, "ddim", 10)
    assert gaussian_denoiser.seen == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    gaussian_denoiser.seen.clear()
    _sample_std(gaussian_denoiser, "ddpm", 4)
    assert gaussian_denoiser.seen == [999, 666, 333, 0]
    assert np.all(np.diff(gaussian_denoiser.seen) < 0)


def test_prior_anchored_start_noises_the_init_to_the_strength_timestep_and_runs_only_the_last_steps(gaussian_denoiser):
    """SDEdit on Gaussian data: from x_t0 = sqrt(a) y + sqrt(1 - a) n the exact DDIM ODE lands on
    x0 = x_t0 * s0 / sqrt(a s0^2 + 1 - a), so the output's mean and spread follow from a = alphas_cumprod(t0)."""
    from seg2med.sampling import prior_anchored_steps

    y = torch.full(SHAPE, 0.3, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, grid = spaced_scheduler(CFG, "ddim", 100)
    for strength in (0.3, 0.6):
        t0 = int(grid[round(100 * strength) - 1])  # the last 30 (60) of the 100 timesteps
        gaussian_denoiser.seen.clear()
        x = sample(gaussian_denoiser, SHAPE, CFG, sampler="ddim", steps=100, noise=noise, init=y, strength=strength)
        assert len(gaussian_denoiser.seen) == prior_anchored_steps(100, strength) == round(100 * strength)
        assert gaussian_denoiser.seen[0] == t0 and gaussian_denoiser.seen[-1] == 0
        a = float(build_scheduler(CFG).alphas_cumprod[t0])
        k = S0 / np.sqrt(a * S0**2 + 1 - a)
        assert float(x.mean()) == pytest.approx(k * np.sqrt(a) * 0.3, abs=0.01)
        assert float(x.std()) == pytest.approx(k * np.sqrt(1 - a), abs=0.02)  # DDIM discretisation, as above
    full = sample(gaussian_denoiser, SHAPE, CFG, sampler="ddim", steps=10, noise=noise)
    same = sample(gaussian_denoiser, SHAPE, CFG, sampler="ddim", steps=10, noise=noise, init=y, strength=1.0)
    assert torch.equal(full, same)  # strength 1: today's pure-noise start, bit for bit


def test_strength_outside_0_1_is_refused():
    from seg2med.errors import ConfigError
    from seg2med.sampling import check_strength

    for bad in (0.0, -0.1, 1.01, float("nan")):
        with pytest.raises(ConfigError, match="strength must be in"):
            check_strength(bad)


def test_dpm_solver_plus_plus_reaches_the_data_distribution_closer_than_ddim_at_few_steps(gaussian_denoiser):
    """DPM-Solver++ 2M (diffusers' scheduler on the training betas) driven by the same exact Gaussian score: at
    4-10 steps its samples' spread is nearer s0 than DDIM's (e.g. 0.41 vs 0.36 at 10 steps), and at 20 steps
    within 0.03 of it; the network is asked about training timesteps, from T - 1 down."""
    for steps in (4, 8, 10):
        dpm, ddim = _sample_std(gaussian_denoiser, "dpm++", steps), _sample_std(gaussian_denoiser, "ddim", steps)
        assert abs(dpm - S0) < abs(ddim - S0) - 0.02, (steps, dpm, ddim)
    assert _sample_std(gaussian_denoiser, "dpm++", 20) == pytest.approx(S0, abs=0.03)
    gaussian_denoiser.seen.clear()
    _sample_std(gaussian_denoiser, "dpm++", 4)
    assert gaussian_denoiser.seen == [999, 749, 500, 250]


def test_dpm_solver_prior_anchored_start_runs_only_the_last_steps(gaussian_denoiser):
    from seg2med.sampling import prior_anchored_steps

    y = torch.full(SHAPE, 0.3, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gaussian_denoiser.seen.clear()
    x = sample(gaussian_denoiser, SHAPE, CFG, sampler="dpm++", steps=10, noise=noise, init=y, strength=0.5)
    assert len(gaussian_denoiser.seen) == prior_anchored_steps(10, 0.5) == 5
    assert gaussian_denoiser.seen == [500, 400, 300, 200, 100]  # the last 5 of linspace(999, 0, 11)[:-1]
    cum = build_scheduler(CFG).alphas_cumprod

    def exact_mean(t0: int) -> float:  # the exact ODE maps x_t0 = sqrt(a) y + sqrt(1 - a) n to x_t0 * k (see above)
        a = float(cum[t0])
        return S0 / np.sqrt(a * S0**2 + 1 - a) * (np.sqrt(a) * 0.3 + np.sqrt(1 - a) * float(noise.mean()))

    assert float(x.mean()) == pytest.approx(exact_mean(500), abs=0.015)  # the init's mean carried through (5 steps)
    gaussian_denoiser.seen.clear()
    x = sample(gaussian_denoiser, SHAPE, CFG, sampler="dpm++", steps=100, noise=noise, init=y, strength=0.5)
    assert float(x.mean()) == pytest.approx(exact_mean(gaussian_denoiser.seen[0]), abs=0.003)


def test_dpm_solver_is_refused_for_a_rectified_flow_model():
    from seg2med.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a DDPM-trained model"):
        build_scheduler(SchedulerConfig(kind="rflow"), "dpm++")
