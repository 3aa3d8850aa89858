#!/usr/bin/env bash
# The GPU checks of issue 20 in one go, from the repository root of a CUDA machine:
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh          # results in $OUT/capture_gpu.{md,json}
#   OUT=/tmp/dry bash benchmarks/gpu_check.sh --dry    # tiny sizes, runs on a CPU: tests this script
#
# Steps, most important first; each writes its part of $OUT/capture_gpu.{md,json} when it ends,
# so a run stopped early keeps what it measured (expected on an H100/H200: 1-2 min each):
#   1. op: the statistics kernel vs FlashAttention (bf16, head dims 64 and 128, 2k..16k tokens,
#      with exactness of the last queries against float32);
#   2. CUDA exactness tests against eager (fp32, bf16, fp16, softcap):
#      tests/capture/test_cuda_stats.py -k matches_eager;
#   3. model + generate: capture of a 1B-shaped Llama at 8k tokens vs plain sdpa, and
#      attnkit.llm.generate vs plain generate();
#   4. the other CUDA tests: every tuning candidate, the autotuned path, the GPU cases of
#      tests/capture/test_stats.py, tests/capture/test_deferred.py and tests/train;
#   5. extra: the op with argmax, and in fp16.
# Needs torch with CUDA, triton and transformers (pytest for 2 and 4); PYTHONPATH=src is set here
# (no install, nothing that imports entmax). Per-step limits in seconds: STEP_TIMEOUT (180).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-benchmarks/results/gpu_check}"
PY="${PYTHON:-python}"
LIMIT="${STEP_TIMEOUT:-180}"
DRY=""
if [ "${1:-}" = "--dry" ]; then DRY="--dry"; fi
mkdir -p "$OUT/parts"
started=$(date +%s)
{ nvidia-smi -L || echo "no nvidia-smi"; $PY -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

bench() {  # bench PART...: capture_gpu.py parts, appended to the log
  timeout "$LIMIT" $PY benchmarks/capture_gpu.py --out "$OUT" --parts "$@" $DRY 2>&1 | tee -a "$OUT/capture_gpu.log"
  echo "[$(( $(date +%s) - started )) s] $*"
}

tests() {  # tests N TITLE PYTEST-ARGS...: a pytest run summarized in parts/N_tests.md
  local n="$1" title="$2"; shift 2
  local log="$OUT/pytest_$n.txt" summary
  if ! $PY -c "import pytest" 2>/dev/null; then
    summary="pytest is not installed here: not run"
  else
    timeout "$LIMIT" $PY -m pytest -v -p no:cacheprovider -o addopts="" -rs "$@" > "$log" 2>&1
    if [ $? = 124 ]; then
      summary="TIMED OUT after $LIMIT s: $(grep -c ' PASSED' "$log") passed, $(grep -c ' FAILED' "$log") failed before"
    else
      summary=$(tail -n 1 "$log")
    fi
  fi
  { printf '## %s\n\n`pytest %s`: %s\n' "$title" "$*" "$summary"
    grep -E "(FAILED|ERROR)" "$log" 2>/dev/null | grep -v "^tests/.*PASSED" | head -20 | sed 's/^/    /'
    echo; } > "$OUT/parts/${n}_tests.md"
  $PY benchmarks/capture_gpu.py --out "$OUT" --collect
  echo "[$(( $(date +%s) - started )) s] tests $n: $summary"
}

bench op
tests 2 "CUDA tests: exactness against eager" tests/capture/test_cuda_stats.py -k matches_eager
bench model generate
tests 5 "CUDA tests: tuning candidates, autotuned path, GPU cases of test_stats, deferred and train" \
  -k "(cuda or gpu) and not matches_eager" tests/capture/test_cuda_stats.py tests/capture/test_stats.py \
  tests/capture/test_deferred.py tests/train
bench extra
echo "total: $(( $(date +%s) - started )) s; results in $OUT/capture_gpu.md"
