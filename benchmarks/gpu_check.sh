#!/usr/bin/env bash
# The GPU checks of issue 20 in one go, from the repository root of a CUDA machine:
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh          # writes $OUT/capture_gpu.{md,json}, ...
#   OUT=/tmp/dry bash benchmarks/gpu_check.sh --dry    # tiny sizes, runs on a CPU: tests this script
#
# 1. benchmarks/capture_gpu.py: the statistics kernel vs FlashAttention (bf16, head dims 64 and
#    128, 2k..16k tokens, with exactness on the last queries), capture of a 1B-shaped Llama at 8k
#    tokens, generate with signals, then argmax/fp16 extras; each part is written to
#    $OUT/capture_gpu.{md,json} as it finishes, so a timeout keeps what was measured;
# 2. the CUDA tests of the suite (tests/capture/test_cuda_stats.py: exactness against eager in
#    fp32/bf16/fp16 with softcap, every tuning candidate; the GPU cases of test_stats.py and of
#    tests/train), reported in $OUT/pytest_cuda.txt and appended to capture_gpu.md.
# Needs torch with CUDA, triton and transformers; PYTHONPATH=src is set here (no install, and
# nothing that imports entmax). Time limits: BENCH_TIMEOUT (default 300 s), TEST_TIMEOUT (150 s).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-benchmarks/results/gpu_check}"
PY="${PYTHON:-python}"
DRY=""
if [ "${1:-}" = "--dry" ]; then DRY="--dry"; fi
mkdir -p "$OUT"
started=$(date +%s)
{ nvidia-smi -L || echo "no nvidia-smi"; $PY -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

timeout "${BENCH_TIMEOUT:-300}" $PY benchmarks/capture_gpu.py --out "$OUT" $DRY 2>&1 | tee "$OUT/capture_gpu.log"
echo "benchmarks: $(( $(date +%s) - started )) s"

if $PY -c "import pytest" 2>/dev/null; then
  timeout "${TEST_TIMEOUT:-150}" $PY -m pytest -q -p no:cacheprovider -o addopts="" -rs \
    -k "cuda or gpu" tests/capture/test_cuda_stats.py tests/capture/test_stats.py tests/train \
    > "$OUT/pytest_cuda.txt" 2>&1
  status=$?
  summary=$(tail -n 1 "$OUT/pytest_cuda.txt")
  [ "$status" = 124 ] && summary="TIMED OUT after ${TEST_TIMEOUT:-150} s; last line: $summary"
else
  summary="pytest is not installed here: CUDA tests not run"
fi
printf '\n## CUDA tests\n\n`pytest -k "cuda or gpu" tests/capture/test_cuda_stats.py tests/capture/test_stats.py tests/train`: %s\n' "$summary" >> "$OUT/capture_gpu.md"
grep -E "^(FAILED|ERROR)" "$OUT/pytest_cuda.txt" 2>/dev/null | head -20 | sed 's/^/    /' >> "$OUT/capture_gpu.md"
echo "tests: $summary"
echo "total: $(( $(date +%s) - started )) s; results in $OUT"
