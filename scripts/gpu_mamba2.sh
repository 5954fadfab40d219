#!/bin/bash
# Mamba-2 on the GPU machine (issues 12 and 13): kernel-path checks, run_clm throughput with equal levers, and an
# equal-tokens and equal-time pretraining + BioASQ comparison of Mamba-130m, Mamba2-130m and GPT-2 124M.
#
#   bash scripts/gpu_mamba2.sh checks       # conversion vs mamba_ssm, LoRA on the fused path, portable SSD on CUDA
#   bash scripts/gpu_mamba2.sh throughput   # run_clm, Mamba2-130m vs GPT-2 124M, same flags (benchmarks/bench_equal_compute.py)
#   bash scripts/gpu_mamba2.sh quality      # benchmarks/bench_equal_compute.py: equal tokens and equal time from random
#                                           # init, dev perplexity, then run_qa on BioASQ 4b and 5b (question_first)
#   bash scripts/gpu_mamba2.sh decompose    # where run_clm loses the bare loop's tokens/s: loop vs Trainer vs run_clm's data
#                                           # path and callbacks, Mamba2-130m / Mamba-130m / GPT-2 124M, liger for all
#   bash scripts/gpu_mamba2.sh qa_inference # QA pipeline and bare forward, Mamba / Mamba-2 / BERT-base, levers plain,
#                                           # buckets, compile, cuda_graphs (benchmarks/bench_qa_pipeline.py, bf16,
#                                           # batch 32, best of 3 timed passes)
#   bash scripts/gpu_mamba2.sh throughput_compile  # the throughput pair with Trainer's torch.compile for both
#   bash scripts/gpu_mamba2.sh autotune_cache      # run_qa on a random Mamba2-130m twice: does the second process skip
#                                                  # mamba-ssm's Triton autotuning (TRITON_CACHE_AUTOTUNING, set by the
#                                                  # scripts)? prints each run's train_runtime and autotuning count
#   bash scripts/gpu_mamba2.sh multi_gpu          # 2+ GPUs: DDP, FSDP2, ZeRO-2 for Mamba and Mamba-2 through run_clm
#                                                  # (benchmarks/bench_multi_gpu.py; ZeRO-2 needs deepspeed)
#   bash scripts/gpu_mamba2.sh all
# The kernels must be built first (bash .gpu/build_kernels.sh); data travels in .gpu/data (scripts/gpu_clm.sh prepare,
# plus bioasq/ and pmc_fulltext/). Environment: OUT (results, default outputs/gpu_mamba2), STEPS (quality: optimizer
# steps, default 1000), TOKENS_PER_STEP (quality: default 16384), SECONDS_BUDGET (quality, equal time: default 120),
# TP_STEPS (throughput: default 40), DEADLINE (optional: --deadline_seconds; exit 3 = rerun the same command).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
OUT=${OUT:-outputs/gpu_mamba2}
DATA=${DATA:-.gpu/data}
STEPS=${STEPS:-1000}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-16384}
SECONDS_BUDGET=${SECONDS_BUDGET:-120}
TP_STEPS=${TP_STEPS:-40}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl 2>/dev/null
export PYTHONPATH=/tmp/kernels:/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch, selective_scan_cuda, causal_conv1d_cuda, mamba_ssm" || {
  echo "ERROR: the mamba-ssm / causal-conv1d kernels do not import: run 'bash .gpu/build_kernels.sh' first" >&2; exit 1; }
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/environment.txt"

checks() {
  echo "=== LoRA on Mamba-2's fused kernel path ==="
  timeout 180 python3 scripts/gpu_check_lora_mamba2.py 2>&1 | tee "$OUT/check_lora_mamba2.txt" | tail -30
  echo "=== conversion: mamba_ssm checkpoints vs transformers after biomamba-convert ==="
  timeout 180 python3 scripts/gpu_check_convert.py 2>&1 | tee "$OUT/check_convert.txt" | tail -30
  echo "=== portable SSD on CUDA vs the kernels (Mamba2-130m, B16 x 2048, bf16) ==="
  timeout 240 python3 benchmarks/bench_mamba2_portable.py --device cuda --preset 130m --check 2>&1 | tee "$OUT/bench_mamba2_portable_cuda.txt" | tail -30
}

# Both modes are benchmarks/bench_equal_compute.py (one set of run_clm/run_qa flags for every model, same levers:
# liger/chunked CE for all, --compile_norms for none); finished stages in $OUT are kept, so a rerun continues.
BENCH=(python3 benchmarks/bench_equal_compute.py --preset 130m --data_dir "$DATA")

throughput() {
  echo "=== run_clm throughput, $TP_STEPS steps of 65,536 tokens, Mamba2-130m vs GPT-2 124M, same flags ==="
  "${BENCH[@]}" --models mamba2,gpt2 --regimes tokens --qa_sets "" --max_steps "$TP_STEPS" --tokens_per_step 65536 \
    --out_dir "$OUT/throughput" --markdown_out "$OUT/throughput.md" ${DEADLINE:+--deadline_seconds "$DEADLINE"}
}

quality() {
  echo "=== equal tokens ($STEPS x $TOKENS_PER_STEP) and equal time (${SECONDS_BUDGET} s) from random init, dev ppl, BioASQ 4b/5b ==="
  "${BENCH[@]}" --max_steps "$STEPS" --tokens_per_step "$TOKENS_PER_STEP" --max_train_seconds "$SECONDS_BUDGET" \
    --out_dir "$OUT/equal_compute" --markdown_out "$OUT/quality.md" ${DEADLINE:+--deadline_seconds "$DEADLINE"}
}

decompose() {
  echo "=== run_clm decomposition (benchmarks/bench_training_throughput.py --rows decompose) ==="
  timeout 560 python3 benchmarks/bench_training_throughput.py --rows decompose --steps 20 --markdown_out "$OUT/decompose.md"
}

qa_inference() {
  echo "=== QA inference levers (benchmarks/bench_qa_pipeline.py) ==="
  timeout 560 python3 benchmarks/bench_qa_pipeline.py --data_dir "$DATA" --dtypes bfloat16 --batch_sizes 32 --num_questions 256 \
    --levers plain,buckets,cuda_graphs,compile --repeats 3 --markdown_out "$OUT/qa_pipeline.md" 2>&1 | tee "$OUT/qa_pipeline.txt"
}

throughput_compile() {
  echo "=== run_clm throughput, $TP_STEPS steps of 65,536 tokens, Mamba2-130m vs GPT-2 124M, torch.compile for both ==="
  "${BENCH[@]}" --models mamba2,gpt2 --regimes tokens --qa_sets "" --max_steps "$TP_STEPS" --tokens_per_step 65536 \
    --torch_compile --out_dir "$OUT/throughput_compile" --markdown_out "$OUT/throughput_compile.md" \
    ${DEADLINE:+--deadline_seconds "$DEADLINE"}
}

autotune_cache() {
  echo "=== mamba-ssm Triton autotuning across processes (run_qa, random Mamba2-130m, 30 steps, twice) ==="
  local shape="hidden_size=768,num_hidden_layers=24,state_size=128,head_dim=64,num_heads=24,expand=2,n_groups=1"
  shape="$shape,chunk_size=256,vocab_size=50288,tie_word_embeddings=true"
  for run in first second; do
    TRITON_PRINT_AUTOTUNING=1 python3 examples/run_qa.py examples/configs/bioasq_4b.yaml --data_dir "$DATA" \
      --model_type mamba2 --config_overrides "$shape" --tokenizer_name "$DATA/tokenizers/gpt-neox-20b" \
      --max_steps 30 --do_eval false --eval_before_train false --bf16 true --report_to none --disable_tqdm true \
      --output_dir "$OUT/autotune_cache_$run" --overwrite_output_dir true > "$OUT/autotune_cache_$run.log" 2>&1
    echo "$run run: rc $?, $(grep -c 'finished after' "$OUT/autotune_cache_$run.log") autotunings," \
      "$(grep -o "'train_runtime': '[0-9.]*'" "$OUT/autotune_cache_$run.log")" | tee -a "$OUT/autotune_cache.txt"
  done
}

multi_gpu() {
  echo "=== multi-GPU configs through run_clm (benchmarks/bench_multi_gpu.py) ==="
  python3 benchmarks/bench_multi_gpu.py --data_dir "$DATA" --num_processes "$(python3 -c 'import torch; print(torch.cuda.device_count())')" \
    --out_dir "$OUT/multi_gpu" --markdown_out "$OUT/multi_gpu.md"
}

case "$MODE" in
  checks) checks ;;
  throughput) throughput ;;
  quality) quality ;;
  decompose) decompose ;;
  qa_inference) qa_inference ;;
  throughput_compile) throughput_compile ;;
  autotune_cache) autotune_cache ;;
  multi_gpu) multi_gpu ;;
  all) checks; throughput; decompose; qa_inference; quality ;;
  *) echo "usage: bash scripts/gpu_mamba2.sh {checks|throughput|throughput_compile|quality|decompose|qa_inference|autotune_cache|multi_gpu|all}" >&2; exit 2 ;;
esac
