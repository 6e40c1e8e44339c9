"""Sampling cost and quality of seg2med's conditional diffusion model, all measured in one run.

Usage::

    python benchmarks/sampling.py [--out FILE.md] [--device auto|cpu|cuda]
                                  [--presets small,paper] [--sizes 128,256]
                                  [--model RUN_DIR_OR_NAME[,...]] [--quick]
                                  [--sections all|volume | --volume-only] [--volume-slices 64[,...]]
                                  [--volume-size 128] [--data ../shared/data]

Writes one Markdown report (default ``benchmarks/results/sampling-<device>.md``)
and prints it. Sections:

1. matmul ceiling (GFLOP/s) of the machine, fp32 and bf16;
2. parameters and FLOPs per forward pass (``FlopCounterMode``, batch 1);
3. forward-pass time at batch 1 and 8 (fp32 in channels-last and default layout, bf16),
   achieved GFLOP/s and fraction of the ceiling; 3b. where that time goes (``torch.profiler``:
   convolutions, matmul/attention, GroupNorm, SiLU, the rest) and the convolutions' own GFLOP/s;
4. seconds per slice: DDPM 500 steps (the seg2med paper setting) vs DDIM 50/20/10/8
   and the cost ratio; rows too slow to run end-to-end are per-step cost x steps
   and say so;
5. quality vs steps: SSIM of DDIM-N to DDPM-1000 (same seed, prior and start noise)
   for *trained* checkpoints only (``--model`` or the shipped ``ct-demo`` and ``ct-demo-tiny``);
5b. whole volume at the generate defaults: per model, ``seg2med.generate`` end to end (seconds per
   volume) on a label volume of ``--volume-slices`` axial slices x ``--volume-size`` px (default 64 x 128
   px: subject A's labels and CT from ``--data``, 3 mm, padded / cropped in-plane; a synthetic phantom
   when the data is absent) for DDIM-50 fp32 (the old default, the reference), the defaults (DDIM-8,
   precision auto, and what it resolved to), DDIM 4/6/10 and DPM-Solver++ 2M 4/6/8/10 at precision auto, and the
   3D-consistency settings at the defaults (correlated start noise across slices, shared noise, tri-planar sampling;
   pass a 2.5D model such as ``ct-demo-25d-tiny`` beside a 2D one for the 2.5D row): speed-up, SSIM and MAE (HU) to
   DDIM-50 inside the body, and ``roughness_z`` / ``roughness_xy`` against the real CT when there is one; a last
   table puts every model's defaults and 3D settings side by side;
6. a summary line per target, reported honestly (yes / no / skipped), including the
   combined one: some DDIM-N both <= 1/50 of the cost and >= 0.99 SSIM, per model, and the
   whole-volume one: the defaults take <= 60 s for a 64-slice 128-px volume on this CPU (a smaller
   volume is scaled by its slice count, and the line says so) with SSIM >= 0.99 to DDIM-50.

``--volume-only`` (``--sections volume``) runs only section 5b and its summary lines.
``--quick`` is the CI smoke run (tiny sizes, few repeats; section 5b: ct-demo-tiny on 4 slices of 64 px,
DDIM-8 fp32 as the reference and the defaults row).
Timings use ``time.perf_counter`` (with ``torch.cuda.synchronize()`` on CUDA),
warm-up first, median of the repeats. Not part of the test suite's timing checks.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from seg2med.data.codec import SliceCodec, stack_neighbours
from seg2med.data.normalize import to_signed
from seg2med.data.spec import DataSpec
from seg2med.errors import ConfigError
from seg2med.io.files import write_text
from seg2med.models.config import ModelConfig, SchedulerConfig, build_model, count_parameters, for_inference
from seg2med.models.precision import parse_device
from seg2med.models.registry import DEFAULT_STEPS
from seg2med.sampling.sampler import Denoiser, conditional_denoiser, sample

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PAPER_STEPS = 500  # seg2med paper: DDPM, 500 sampling steps
REFERENCE_STEPS = 1000  # quality reference: DDPM over all training timesteps
COST_TARGET = 50.0  # DDIM-N should cost <= 1/50 of DDPM-500
SSIM_TARGET = 0.99
CEILING_TARGET = 0.80
MIN_MATMUL_S = 0.05  # a ceiling matmul call takes at least 50 ms
MIN_PROBE_RUNS = 3  # the per-step costs behind the cost ratio: at least 3 runs each
BF16_USEFUL = 0.5  # auto mode: time bf16 models only if the bf16 ceiling >= half the fp32 one


# --------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Everything a run needs, resolved from the command line and the device defaults."""

    device: torch.device
    out: Path
    quick: bool
    presets: list[str]
    sizes: list[int]
    batches: list[int]
    repeats: int
    budget_s: float  # soft time cap of one forward timing (after warm-up)
    e2e_budget_s: float  # a sampling row runs end-to-end only when it fits in this
    sample_batch: int
    ddim_steps: list[int]
    probe_steps: int  # steps per run when measuring the per-step cost
    warmup: int
    bf16: str  # auto | on | off
    tf32: bool
    model_dirs: list[Path]  # trained checkpoints for the quality section (may be empty)
    seed: int
    note: str = ""
    argv: list[str] = field(default_factory=list)
    sections: str = "all"  # all | volume (section 5b and its targets only)
    data: Path = Path()  # the shared data folder (subject A for section 5b)
    volume_models: list[Path] = field(default_factory=list)  # CT diffusion models for section 5b
    volume_slices: list[int] = field(default_factory=list)  # axial slices of the 5b volume, per model (last repeats)
    volume_size: int = 128
    volume_rows: tuple[tuple[str, int, str, str], ...] = ()


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (``None`` values mean: the device's default)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="Markdown file (default benchmarks/results/sampling-<device>.md)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--presets", type=_str_list, help="model presets (default small,paper)")
    p.add_argument("--sizes", type=_int_list, help="image sizes in pixels (default 128,256)")
    p.add_argument("--batches", type=_int_list, help="forward-pass batch sizes (default 1,8)")
    p.add_argument("--repeats", type=int, help="most timed repeats per measurement (default cpu 5, cuda 20)")
    p.add_argument("--sample-batch", type=int, help="slices sampled at once (default cpu 1, cuda 8)")
    p.add_argument("--ddim-steps", type=_int_list, help="DDIM step counts (default 50,20,10,8)")
    p.add_argument("--e2e-budget", type=float,
                   help="seconds: a sampling row runs end-to-end when its estimate fits, else per-step x steps "
                        "(default cpu 20, cuda 120)")
    p.add_argument("--bf16", default="auto", choices=("auto", "on", "off"),
                   help="bf16 autocast timings; auto: when bf16 is supported and its matmul ceiling is at "
                        "least half the fp32 one (an emulated bf16 on CPU is skipped)")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 for fp32 matmul/conv (default: strict fp32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--model", type=_str_list, help="trained run folder(s) or shipped model name(s), comma-separated, "
                                                   "for the quality measurement (default: the shipped ct-demo and "
                                                   "ct-demo-tiny, if present; none with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="", help="a line of free text for the report header (e.g. why a run was reduced)")
    p.add_argument("--quick", action="store_true", help="smoke run: preset small at 64 px, batch 1 and 2, DDIM 5; "
                                                          "section 5b: ct-demo-tiny, 4 slices of 64 px, 2 rows")
    p.add_argument("--sections", default="all", choices=("all", "volume"),
                   help="volume: only section 5b (whole volume at the generate defaults) and its summary lines")
    p.add_argument("--volume-only", dest="sections", action="store_const", const="volume", help="= --sections volume")
    p.add_argument("--volume-slices", type=_int_list,
                   help="axial slices of the section-5b volume, one per --model (the last repeats; default 64, --quick 4)")
    p.add_argument("--volume-size", type=int, help="in-plane pixels of the section-5b volume (default 128, --quick 64)")
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data",
                   help="shared data folder with totalsegmentator/ (subject A; absent: a synthetic phantom)")
    return p.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (seg2med's own ``--device`` parser); a device this
    machine does not have ends the script with its one-line message."""
    try:
        return parse_device(name)
    except ConfigError as exc:
        raise SystemExit(f"--device: {exc}") from None


SHIPPED_QUALITY_MODELS = ("ct-demo", "ct-demo-tiny")


def shipped_model_dirs() -> list[Path]:
    """``seg2med/resources/models/{ct-demo,ct-demo-tiny}`` that the package ships."""
    root = Path(str(resources.files("seg2med") / "resources" / "models"))
    return [root / n for n in SHIPPED_QUALITY_MODELS if (root / n / "config.json").is_file()]


def resolve_settings(args: argparse.Namespace, argv: Sequence[str]) -> Settings:
    """Fill every unset option with the quick / CPU / CUDA default."""
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.quick:
        d: dict[str, Any] = {"presets": ["small"], "sizes": [64], "batches": [1, 2], "repeats": 3,
                             "budget_s": 1.0, "e2e_budget_s": 5.0, "sample_batch": 1, "ddim_steps": [5],
                             "probe_steps": 2}
    else:
        d = {"presets": ["small", "paper"], "sizes": [128, 256], "batches": [1, 8],
             "repeats": 20 if cuda else 5, "budget_s": 2.0 if cuda else 5.0,
             "e2e_budget_s": 120.0 if cuda else 20.0, "sample_batch": 8 if cuda else 1,
             "ddim_steps": [50, 20, 10, 8], "probe_steps": 5 if cuda else 2}
    for key, value in (("presets", args.presets), ("sizes", args.sizes), ("batches", args.batches),
                       ("repeats", args.repeats), ("sample_batch", args.sample_batch),
                       ("ddim_steps", args.ddim_steps), ("e2e_budget_s", args.e2e_budget)):
        if value is not None:
            d[key] = value
    if args.model is not None:
        from seg2med.inference import resolve_model

        model_dirs = [resolve_model(m) for m in args.model]  # run folders or shipped model names (ct-demo)
    else:
        model_dirs = [] if args.quick else shipped_model_dirs()
    if args.model is not None:
        volume_models = model_dirs
    else:
        shipped = shipped_model_dirs()
        volume_models = [f for f in shipped if f.name == "ct-demo-tiny"] if args.quick else shipped
    out = args.out or RESULTS / f"sampling-{device.type}.md"
    return Settings(device=device, out=out, quick=args.quick, warmup=3 if cuda else 1, bf16=args.bf16,
                    tf32=args.tf32, model_dirs=model_dirs, seed=args.seed, note=args.note, argv=list(argv),
                    sections=args.sections, data=args.data, volume_models=volume_models,
                    volume_slices=args.volume_slices or [4 if args.quick else VOLUME_TARGET_SLICES],
                    volume_size=args.volume_size or (64 if args.quick else 128),
                    volume_rows=QUICK_VOLUME_ROWS if args.quick else VOLUME_ROWS, **d)


def configure_backends(s: Settings, threads: int | None) -> None:
    """Thread count (CPU) and fp32 precision (CUDA: strict fp32 unless ``--tf32``)."""
    if threads:
        torch.set_num_threads(threads)
    if s.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = s.tf32
        torch.backends.cudnn.allow_tf32 = s.tf32
        torch.backends.cudnn.benchmark = True


def log(msg: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Median of ``n`` timed calls (seconds)."""

    median_s: float
    n: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int,
                     budget_s: float = math.inf, min_repeats: int = 1) -> dict[str, Timing]:
    """Warm up, then time the callables in turn (round robin, so that a changing machine load hits
    all of them alike; every other round in reverse order, so that none always runs first) up to
    ``repeats`` rounds; after ``min_repeats`` rounds stop early when the next round would take the
    total past ``budget_s``. Median per callable."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    total, rounds = 0.0, 0
    while rounds < max(1, repeats):
        round_s = 0.0
        order = list(fns.items())
        for name, fn in order if rounds % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            round_s += times[name][-1]
        total, rounds = total + round_s, rounds + 1
        if rounds >= min_repeats and total + round_s > budget_s:
            break
    return {name: Timing(statistics.median(ts), len(ts)) for name, ts in times.items()}


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int,
              budget_s: float = math.inf, min_repeats: int = 1) -> Timing:
    """:func:`time_interleaved` for a single callable."""
    return time_interleaved({"": fn}, device, warmup, repeats, budget_s, min_repeats)[""]


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``dtype == "bf16"``, nothing for fp32."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else ``platform``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description(s: Settings) -> str:
    """One line: device, threads, library versions."""
    threads = f"{torch.get_num_threads()} torch threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    if s.device.type == "cuda":
        props = torch.cuda.get_device_properties(s.device)
        dev = (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
               f"fp32 {'with TF32' if s.tf32 else 'strict (TF32 off)'}, host {cpu_name()}, {threads}")
    else:
        dev = f"CPU {cpu_name()} ({os.cpu_count()} logical cores), {threads}"
    import monai

    return f"{dev}; torch {torch.__version__}, MONAI {monai.__version__}, Python {platform.python_version()}"


def load_average() -> str:
    """1-minute load average (other processes sharing the CPU skew the timings), if known."""
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.2f}"
    return "n/a"


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 works here. CUDA: ``torch.cuda.is_bf16_supported()``; CPU: a bf16 matmul and an
    autocast conv must run."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "torch.cuda.is_bf16_supported()" if ok else "not supported by this GPU"
    try:
        a = torch.randn(64, 64, dtype=torch.bfloat16)
        (a @ a).float().sum().item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.randn(1, 4, 16, 16), torch.randn(4, 4, 3, 3)).sum().item()
    except RuntimeError as exc:
        return False, f"bf16 does not run: {str(exc).splitlines()[0]}"
    return True, "bf16 matmul and autocast conv run"


# --------------------------------------------------------------------------- 1. matmul ceiling
@dataclass
class Ceiling:
    """Measured matmul throughput of one dtype."""

    dtype: str
    supported: bool
    note: str
    gflops: float = 0.0
    n: int = 0
    iters: int = 0
    repeats: int = 0
    gflops_end: float = math.nan  # re-measured after the model timings (the load may have changed)

    @property
    def best(self) -> float:
        """The higher of the two measurements: fractions of it are conservative."""
        return self.gflops if math.isnan(self.gflops_end) else max(self.gflops, self.gflops_end)


def _matmul_fn(n: int, iters: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(iters):
            torch.mm(a, b, out=c)

    return run


def matmul_ceiling(name: str, device: torch.device, repeats: int, note: str) -> Ceiling:
    """Square matmuls, size doubled (then calls batched) until one timed call takes >= 50 ms;
    median GFLOP/s of ``repeats`` calls after warm-up."""
    dtype = torch.float32 if name == "fp32" else torch.bfloat16
    n, max_n, iters = (1024, 16384, 1) if device.type == "cuda" else (256, 4096, 1)
    while True:
        t = time_call(_matmul_fn(n, iters, dtype, device), device, warmup=1, repeats=1).median_s
        if t >= MIN_MATMUL_S:
            break
        if n < max_n:
            n *= 2
        else:
            iters = math.ceil(iters * 1.5 * MIN_MATMUL_S / max(t, 1e-6))
    timing = time_call(_matmul_fn(n, iters, dtype, device), device, warmup=1, repeats=repeats)
    flops = 2.0 * n**3 * iters
    return Ceiling(name, True, note, flops / timing.median_s / 1e9, n, iters, timing.n)


def remeasure_ceiling(c: Ceiling, device: torch.device, repeats: int) -> None:
    """Time the same matmul again (after the model timings) into ``c.gflops_end``."""
    dtype = torch.float32 if c.dtype == "fp32" else torch.bfloat16
    t = time_call(_matmul_fn(c.n, c.iters, dtype, device), device, warmup=1, repeats=repeats)
    c.gflops_end = 2.0 * c.n**3 * c.iters / t.median_s / 1e9


def measure_ceilings(s: Settings) -> dict[str, Ceiling]:
    """fp32 always; bf16 when it runs on this device."""
    log("matmul ceiling fp32")
    out = {"fp32": matmul_ceiling("fp32", s.device, s.repeats, "TF32 allowed" if s.tf32 and s.device.type == "cuda" else "")}
    ok, why = bf16_support(s.device)
    if ok:
        log("matmul ceiling bf16")
        out["bf16"] = matmul_ceiling("bf16", s.device, s.repeats, why)
    else:
        out["bf16"] = Ceiling("bf16", False, why)
    return out


def bf16_decision(s: Settings, ceilings: dict[str, Ceiling]) -> tuple[bool, str]:
    """Whether to time the models in bf16 autocast, and why (shown in the report)."""
    bf = ceilings["bf16"]
    if s.bf16 == "off":
        return False, "bf16 timings off (--bf16 off)"
    if not bf.supported:
        return False, f"bf16 timings skipped: {bf.note}"
    ratio = bf.gflops / ceilings["fp32"].gflops
    if s.bf16 == "auto" and s.device.type == "cpu" and ratio < BF16_USEFUL:
        return False, (f"bf16 runs but is not accelerated here (matmul {bf.gflops:.2f} GFLOP/s = "
                       f"{ratio:.1%} of fp32): bf16 model timings skipped (--bf16 on forces them)")
    return True, "bf16 autocast timed"


# --------------------------------------------------------------------------- 2./3. forward pass
@dataclass
class FlopsRow:
    preset: str
    size: int
    params: int
    flops: int  # per forward pass at batch 1
    conv_flops: int = 0  # the convolutions' share of ``flops``


@dataclass
class ForwardRow:
    preset: str
    size: int
    dtype: str
    layout: str  # nhwc (channels-last, what seg2med samples with) | nchw
    batch: int
    timing: Timing
    flops: int  # batch 1
    ceiling: Ceiling  # of the same dtype

    @property
    def gflops(self) -> float:
        return self.flops * self.batch / self.timing.median_s / 1e9

    @property
    def fraction(self) -> float:
        return self.gflops / self.ceiling.best if self.ceiling.best > 0 else math.nan


def make_model(preset: str, device: torch.device, seed: int) -> tuple[torch.nn.Module, ModelConfig]:
    """A randomly initialised (seeded) network of ``preset``, laid out as seg2med samples with it."""
    cfg = ModelConfig.from_preset(preset)
    torch.manual_seed(seed)
    return for_inference(build_model(cfg), device), cfg


def set_layout(model: torch.nn.Module, layout: str) -> torch.nn.Module:
    """Convert the conv weights in place to ``nhwc`` (channels-last) or ``nchw`` (contiguous)."""
    return model.to(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)


def model_inputs(cfg: ModelConfig, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy image + condition channels, and random timesteps."""
    x = torch.randn(batch, cfg.image_channels + cfg.condition_channels, size, size, device=device)
    return x, torch.randint(0, 1000, (batch,), device=device)


def count_flops(model: torch.nn.Module, cfg: ModelConfig, size: int, device: torch.device) -> tuple[int, int]:
    """FLOPs of one batch-1 forward pass (``FlopCounterMode``: conv/matmul/attention, 2 per MAC):
    the total and the convolutions' part."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t = model_inputs(cfg, 1, size, device)
    # FlopCounterMode has no formula for PyTorch's CPU fused-attention kernel (it would count attention
    # as 0 FLOPs): count with MONAI's explicit softmax(QK^T)V, the same function, then switch back
    fused = [m for m in model.modules() if getattr(m, "use_flash_attention", False)]
    try:
        for m in fused:
            m.use_flash_attention = False
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x, timesteps=t)
    finally:
        for m in fused:
            m.use_flash_attention = True
    per_op = counter.get_flop_counts().get("Global", {})
    conv = sum(int(n) for op, n in per_op.items() if "convolution" in str(op))
    return int(counter.get_total_flops()), conv


def time_forward(model: torch.nn.Module, cfg: ModelConfig, size: int, batch: int, dtype: str,
                 s: Settings) -> Timing:
    """Median forward time under ``torch.inference_mode`` (and bf16 autocast when asked)."""
    x, t = model_inputs(cfg, batch, size, s.device)

    def run() -> None:
        with torch.inference_mode(), autocast(s.device, dtype):
            model(x, timesteps=t)

    return time_call(run, s.device, s.warmup, s.repeats, s.budget_s)


# --------------------------------------------------------------------------- 3b. where the time goes
#: Operator groups of the profile by ATen operator name, first match wins.
OP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("convolution", "conv2d")),
    ("matmul + attention", ("addmm", "aten::mm", "bmm", "linear", "attention", "softmax")),
    ("group norm", ("group_norm",)),
    ("SiLU", ("silu",)),
)
OTHER_GROUP = "rest (adds, concatenation, copies, casts, ...)"


@dataclass
class Breakdown:
    """Share of one profiled forward pass per operator group, and the convolutions' own throughput."""

    preset: str
    size: int
    dtype: str
    batch: int
    total_s: float  # summed self time of the profiled operators / kernels per forward
    shares: dict[str, float]  # group -> fraction of total_s
    conv_gflops: float
    ceiling: Ceiling
    skipped: str = ""
    top_other: list[tuple[str, float]] = field(default_factory=list)  # largest operators of the rest, share


def op_group(name: str) -> str:
    low = name.lower()
    for group, keys in OP_GROUPS:
        if any(k in low for k in keys):
            return group
    return OTHER_GROUP


def profile_forward(model: torch.nn.Module, cfg: ModelConfig, size: int, batch: int, dtype: str,
                    conv_flops: int, ceiling: Ceiling, preset: str, s: Settings, runs: int = 2) -> Breakdown:
    """``torch.profiler`` over ``runs`` forward passes: self time of the ATen operators per group
    (CPU time on a CPU; on CUDA the GPU time of the kernels each operator launched), and the
    convolutions' GFLOP/s = their FLOPs / their time."""
    from torch.profiler import ProfilerActivity, profile

    x, t = model_inputs(cfg, batch, size, s.device)
    cuda = s.device.type == "cuda"
    with torch.inference_mode(), autocast(s.device, dtype):
        model(x, timesteps=t)  # warm-up outside the profile
        synchronize(s.device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(runs):
                model(x, timesteps=t)
            synchronize(s.device)
    times: dict[str, float] = {g: 0.0 for g, _ in OP_GROUPS}
    times[OTHER_GROUP] = 0.0
    other: dict[str, float] = {}
    for ev in prof.key_averages():
        if not ev.key.startswith(("aten::", "mkldnn::", "mkl::")):
            continue  # operators only: no wrappers, and on CUDA no kernel rows (already in their operator's time)
        sec = max(float(ev.self_device_time_total if cuda else ev.self_cpu_time_total), 0.0) * 1e-6 / runs
        group = op_group(ev.key)
        times[group] += sec
        if group == OTHER_GROUP:
            other[ev.key] = other.get(ev.key, 0.0) + sec
    total = sum(times.values())
    if total <= 0:
        return Breakdown(preset, size, dtype, batch, 0.0, {}, math.nan, ceiling, skipped="the profiler recorded no operator time")
    conv_s = times["convolution"]
    conv_gflops = conv_flops * batch / conv_s / 1e9 if conv_s > 0 else math.nan
    top = sorted(other.items(), key=lambda kv: -kv[1])[:3]
    return Breakdown(preset, size, dtype, batch, total, {g: v / total for g, v in times.items()}, conv_gflops, ceiling,
                     top_other=[(k.removeprefix("aten::"), v / total) for k, v in top if v > 0])


def breakdown_rows(model: torch.nn.Module, cfg: ModelConfig, preset: str, size: int, conv_flops: int,
                   ceilings: dict[str, Ceiling], bf16: bool, s: Settings) -> list[Breakdown]:
    """Profile the batch-1 and the largest-batch forward in fp32 (and bf16), channels-last."""
    rows = []
    batches = sorted({min(s.batches), max(s.batches)})
    for dtype in ("fp32", "bf16") if bf16 else ("fp32",):
        for batch in batches:
            try:
                rows.append(profile_forward(model, cfg, size, batch, dtype, conv_flops, ceilings[dtype], preset, s))
            except (RuntimeError, AttributeError) as exc:  # a profiler that does not run here: say so
                rows.append(Breakdown(preset, size, dtype, batch, 0.0, {}, math.nan, ceilings[dtype],
                                      skipped=f"profiler failed: {str(exc).splitlines()[0]}"))
    return rows


# --------------------------------------------------------------------------- 4. sampling cost
@dataclass
class SamplingRow:
    """Cost of one sampler setting; seconds are for the whole batch."""

    preset: str
    size: int
    sampler: str
    steps: int
    batch: int
    step: Timing  # per-step cost of this sampler
    estimate_s: float  # per-step cost x steps
    measured: Timing | None = None  # end-to-end, when it fitted the budget
    ratio: float = math.nan  # DDPM-500 cost / this cost
    ratio_from: str = ""

    @property
    def seconds(self) -> float:
        """End-to-end time when measured, else the per-step estimate."""
        return self.measured.median_s if self.measured is not None else self.estimate_s


def _sample_fn(denoiser: Denoiser, shape: tuple[int, ...], sampler: str, steps: int, noise: torch.Tensor,
               s: Settings) -> Callable[[], torch.Tensor]:
    sched = SchedulerConfig()  # seg2med paper: DDPM, 1000 training steps, linear betas, epsilon

    def run() -> torch.Tensor:
        gen = torch.Generator(device=s.device).manual_seed(s.seed)
        return sample(denoiser, shape, sched, sampler=sampler, steps=steps, generator=gen, device=s.device, noise=noise)

    return run


def per_step_costs(denoiser: Denoiser, shape: tuple[int, ...], noise: torch.Tensor, s: Settings) -> dict[str, Timing]:
    """Seconds per DDPM and per DDIM step (network + scheduler update), from interleaved runs of
    ``probe_steps`` steps (at least 3 runs each)."""
    fns = {name: _sample_fn(denoiser, shape, name, s.probe_steps, noise, s) for name in ("ddpm", "ddim")}
    timings = time_interleaved(fns, s.device, 0, s.repeats, s.budget_s, min_repeats=MIN_PROBE_RUNS)
    return {name: Timing(t.median_s / s.probe_steps, t.n) for name, t in timings.items()}


def sampling_rows(model: torch.nn.Module, cfg: ModelConfig, preset: str, size: int, s: Settings) -> list[SamplingRow]:
    """DDPM-500 and DDIM-N for one model/size at ``sample_batch``; end-to-end when it fits the budget."""
    gen = torch.Generator(device="cpu").manual_seed(s.seed)
    shape = (s.sample_batch, cfg.image_channels, size, size)
    condition = (torch.rand(s.sample_batch, cfg.condition_channels, size, size, generator=gen) * 2 - 1).to(s.device)
    noise = torch.randn(shape, generator=gen).to(s.device)
    denoiser = conditional_denoiser(model, condition)
    _sample_fn(denoiser, shape, "ddim", 1, noise, s)()  # warm-up at this batch
    step = per_step_costs(denoiser, shape, noise, s)
    rows = []
    for sampler, steps in [("ddpm", PAPER_STEPS)] + [("ddim", n) for n in s.ddim_steps]:
        row = SamplingRow(preset, size, sampler, steps, s.sample_batch, step[sampler], step[sampler].median_s * steps)
        if row.estimate_s <= s.e2e_budget_s:
            fn = _sample_fn(denoiser, shape, sampler, steps, noise, s)
            row.measured = time_call(fn, s.device, 0, 3, s.e2e_budget_s)
        rows.append(row)
    set_ratios(rows)
    return rows


def set_ratios(rows: list[SamplingRow]) -> None:
    """DDPM-500 cost / each row's cost, on a like-for-like basis: end-to-end times when both were
    measured, else the per-step estimates of both (interleaved, so a changing load hits both alike)."""
    paper = rows[0]
    for r in rows:
        if paper.measured is not None and r.measured is not None:
            r.ratio, r.ratio_from = paper.measured.median_s / r.measured.median_s, "end-to-end"
        else:
            r.ratio, r.ratio_from = paper.estimate_s / r.estimate_s, "per-step x steps"


# --------------------------------------------------------------------------- 5. quality vs steps
@dataclass
class Quality:
    """SSIM of DDIM-N (and of a second DDPM-1000 seed) to DDPM-1000, or why it was skipped."""

    skipped: str = ""
    name: str = ""
    source: str = ""
    ssim: dict[int, float] = field(default_factory=dict)  # DDIM steps -> SSIM
    reference_spread: float = math.nan  # DDPM-1000 seed+1 vs seed
    seconds: float = 0.0


def training_summary(cfg: dict[str, Any]) -> str:
    """A few scalar entries of the checkpoint's ``training`` block (how trained it is), if any."""
    block = cfg.get("training")
    if not isinstance(block, dict):
        return "no training summary in config.json"
    items = [f"{k} {v}" for k, v in block.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return "training: " + (", ".join(items[:5]) or "no scalar entries")


def check_model_dir(folder: Path) -> None:
    """Fail before the timings, not after them, when ``--model`` is not a usable diffusion checkpoint."""
    load_trained(folder, torch.device("cpu"))


def load_trained(folder: Path, device: torch.device) -> tuple[torch.nn.Module, ModelConfig, SchedulerConfig, DataSpec, str]:
    """Network (EMA weights if present, laid out as ``seg2med generate`` runs it), its configs, data
    settings and a description, through the same ``load_model`` as ``seg2med generate``."""
    from seg2med.errors import InputError
    from seg2med.inference import load_model

    lm = load_model(folder, ema=True, device=device)
    if not lm.is_diffusion:
        raise InputError(f"{folder}: a {lm.method} run, not a diffusion model: DDPM/DDIM sampling does not apply")
    return lm.network, lm.model_cfg, lm.scheduler_cfg, lm.spec, f"{lm.weights}; {training_summary(lm.config)}"


def phantom_condition(mcfg: ModelConfig, spec: DataSpec, size: int) -> torch.Tensor:
    """The middle axial prior slice (+ neighbours) of a synthetic phantom of ``size`` px, normalised and sliced
    like training, in [-1, 1]."""
    import seg2med

    sequence = "ct" if spec.modality == "ct" else str((spec.sequence or {}).get("name", "vibe-in"))
    lv = seg2med.make_phantom(seed=0, spacing=float(spec.spacing), slices=mcfg.condition_channels, size=size)
    prior = seg2med.simulate_prior(lv, sequence).volume.array
    body = lv.volume.array > 0
    norm, _ = spec.normalize(prior, body, blank_outside=True)
    codec = SliceCodec.plan(lv.volume.affine, lv.volume.shape, "axial", spec.spacing, size)
    k = mcfg.neighbours
    cond = stack_neighbours(codec.encode({"prior": norm}, body)["prior"], k)[k]  # (1 + 2k, size, size)
    return torch.from_numpy(to_signed(cond))[None].float()


def _ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    x = a[0, 0].clamp(-1, 1).float().cpu().numpy()
    y = b[0, 0].clamp(-1, 1).float().cpu().numpy()
    return float(structural_similarity(x, y, data_range=2.0))


def measure_quality(s: Settings) -> list[Quality]:
    """One :class:`Quality` per ``--model`` (or a single skipped one when there is none)."""
    if not s.model_dirs:
        why = "no trained model (pass --model RUN_DIR" + ("" if s.quick else "; the shipped ct-demo models are absent") + ")"
        return [Quality(skipped=why)]
    return [measure_model_quality(s, d) for d in s.model_dirs]


def measure_model_quality(s: Settings, folder: Path) -> Quality:
    """DDPM-1000 (seed, seed+1) and DDIM-N from the same start noise and prior; SSIM to DDPM-1000."""
    model, mcfg, scfg, spec, described = load_trained(folder, s.device)
    if scfg.kind != "ddpm":
        return Quality(name=folder.name, skipped=f"{folder} is a {scfg.kind} model: DDPM/DDIM comparison does not apply")
    size = int(spec.size if isinstance(spec.size, int) else spec.size[0])
    condition = phantom_condition(mcfg, spec, size).to(s.device)
    denoiser = conditional_denoiser(model, condition)
    shape = (1, mcfg.image_channels, size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(s.seed)).to(s.device)
    start = time.perf_counter()

    def run(sampler: str, steps: int, seed: int) -> torch.Tensor:
        log(f"quality {folder.name}: {sampler} {steps} steps (seed {seed})")
        gen = torch.Generator(device=s.device).manual_seed(seed)
        with torch.inference_mode():
            return sample(denoiser, shape, scfg, sampler=sampler, steps=steps, generator=gen, device=s.device, noise=noise)

    reference = run("ddpm", REFERENCE_STEPS, s.seed)
    q = Quality(name=folder.name, source=f"{folder} ({described}; preset {mcfg.preset}, {size} px, "
                       f"phantom {spec.modality} prior)")
    q.reference_spread = _ssim(run("ddpm", REFERENCE_STEPS, s.seed + 1), reference)
    for n in sorted(s.ddim_steps):
        q.ssim[n] = _ssim(run("ddim", n, s.seed), reference)
    q.seconds = time.perf_counter() - start
    return q


# --------------------------------------------------------------------------- 5b. whole volume at the defaults
#: (sampler, steps, precision) of the whole-volume rows; the first is the reference the others are scored against
#: 3D-consistency settings of section 5b (``seg2med.generate`` options beside the defaults; "" = none)
VOLUME_VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "correlated noise 0.9": {"slice_noise": "correlated", "slice_correlation": 0.9},
    "shared noise": {"slice_noise": "shared"},
    "tri-planar": {"tri_planar": True},
}
#: (sampler, steps, precision, variant of VOLUME_VARIANTS) of section 5b; the first row is the reference
VOLUME_ROWS: tuple[tuple[str, int, str, str], ...] = (
    ("ddim", 50, "fp32", ""), ("ddim", DEFAULT_STEPS, "auto", ""), ("ddim", 4, "auto", ""), ("ddim", 6, "auto", ""),
    ("ddim", 10, "auto", ""), ("dpm++", 4, "auto", ""), ("dpm++", 6, "auto", ""), ("dpm++", 8, "auto", ""),
    ("dpm++", 10, "auto", ""), ("ddim", DEFAULT_STEPS, "auto", "correlated noise 0.9"),
    ("ddim", DEFAULT_STEPS, "auto", "shared noise"), ("ddim", DEFAULT_STEPS, "auto", "tri-planar"))
QUICK_VOLUME_ROWS: tuple[tuple[str, int, str, str], ...] = (("ddim", DEFAULT_STEPS, "fp32", ""),
                                                            ("ddim", DEFAULT_STEPS, "auto", ""),
                                                            ("ddim", DEFAULT_STEPS, "auto", "correlated noise 0.9"))
VOLUME_SECONDS_TARGET = 60.0  # a 64-slice 128-px volume at the generate defaults, on this CPU
VOLUME_TARGET_SLICES = 64
SUBJECT_A_Z0 = 24  # first axial slice of subject A's CT used for the volume (of 112; 64 slices: 24..87)


@dataclass
class VolumeRow:
    """One whole-volume ``seg2med.generate`` call, scored against the reference row of the same model."""

    sampler: str
    steps: int
    asked: str  # the precision asked for (``auto`` or a name)
    precision: str  # what it resolved to
    seconds: float
    default: bool = False  # the generate defaults (steps DEFAULT_STEPS, DDIM, precision auto)
    variant: str = ""  # the 3D-consistency setting (VOLUME_VARIANTS), "" = the model's defaults
    speedup: float = math.nan
    ssim: float = math.nan  # to the reference, inside the body, axial planes
    mae_hu: float = math.nan
    roughness_z: float = math.nan  # vs the real CT, when there is one
    roughness_xy: float = math.nan


@dataclass
class VolumeResult:
    """The rows of one model (first row: the reference), or why it was skipped."""

    name: str
    source: str = ""
    shape: tuple[int, ...] = ()
    rows: list[VolumeRow] = field(default_factory=list)
    skipped: str = ""
    real: bool = False  # roughness against a real CT


def subject_a_volume(data: Path, slices: int, size: int) -> tuple[Any, Any, str] | None:
    """Subject A's TotalSegmentator labels (``example_seg_fast_force_split``, 3 mm) and CT on a ``size`` x ``size``
    x ``slices`` grid: ``slices`` axial slices from :data:`SUBJECT_A_Z0` (centred when fewer remain), the
    122 x 101 px planes padded (labels 0, CT -1024 HU) or centre-cropped to ``size`` px, the affine shifted with
    them (same 3 mm voxels). Returns (labels, CT, description), or None when the files are absent."""
    import numpy as np

    from seg2med.io import Volume, load_volume

    ts = data / "totalsegmentator"
    paths = ts / "example_seg_fast_force_split.nii.gz", ts / "example_ct.nii.gz"
    if not all(p.is_file() for p in paths):
        return None
    lab, ct = load_volume(paths[0], kind="labels"), load_volume(paths[1])
    nz = ct.shape[2]
    z0 = SUBJECT_A_Z0 if SUBJECT_A_Z0 + slices <= nz else max(0, (nz - slices) // 2)

    def grid(v: Any, fill: float) -> Any:
        a = v.array[:, :, z0:z0 + slices]
        offset = [0, 0, z0]
        pads = []
        for axis in (0, 1):
            n = a.shape[axis]
            if n >= size:  # centre crop
                lo = (n - size) // 2
                a = np.take(a, range(lo, lo + size), axis=axis)
                offset[axis] = lo
                pads.append((0, 0))
            else:
                lo = (size - n) // 2
                pads.append((lo, size - n - lo))
                offset[axis] = -lo
        a = np.pad(a, pads + [(0, 0)], constant_values=fill)
        shift = np.eye(4)
        shift[:3, 3] = offset
        return Volume(np.ascontiguousarray(a), v.affine @ shift, None, v.path)

    labels, image = grid(lab, 0), grid(ct, -1024.0)
    how = (f"subject A (`example_seg_fast_force_split.nii.gz` labels, body contour from `example_ct.nii.gz`), 3 mm voxels, "
           f"axial slices {z0}..{z0 + image.shape[2] - 1} of {nz}, planes 122 x 101 px padded / cropped to "
           f"{size} x {size} px (CT padding -1024 HU)")
    return labels, image, how


def volume_inputs(s: Settings, slices: int) -> tuple[Any, Any, str]:
    """(label volume as ``build_anatomy`` gives it, real CT or None, description): subject A when its files are
    under ``--data``, else the synthetic phantom (no real CT)."""
    import seg2med

    found = subject_a_volume(s.data, slices, s.volume_size)
    if found is not None:
        labels, image, how = found
        return seg2med.build_anatomy(labels, scheme="total", image=image, modality="ct"), image, how
    lv = seg2med.make_phantom(seed=0, spacing=3.0, slices=slices, size=s.volume_size)
    return lv, None, (f"synthetic phantom (seed 0, 3 mm, {s.volume_size} px, {slices} slices; subject A not found under "
                      f"{s.data}: no real CT, no roughness columns)")


def _z_crop(lv: Any, n: int) -> Any:
    """The first ``n`` axial slices of a label volume (for warm-up calls)."""
    import dataclasses

    import numpy as np

    from seg2med.io import Volume

    v = lv.volume
    return dataclasses.replace(lv, volume=Volume(np.ascontiguousarray(v.array[:, :, :n]), v.affine, None, v.path))


def measure_volume(s: Settings, folder: Path, slices: int) -> VolumeResult:
    """Every :data:`VOLUME_ROWS` setting of one model on the same label volume and seed, timed end to end
    (``seg2med.generate`` with the run folder: loading, prior, slicing, sampling, reassembly), one call each
    in turn after an untimed warm-up per precision; scored against the first row."""
    import numpy as np

    import seg2med
    from seg2med.inference import load_model
    from seg2med.metrics.image import mae, ssim
    from seg2med.evaluation.core import intensity_metrics
    from seg2med.models.precision import resolve_precision

    lm = load_model(folder, device="cpu")
    if not lm.is_diffusion or lm.spec.modality != "ct":
        return VolumeResult(folder.name, skipped=f"{folder}: a {lm.method} {lm.spec.modality} model; this section needs a CT diffusion model")
    lv, real, how = volume_inputs(s, slices)
    body = lv.volume.array != 0
    window = lm.spec.image_window()  # the model's intensity window (HU), as generate maps its output
    lo, hi = float(window["low"]), float(window["high"])

    def unit(a: Any) -> Any:
        return np.clip((np.asarray(a, np.float64) - lo) / (hi - lo), 0, 1)

    real01 = unit(real.array) if real is not None else None
    dev = str(s.device)
    warm = _z_crop(lv, min(4, slices))
    for p in dict.fromkeys(resolve_precision(p, s.device, inference=True) for _, _, p, _ in s.volume_rows):
        log(f"volume {folder.name}: warm-up {p}")
        seg2med.generate(warm, model=folder, steps=1, precision=p, seed=s.seed, device=dev)
    res = VolumeResult(folder.name, source=how, shape=tuple(lv.volume.shape), real=real01 is not None)
    ref01 = ref_hu = None
    for sampler, steps, asked, variant in s.volume_rows:
        precision = resolve_precision(asked, s.device, inference=True)
        log(f"volume {folder.name}: {sampler} {steps} steps {variant}, precision {asked} -> {precision}, {slices} slices")
        t0 = time.perf_counter()
        out = seg2med.generate(lv, model=folder, steps=steps, sampler=sampler, precision=asked, seed=s.seed, device=dev,
                               **VOLUME_VARIANTS[variant])
        seconds = time.perf_counter() - t0
        hu = out.samples[0].array
        row = VolumeRow(sampler, steps, asked, str(out.metadata.get("precision", precision)), seconds,
                        default=(sampler == "ddim" and steps == DEFAULT_STEPS and asked == "auto" and not variant),
                        variant=variant)
        gen01 = unit(hu)
        if ref01 is None:
            ref01, ref_hu = gen01, hu
        row.speedup = res.rows[0].seconds / seconds if res.rows else 1.0
        row.ssim = ssim(gen01, ref01, data_range=1.0, mask=body, axis=2)
        row.mae_hu = mae(hu, ref_hu, body)
        if real01 is not None:
            m = intensity_metrics(gen01, real01, body, ("roughness_z", "roughness_xy"))
            row.roughness_z, row.roughness_xy = m["roughness_z"], m["roughness_xy"]
        log(f"volume {folder.name}: {seconds:.1f} s, SSIM {row.ssim:.4f}, MAE {row.mae_hu:.1f} HU, "
            f"roughness z {row.roughness_z:.3f} xy {row.roughness_xy:.3f}")
        res.rows.append(row)
    return res


def measure_volumes(s: Settings, done: Callable[[list[VolumeResult]], None] | None = None) -> list[VolumeResult]:
    """One :class:`VolumeResult` per volume model (``--model``, else the shipped ones; ``--quick``: ct-demo-tiny);
    ``done`` gets the results so far after each model (a long run leaves a partial report)."""
    if not s.volume_models:
        return [VolumeResult("-", skipped="no CT diffusion model (pass --model)")]
    out: list[VolumeResult] = []
    for i, folder in enumerate(s.volume_models):
        slices = s.volume_slices[min(i, len(s.volume_slices) - 1)]
        out.append(measure_volume(s, folder, slices))
        if done is not None and i + 1 < len(s.volume_models):
            done(out)
    return out


def _volume_label(r: VolumeRow) -> str:
    return "DDIM" if r.sampler == "ddim" else "DPM-Solver++ 2M" if r.sampler == "dpm++" else r.sampler.upper()


def volume_section(vs: list[VolumeResult], s: Settings) -> list[str]:
    lines = ["## 5b. Whole volume at the generate defaults", ""]
    done = [v for v in vs if not v.skipped]
    ref = done[0].rows[0] if done else None
    ref_name = f"{_volume_label(ref)}-{ref.steps} {ref.precision}" if ref else "the reference"
    lines += [(f"`seg2med.generate(labels, model=..., steps=N, sampler=..., precision=..., seed={s.seed}, device=\"{s.device.type}\")` "
               "end to end (model loading, prior simulation, slicing, sampling in batches of 8, reassembly; "
               "everything else at the generate defaults, including the model's config.json `sampling` guidance), "
               "one call per row in turn after an untimed warm-up call per precision (4 slices, 1 step); a single "
               "call per row, so with other processes on the CPU (load average in the header) the seconds carry "
               "their noise (tens of percent on a shared machine) and the speed-ups are indicative. "
               f"Quality against the model's own {ref_name} volume of the same seed (DDIM-50 fp32 was the generate "
               "default before DDIM-8 at precision auto): SSIM "
               "on the model's intensity window mapped to [0, 1], axial planes, mean of the SSIM map over the body "
               "(`seg2med.metrics.image.ssim`, axis 2), MAE in HU inside the body. "
               f"Precision `auto` -> bf16 on a CPU with AMX / AVX512-BF16, else fp32 "
               "(`resolve_precision(..., inference=True)`). `defaults` = the row `seg2med.generate` runs when "
               f"nothing is asked (DDIM-{DEFAULT_STEPS}, precision auto)."), ""]
    for v in vs:
        if v.skipped:
            lines += [f"- `{v.name}`: skipped ({v.skipped})", ""]
            continue
        shape = " x ".join(map(str, v.shape))
        lines += [f"### {v.name} ({shape} voxels)", "", f"Volume: {v.source}."
                  + (" Roughness: `roughness_z` / `roughness_xy` of `seg2med evaluate` against the real CT "
                     "(synthetic / real mean squared neighbour difference inside the body; 1 = as smooth as the real CT)."
                     if v.real else ""), ""]
        head = ["row", "sampler", "steps", "3D setting", "precision", "s / volume", f"speed-up vs {ref_name}", f"SSIM to {ref_name}",
                f"MAE HU to {ref_name}"] + (["roughness_z", "roughness_xy"] if v.real else [])
        body = []
        for i, r in enumerate(v.rows):
            old = (r.sampler, r.steps, r.precision) == ("ddim", 50, "fp32")
            what = ("reference" + (" (old default)" if old else "")) if i == 0 else "defaults" if r.default else ""
            prec = r.precision if r.asked == r.precision else f"{r.asked} -> {r.precision}"
            cells = [what, _volume_label(r), str(r.steps), r.variant or "-", prec, f"{r.seconds:.1f}", f"{r.speedup:.2f}x",
                     f"{r.ssim:.4f}", f"{r.mae_hu:.2f}"]
            if v.real:
                cells += [f"{r.roughness_z:.3f}", f"{r.roughness_xy:.3f}"]
            body.append(cells)
        lines += _table(head, body, "llrllrrrr" + ("rr" if v.real else "")) + [""]
    side = [(v, r) for v in done for r in v.rows if r.default or r.variant]
    if len(done) > 1 or any(r.variant for _, r in side):
        lines += ["### 3D consistency side by side (DDIM at the defaults)", "",
                  "Each model against its own reference row; `roughness_z` 1 = as smooth across slices as the real CT.", ""]
        real = all(v.real for v, _ in side)
        head = ["model", "3D setting", "s / volume", "SSIM to own reference", "MAE HU"] + (["roughness_z"] if real else [])
        body = [[v.name, r.variant or "defaults", f"{r.seconds:.1f}", f"{r.ssim:.4f}", f"{r.mae_hu:.2f}"]
                + ([f"{r.roughness_z:.3f}"] if real else []) for v, r in side]
        lines += _table(head, body, "llrrr" + ("r" if real else "")) + [""]
    return lines


def volume_target_lines(vs: list[VolumeResult]) -> list[str]:
    """Per model: the defaults row within 60 s for a 64-slice 128-px volume and SSIM >= 0.99 to the reference."""
    lines = []
    for v in vs:
        head = (f"- {VOLUME_TARGET_SLICES}-slice 128-px volume at the defaults ≤ {VOLUME_SECONDS_TARGET:.0f} s on this CPU "
                f"and SSIM ≥ {SSIM_TARGET} to DDIM-50 ({v.name})")
        if v.skipped:
            lines.append(head + f": skipped ({v.skipped})")
            continue
        ref = v.rows[0]
        d = next((r for r in v.rows if r.default), None)
        if d is None:
            lines.append(head + ": undecided (no defaults row)")
            continue
        slices, px = v.shape[2], v.shape[0]
        seconds = d.seconds * VOLUME_TARGET_SLICES / slices  # sampling dominates and scales with the slices
        measured = (f"{d.seconds:.1f} s for {slices} slices" +
                    (f" = {seconds:.1f} s scaled to {VOLUME_TARGET_SLICES}" if slices != VOLUME_TARGET_SLICES else ""))
        ref_name = f"{_volume_label(ref)}-{ref.steps} {ref.precision}"
        not_same = "" if (ref.sampler, ref.steps, ref.precision, px) == ("ddim", 50, "fp32", 128) else \
            f"; reference here {ref_name} at {px} px, so not the target's setting"
        ok = seconds <= VOLUME_SECONDS_TARGET and d.ssim >= SSIM_TARGET
        lines.append(head + f": {'yes' if ok else 'no'} ({measured}, {d.precision}; SSIM {d.ssim:.4f}, "
                     f"MAE {d.mae_hu:.1f} HU to {ref_name}, {d.speedup:.1f}x faster{not_same})")
    return lines


# --------------------------------------------------------------------------- report
def _table(header: Sequence[str], rows: Iterator[Sequence[str]] | list[Sequence[str]], align: str) -> list[str]:
    """Markdown table; ``align`` has one ``l``/``r`` per column."""
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def ceiling_section(ceilings: dict[str, Ceiling], bf16_note: str) -> list[str]:
    rows = []
    for c in ceilings.values():
        if c.supported:
            shape = f"{c.n} x {c.n}" + (f" x {c.iters} calls" if c.iters > 1 else "")
            end = "-" if math.isnan(c.gflops_end) else f"{c.gflops_end:.1f}"
            rows.append([c.dtype, "yes", shape, f"{c.gflops:.1f}", end, str(c.repeats), c.note])
        else:
            rows.append([c.dtype, "no", "-", "-", "-", "-", c.note])
    return ["## 1. Matmul ceiling", "",
            ("Square `torch.mm`, size doubled until one call takes >= 50 ms; median of the repeats after a warm-up. "
            "Measured first and again after the model timings; fractions in section 3 use the higher value."), "",
            *_table(["dtype", "supported", "matrix", "GFLOP/s", "again at end", "repeats", "note"], rows, "lllrrrl"),
            "", f"Model timings: {bf16_note}.", ""]


def flops_section(rows: list[FlopsRow]) -> list[str]:
    body = [[r.preset, f"{r.params:,}", str(r.size), str(r.flops), f"{r.flops / 1e9:.2f}"] for r in rows]
    return ["## 2. Model size and FLOPs per forward pass", "",
            ("`torch.utils.flop_counter.FlopCounterMode`, batch 1 (conv, matmul and attention; 2 FLOPs per "
            "multiply-add; norms and activations not counted). FLOPs scale linearly with the batch."), "",
            *_table(["preset", "parameters", "size", "FLOPs (batch 1)", "GFLOP"], body, "lrrrr"), ""]


def forward_section(rows: list[ForwardRow], s: Settings) -> list[str]:
    body = [[r.preset, str(r.size), r.dtype, r.layout, str(r.batch), f"{r.timing.median_s * 1e3:.1f}",
             f"{r.timing.median_s * 1e3 / r.batch:.1f}", f"{r.gflops:.1f}", f"{r.fraction:.1%}", str(r.timing.n)]
            for r in rows]
    return ["## 3. Forward pass", "",
            (f"`torch.inference_mode()`, {s.warmup} warm-up call(s), median of up to {s.repeats} repeats "
            f"(fewer when one call is long). Fraction = achieved / matmul ceiling of the same dtype (the higher of its two measurements). "
            "Layout `nhwc` = channels-last weights, what `seg2med generate` and section 4 use; `nchw` = PyTorch's default."), "",
            *_table(["preset", "size", "dtype", "layout", "batch", "ms / forward", "ms / slice", "GFLOP/s",
                     "of ceiling", "repeats"], body, "lrllrrrrrr"), ""]


def breakdown_section(rows: list[Breakdown], s: Settings) -> list[str]:
    groups = [g for g, _ in OP_GROUPS] + [OTHER_GROUP]
    unit = ("GPU time of the kernels each ATen operator launched (launch gaps not included, compare "
            "section 3)") if s.device.type == "cuda" else "ATen operator CPU"
    body = []
    for r in rows:
        if r.skipped:
            body.append([r.preset, str(r.size), r.dtype, str(r.batch), "-", *["-"] * len(groups), "-", "-", r.skipped])
            continue
        frac = r.conv_gflops / r.ceiling.best if r.ceiling.best > 0 else math.nan
        top = ", ".join(f"{name} {share:.1%}" for name, share in r.top_other)
        body.append([r.preset, str(r.size), r.dtype, str(r.batch), f"{r.total_s * 1e3:.1f}",
                     *[f"{r.shares[g]:.1%}" for g in groups], f"{r.conv_gflops:.1f}", f"{frac:.1%}", top])
    return ["## 3b. Where the forward time goes", "",
            (f"`torch.profiler`, channels-last, mean of 2 profiled forwards after a warm-up: {unit} self time "
             "per group (`ms profiled` is their sum per forward; profiling adds a little overhead). "
             "`conv GFLOP/s` = the convolutions' FLOPs (section 2) / their own time, and its fraction of the "
             "same matmul ceiling as section 3: how fast the FLOP-carrying part runs. GroupNorm, SiLU and the "
             "rest carry no counted FLOPs, so their share of the time is what keeps a whole forward below "
             "the ceiling."), "",
            *_table(["preset", "size", "dtype", "batch", "ms profiled", *groups, "conv GFLOP/s", "conv of ceiling",
                     "largest of the rest"], body, "lrlrr" + "r" * len(groups) + "rrl"), ""]


def sampling_section(rows: list[SamplingRow], s: Settings) -> list[str]:
    def label(r: SamplingRow) -> str:
        return "DDPM (paper)" if r.sampler == "ddpm" else "DDIM"

    def how(r: SamplingRow) -> str:
        return f"measured end-to-end (median of {r.measured.n})" if r.measured is not None else "per-step x steps"

    body = [[r.preset, str(r.size), label(r), str(r.steps), f"{r.seconds / r.batch:.2f}", how(r),
             f"{r.step.median_s * 1e3:.1f} ({r.step.n})", f"{r.estimate_s / r.batch:.2f}", f"{r.ratio:.1f}",
             r.ratio_from] for r in rows]
    return ["## 4. Sampling cost", "",
            (f"fp32, sampling batch {s.sample_batch}; `s / slice` = seconds per batch / {s.sample_batch}, "
             f"**measured end-to-end** (`seg2med.sampling.sample`) when the estimate fits {s.e2e_budget_s:g} s, "
             "otherwise **per-step cost x steps** (column `how`). The per-step cost is one sampler step "
             f"(network + scheduler update), from runs of {s.probe_steps} steps, DDPM and DDIM interleaved "
             "(median, number of runs in brackets). `DDPM-500 ÷ this` is the cost ratio, end-to-end when both "
             "rows were run end-to-end, else from the per-step estimates of both."), "",
            *_table(["preset", "size", "sampler", "steps", "s / slice", "how", "ms / step (runs)",
                     "per-step x steps, s / slice", "DDPM-500 ÷ this", "ratio from"], body, "lrlrrlrrrl"), ""]


def quality_section(qs: list[Quality]) -> list[str]:
    head = ["## 5. Quality vs steps", ""]
    cols = ["model", "comparison", "SSIM to DDPM-1000", "note"]
    rows: list[list[str]] = []
    sources: list[str] = []
    for q in qs:
        if q.skipped:
            rows.append([q.name or "-", "quality measurement skipped", "-",
                         q.skipped + "; an untrained network's SSIM says nothing about quality"])
            continue
        sources.append(f"- `{q.name}`: {q.source}; {q.seconds:.0f} s.")
        rows += [[q.name, f"DDIM-{n} vs DDPM-1000", f"{v:.4f}", "same seed, prior and start noise"] for n, v in q.ssim.items()]
        rows.append([q.name, "DDPM-1000 seed+1 vs DDPM-1000", f"{q.reference_spread:.4f}",
                     "reference spread: same start noise, other ancestral noise"])
    intro = (["SSIM (`skimage`, data_range=2 on [-1, 1]) of the clipped outputs, one phantom prior slice per model. "
              "Only as meaningful as each checkpoint is trained. Models:", "", *sources, ""] if sources else [])
    return head + intro + _table(cols, rows, "llrl") + [""]


def summary_section(fwd: list[ForwardRow], samp: list[SamplingRow], qs: list[Quality], vs: list[VolumeResult],
                    s: Settings) -> list[str]:
    lines = ["## 6. Summary", ""]
    for n in s.ddim_steps:
        ratios = [r.ratio for r in samp if r.sampler == "ddim" and r.steps == n]
        if ratios:
            worst = min(ratios)
            lines.append(f"- DDIM-{n} cost ≤ 1/{COST_TARGET:.0f} of DDPM-{PAPER_STEPS}: "
                         f"{'yes' if worst >= COST_TARGET else 'no'} (ratio {worst:.1f}x, lowest of {len(ratios)})")
    for q in qs:
        who = f" ({q.name})" if q.name else ""
        for n in s.ddim_steps:
            if q.skipped:
                lines.append(f"- DDIM-{n} SSIM ≥ {SSIM_TARGET} to DDPM-{REFERENCE_STEPS}{who}: skipped (no trained model)")
            else:
                v = q.ssim[n]
                lines.append(f"- DDIM-{n} SSIM ≥ {SSIM_TARGET} to DDPM-{REFERENCE_STEPS}{who}: "
                             f"{'yes' if v >= SSIM_TARGET else 'no'} ({v:.4f}; reference spread {q.reference_spread:.4f})")
        lines.append(combined_target_line(samp, q))
    valid = [r for r in fwd if not math.isnan(r.fraction)]
    if valid:
        best = max(valid, key=lambda r: r.fraction)
        lines.append(f"- ≥ {CEILING_TARGET:.0%} of the measured ceiling: {'yes' if best.fraction >= CEILING_TARGET else 'no'} "
                     f"(best {best.fraction:.1%}: {best.preset} {best.size} px {best.dtype} {best.layout} batch {best.batch})")
    lines += volume_target_lines(vs)
    return lines + [""]


def combined_target_line(samp: list[SamplingRow], q: Quality) -> str:
    """The issue's target as one statement per model: some DDIM-N is both ≤ 1/50 of DDPM-500's cost
    (in every preset x size timed) and ≥ 0.99 SSIM to DDPM-1000; names the fewest-step N that is, or why none."""
    head = f"- DDIM at ≤ 1/{COST_TARGET:.0f} of DDPM-{PAPER_STEPS}'s cost with SSIM ≥ {SSIM_TARGET}" + (f" ({q.name})" if q.name else "")
    if q.skipped:
        return head + ": undecided (no trained model for the SSIM half)"
    worst = {n: min(r.ratio for r in samp if r.sampler == "ddim" and r.steps == n)
             for n in q.ssim if any(r.sampler == "ddim" and r.steps == n for r in samp)}
    both = [n for n, ratio in worst.items() if ratio >= COST_TARGET and q.ssim[n] >= SSIM_TARGET]
    if both:
        n = min(both)
        return head + f": yes, DDIM-{n} (cost ratio {worst[n]:.1f}x, SSIM {q.ssim[n]:.4f})"
    tried = ", ".join(f"DDIM-{n}: {worst[n]:.1f}x / {q.ssim[n]:.4f}" for n in sorted(worst))
    return head + f": no ({tried or 'no DDIM row timed'})"


def render(s: Settings, ceilings: dict[str, Ceiling], bf16_note: str, flops: list[FlopsRow],
           fwd: list[ForwardRow], brk: list[Breakdown], samp: list[SamplingRow], qs: list[Quality],
           vs: list[VolumeResult], seconds: float, load: str) -> str:
    """The whole Markdown report."""
    command = " ".join(["python benchmarks/sampling.py", shlex.join(s.argv)]).strip()
    when = f"{_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    volume_only = s.sections == "volume"
    head = [f"# seg2med sampling benchmark ({s.device.type}{', quick' if s.quick else ''}"
            f"{', whole volume only' if volume_only else ''})", "",
            f"- Machine: {machine_description(s)}",
            (f"- Run: {when}, `{command}`, {seconds:.0f} s in all; 1-min load average {load} at the start, "
            f"{load_average()} at the end (other processes on the machine slow the timings)"),
            *([] if volume_only else [(
            f"- Presets {', '.join(s.presets)}; sizes {', '.join(map(str, s.sizes))} px; forward batches "
            f"{', '.join(map(str, s.batches))}; sampling batch {s.sample_batch}. Scheduler: DDPM, 1000 training "
            "timesteps, linear betas, epsilon prediction (seg2med paper). Timings use randomly initialised "
            "weights (the cost does not depend on them).")]),
            *([f"- Note: {s.note}"] if s.note else []),
            ""]
    if volume_only:
        parts = [head, volume_section(vs, s), summary_section(fwd, samp, qs, vs, s)]
    else:
        parts = [head, ceiling_section(ceilings, bf16_note), flops_section(flops), forward_section(fwd, s),
                 breakdown_section(brk, s), sampling_section(samp, s), quality_section(qs), volume_section(vs, s),
                 summary_section(fwd, samp, qs, vs, s)]
    return "\n".join(line for part in parts for line in part)


# --------------------------------------------------------------------------- main
def benchmark_models(s: Settings, ceilings: dict[str, Ceiling], bf16: bool
                     ) -> tuple[list[FlopsRow], list[ForwardRow], list[Breakdown], list[SamplingRow]]:
    """FLOPs, forward timings, their breakdown and sampling cost for every preset x size."""
    flops_rows, fwd_rows, brk_rows, samp_rows = [], [], [], []
    # fp32 in both layouts (what channels-last buys), bf16 in the one seg2med samples with
    variants = [("fp32", "nhwc"), ("fp32", "nchw")] + ([("bf16", "nhwc")] if bf16 else [])
    for preset in s.presets:
        model, cfg = make_model(preset, s.device, s.seed)
        for size in s.sizes:
            log(f"{preset} {size} px: FLOPs")
            flops, conv_flops = count_flops(model, cfg, size, s.device)
            flops_rows.append(FlopsRow(preset, size, count_parameters(model), flops, conv_flops))
            for dtype, layout in variants:
                set_layout(model, layout)
                for batch in s.batches:
                    log(f"{preset} {size} px: forward {dtype} {layout} batch {batch}")
                    t = time_forward(model, cfg, size, batch, dtype, s)
                    fwd_rows.append(ForwardRow(preset, size, dtype, layout, batch, t, flops, ceilings[dtype]))
            set_layout(model, "nhwc")
            log(f"{preset} {size} px: profile")
            brk_rows += breakdown_rows(model, cfg, preset, size, conv_flops, ceilings, bf16, s)
            log(f"{preset} {size} px: sampling cost")
            samp_rows += sampling_rows(model, cfg, preset, size, s)
        del model
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
    return flops_rows, fwd_rows, brk_rows, samp_rows


def main(argv: Sequence[str] | None = None) -> int:
    from seg2med.errors import Seg2MedError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    s = resolve_settings(args, argv)
    configure_backends(s, args.threads)
    try:
        for folder in s.model_dirs:
            check_model_dir(folder)
        return run_benchmark(s)
    except Seg2MedError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def run_benchmark(s: Settings) -> int:
    """Measure everything, write and print the report."""
    start, load = time.perf_counter(), load_average()
    if s.sections == "volume":
        ceilings, bf16_note, flops, fwd, brk, samp, quality = {}, "", [], [], [], [], []
    else:
        ceilings = measure_ceilings(s)
        bf16, bf16_note = bf16_decision(s, ceilings)
        flops, fwd, brk, samp = benchmark_models(s, ceilings, bf16)
        for name in ("fp32", "bf16") if bf16 else ("fp32",):
            log(f"matmul ceiling {name} again")
            remeasure_ceiling(ceilings[name], s.device, s.repeats)
        quality = measure_quality(s)

    def partial(vs: list[VolumeResult]) -> None:
        write_text(s.out, render(s, ceilings, bf16_note, flops, fwd, brk, samp, quality, vs, time.perf_counter() - start,
                                 load) + "\n_Partial: the run is still going._\n", overwrite=True)
        log(f"wrote partial {s.out}")

    volumes = measure_volumes(s, partial)
    report = render(s, ceilings, bf16_note, flops, fwd, brk, samp, quality, volumes, time.perf_counter() - start, load)
    write_text(s.out, report, overwrite=True)  # atomic: a temporary file beside it, then os.replace
    sys.stdout.write(report)
    log(f"wrote {s.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
