#!/bin/bash
# Benchmark tables 1-4 of issue 6 on the GPU machine (one H100/H200), then DDP scaling on two GPUs when there are two.
#
# Assumes the Mamba CUDA kernels are already built into /tmp/kernels (bash .gpu/build_kernels.sh) and the wheels of
# .gpu/wheels installed into /tmp/site; data in the ignored .gpu/data (bioasq/4b/test, tokenizers/gpt-neox-20b,
# pmc_fulltext/train.jsonl.gz). liger-kernel is installed from .gpu/liger/*.whl when present (optional row of
# table 1). Usage, from the repository root on the GPU machine:
#   bash scripts/gpu_bench.sh            # all tables (~5-6 min on one H100); results appended to $OUT/gpu_benchmarks.md
#   BUILD=1 bash scripts/gpu_bench.sh    # first build the kernels if they are missing (~7.5 min more)
# Environment: OUT (default $OUT of the device tool, else benchmarks/results), DATA (default .gpu/data).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.gpu/data}
OUT=${OUT:-benchmarks/results}
RESULTS=$OUT/gpu_benchmarks.md
mkdir -p "$OUT"
export PYTHONPATH=/tmp/kernels:/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

if [ "${BUILD:-0}" = 1 ]; then
  bash .gpu/build_kernels.sh
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
fi
if ls .gpu/liger/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/liger/*.whl || echo "liger-kernel not installed"
fi
# Never time transformers' PyTorch fallback by accident: the kernels must import, and the package must route to them.
python3 - <<'PY' || { echo "ERROR: Mamba CUDA kernels missing: run with BUILD=1 (or bash .gpu/build_kernels.sh)" >&2; exit 1; }
import torch, selective_scan_cuda, causal_conv1d_cuda  # noqa: F401
from biomamba_hf import ops
print("GPU:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count())
print("Mamba code path:", ops.mamba_code_path("cuda"))
PY

status=0
run() {  # run one benchmark, keep going on failure, remember it
  echo "=== $* ($(date -u +%H:%M:%S))"
  local start=$SECONDS
  "$@" --markdown_out "$RESULTS" || { echo "FAILED ($?): $*"; status=1; }
  echo "=== took $((SECONDS - start)) s"
}
run python3 benchmarks/bench_training_throughput.py --steps 6 --warmup 2
run python3 benchmarks/bench_long_context.py
run python3 benchmarks/bench_qa_pipeline.py --data_dir "$DATA"
run python3 benchmarks/bench_fulltext_qa.py --data_dir "$DATA"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
  run python3 -m torch.distributed.run --nproc_per_node 2 benchmarks/bench_training_throughput.py --ddp_only --steps 6 --warmup 2
else
  echo "=== DDP scaling skipped: $gpus GPU(s) here (run on a 2-GPU machine for table 1b)"
fi
echo "results: $RESULTS"
exit $status
