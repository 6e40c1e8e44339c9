"""Eager vs ``torch.compile`` forward pass of seg2med's diffusion UNet, in one run on one machine.

Usage::

    python benchmarks/compile_forward.py [--device auto|cpu|cuda] [--presets paper] [--sizes 128,256]
        [--batch 8] [--dtypes fp32,bf16] [--mode default|reduce-overhead|max-autotune]
        [--repeats N] [--threads N] [--out FILE.md] [--quick]

Section 3b of ``benchmarks/sampling.py`` shows that GroupNorm, SiLU, residual adds and skip
concatenations (memory-bound, no counted FLOPs) keep an eager forward below the matmul ceiling.
``torch.compile`` (inductor) fuses those element-wise chains; this script measures whether that
lifts the forward to the issue's >= 80 % of the ceiling. Per preset x size x dtype: eager and
compiled ms per forward (channels-last, ``torch.inference_mode``), the speed-up, the compile time
(first call, with an empty inductor cache unless ``TORCHINDUCTOR_CACHE_DIR`` is set), achieved
GFLOP/s and fraction of the matmul ceiling of the same dtype (measured in this run, as in
``sampling.py``), and max |compiled - eager| on one input (a sanity check: the network's
zero-initialised layers are given small random weights first, so that it is not 0 = 0).
Not part of the test suite's timing checks; the smoke test runs ``--quick``.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # cold compiles: a warm on-disk cache would hide the compile time
    _CACHE = tempfile.mkdtemp(prefix="seg2med-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

import torch  # noqa: E402  (after the cache directory is chosen)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sampling as sb  # noqa: E402  (benchmarks/sampling.py: ceiling, FLOPs, timing helpers)
from seg2med.io.files import write_text  # noqa: E402


@dataclass
class Row:
    preset: str
    size: int
    dtype: str
    batch: int
    flops: int  # batch 1
    eager: sb.Timing
    compiled: sb.Timing | None
    compile_s: float
    max_diff: float
    ceiling: sb.Ceiling
    error: str = ""

    def fraction(self, t: sb.Timing | None) -> float:
        if t is None or self.ceiling.best <= 0:
            return math.nan
        return self.flops * self.batch / t.median_s / 1e9 / self.ceiling.best


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--presets", type=sb._str_list, default=["paper"])
    p.add_argument("--sizes", type=sb._int_list, default=[128, 256])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtypes", type=sb._str_list, help="fp32 and/or bf16 (default: both where bf16 runs)")
    p.add_argument("--mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile mode")
    p.add_argument("--repeats", type=int, help="timed repeats (default cpu 5, cuda 20)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 (default strict fp32)")
    p.add_argument("--out", type=Path, help="Markdown file (default benchmarks/results/compile-<device>.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: preset tiny at 32 px, batch 2, fp32, 2 repeats")
    return p.parse_args(argv)


def randomise_zero_layers(model: torch.nn.Module, seed: int) -> None:
    """MONAI zero-initialises output convolutions (the untrained network outputs 0): give every
    all-zero floating parameter small random values so that outputs can be compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.device, p.dtype))


def measure(preset: str, size: int, dtype: str, batch: int, mode: str, ceiling: sb.Ceiling,
            device: torch.device, repeats: int, seed: int) -> Row:
    model, cfg = sb.make_model(preset, device, seed)
    randomise_zero_layers(model, seed)
    flops, _ = sb.count_flops(model, cfg, size, device)
    x, t = sb.model_inputs(cfg, batch, size, device)
    x = x.contiguous(memory_format=torch.channels_last)
    budget = 2.0 if device.type == "cuda" else 5.0
    warmup = 3 if device.type == "cuda" else 1

    def runner(net: torch.nn.Module):
        def run() -> torch.Tensor:
            with torch.inference_mode(), sb.autocast(device, dtype):
                return net(x, timesteps=t)
        return run

    sb.log(f"{preset} {size} px {dtype} batch {batch}: eager")
    eager_fn = runner(model)
    eager = sb.time_call(eager_fn, device, warmup, repeats, budget)
    reference = eager_fn().float()
    sb.log(f"{preset} {size} px {dtype} batch {batch}: compile ({mode})")
    torch._dynamo.reset()  # a fresh cache per shape and dtype: no recompile limit, no reuse across rows
    try:
        compiled_net = torch.compile(model, mode=mode, dynamic=False)
        compiled_fn = runner(compiled_net)
        start = time.perf_counter()
        out = compiled_fn()
        sb.synchronize(device)
        compile_s = time.perf_counter() - start
        compiled = sb.time_call(compiled_fn, device, warmup, repeats, budget)
        diff = float((out.float() - reference).abs().max())
    except Exception as exc:  # noqa: BLE001  (a backend that cannot compile here is a result, not a crash)
        return Row(preset, size, dtype, batch, flops, eager, None, math.nan, math.nan, ceiling,
                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200])
    finally:
        torch._dynamo.reset()
    return Row(preset, size, dtype, batch, flops, eager, compiled, compile_s, diff, ceiling)


def render(rows: list[Row], ceilings: dict[str, sb.Ceiling], args: argparse.Namespace, device: torch.device,
           argv: Sequence[str], seconds: float) -> str:
    import shlex

    desc = sb.machine_description(SimpleNamespace(device=device, tf32=args.tf32))
    lines = [f"# seg2med forward pass, eager vs torch.compile ({device.type}{', quick' if args.quick else ''})", "",
             f"- Machine: {desc}",
             f"- Run: {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
             f"`python benchmarks/compile_forward.py {shlex.join(list(argv))}`, {seconds:.0f} s in all; "
             f"torch.compile mode `{args.mode}`, `dynamic=False`, channels-last, `torch.inference_mode`",
             "- Matmul ceiling (square `torch.mm`, as in `sampling.py`): "
             + ", ".join(f"{c.dtype} {c.gflops:.1f} GFLOP/s" for c in ceilings.values() if c.supported), "",
             "| preset | size | dtype | batch | eager ms | compiled ms | speed-up | compile s | eager of ceiling "
             "| compiled of ceiling | max abs diff | note |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r.compiled is None:
            lines.append(f"| {r.preset} | {r.size} | {r.dtype} | {r.batch} | {r.eager.median_s * 1e3:.1f} | - | - | - "
                         f"| {r.fraction(r.eager):.1%} | - | - | compile failed: {r.error} |")
            continue
        lines.append(f"| {r.preset} | {r.size} | {r.dtype} | {r.batch} | {r.eager.median_s * 1e3:.1f} "
                     f"| {r.compiled.median_s * 1e3:.1f} | {r.eager.median_s / r.compiled.median_s:.2f}x "
                     f"| {r.compile_s:.1f} | {r.fraction(r.eager):.1%} | {r.fraction(r.compiled):.1%} "
                     f"| {r.max_diff:.2e} | {r.compiled.n} repeats |")
    fracs = [(max(r.fraction(r.eager), r.fraction(r.compiled) if r.compiled else -1.0), r) for r in rows]
    if fracs:
        best, r = max(fracs, key=lambda fr: fr[0])
        lines += ["", f"- ≥ {sb.CEILING_TARGET:.0%} of the measured ceiling, eager or compiled: "
                  f"{'yes' if best >= sb.CEILING_TARGET else 'no'} (best {best:.1%}: {r.preset} {r.size} px {r.dtype} batch {r.batch})"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = sb.resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    if args.quick:
        args.presets, args.sizes, args.batch, args.repeats = ["tiny"], [32], 2, 2
        args.dtypes = args.dtypes or ["fp32"]
    repeats = args.repeats or (20 if cuda else 5)
    start = time.perf_counter()
    bf16_ok, why = sb.bf16_support(device)
    dtypes = args.dtypes or (["fp32", "bf16"] if bf16_ok else ["fp32"])
    if not (args.presets and args.sizes and dtypes):
        sys.stderr.write("error: --presets, --sizes and --dtypes must each name at least one value\n")
        return 2
    unknown = [d for d in dtypes if d not in ("fp32", "bf16")]
    if unknown or ("bf16" in dtypes and not bf16_ok):
        sys.stderr.write(f"error: --dtypes {','.join(dtypes)}: {'unknown ' + ','.join(unknown) if unknown else why}\n")
        return 2
    ceilings = {"fp32": sb.matmul_ceiling("fp32", device, repeats, "")}
    ceilings["bf16"] = sb.matmul_ceiling("bf16", device, repeats, why) if bf16_ok else sb.Ceiling("bf16", False, why)
    out = args.out or sb.RESULTS / f"compile-{device.type}.md"
    rows: list[Row] = []
    for p, s, d in [(p, s, d) for p in args.presets for s in args.sizes for d in dtypes]:
        rows.append(measure(p, s, d, args.batch, args.mode, ceilings[d], device, repeats, args.seed))
        # rewritten after every row: a run stopped by a time limit keeps the rows it finished
        report = render(rows, ceilings, args, device, argv, time.perf_counter() - start)
        write_text(out, report, overwrite=True)
    sys.stdout.write(report)
    sb.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
