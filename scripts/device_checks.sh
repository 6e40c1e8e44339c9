#!/usr/bin/env bash
# Issue #3's GPU checks in one run on a lent device machine (see /work/.library/device/README.md).
# The device image has torch, scipy, scikit-image, safetensors, typer, rich, matplotlib, pyyaml and
# einops but not MONAI or nibabel: fetch their wheels here first (pure Python, ~6 MB), once per session:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl monai==1.6.1 nibabel==5.3.2
# then call the device tool's `run` with carry [".whl"], timeout_s 600 and the command
#   bash scripts/device_checks.sh
# Dry run on a CPU: PY=.venv/bin/python BENCH_ARGS=--quick COMPILE_ARGS=--quick OUT=/tmp/dev bash scripts/device_checks.sh
# It writes into $OUT (or ./device-out): device-checks.json (generate determinism on the device,
# bf16 training + resume, torchrun with NCCL) and sampling-cuda.md (benchmarks/sampling.py on CUDA,
# quality with ct-demo and ct-demo-tiny) and compile-cuda.md (benchmarks/compile_forward.py, last,
# time-boxed). Copy sampling-cuda.md and compile-cuda.md to benchmarks/results/ afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY scripts/device_checks.py --out "$OUT/checks" 2>&1 | tail -n 80
rc_checks=$?
cp "$OUT/checks/device-checks.json" "$OUT/" 2>/dev/null
rm -rf "$OUT/checks"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options (e.g. --quick for a dry run on CPU)
$PY benchmarks/sampling.py --device auto --out "$OUT/sampling-cuda.md" ${BENCH_ARGS:-} \
  --note "device machine run of scripts/device_checks.sh" 2>&1 | tail -n 60
rc_bench=$?
# Last and time-boxed (it must not cost the results above): eager vs torch.compile for `paper` at
# 256 px, batch 8, fp32 and bf16 -- whether inductor's fused GroupNorm/SiLU/add chains lift the forward
# to >= 80 % of the ceiling (section 3b of sampling-cuda.md says what keeps eager below it).
# It gets what is left of the device call's 600 s (DEVICE_LIMIT, less a margin), at most COMPILE_TIMEOUT.
left=$(( ${DEVICE_LIMIT:-580} - SECONDS ))
budget=$(( left < ${COMPILE_TIMEOUT:-300} ? left : ${COMPILE_TIMEOUT:-300} ))
if [ "$budget" -ge 60 ]; then
  # shellcheck disable=SC2086
  timeout "$budget" $PY benchmarks/compile_forward.py --device auto --out "$OUT/compile-cuda.md" \
    ${COMPILE_ARGS:---presets paper --sizes 256 --batch 8} 2>&1 | tail -n 20
  rc_compile=$?
else
  echo "compile benchmark skipped: ${left} s left of the device call"
  rc_compile=skipped
fi
echo "device checks: exit ${rc_checks}; sampling benchmark: exit ${rc_bench}; compile benchmark: exit ${rc_compile} (informative)"
[ "$rc_checks" -eq 0 ] && [ "$rc_bench" -eq 0 ]
