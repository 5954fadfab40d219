#!/bin/bash
# Mamba-2 on the GPU machine (issues 12 and 13): kernel-path checks, run_clm throughput with equal levers, and an
# equal-token pretraining + BioASQ comparison of Mamba-130m, Mamba2-130m and GPT-2 124M.
#
#   bash scripts/gpu_mamba2.sh checks       # conversion vs mamba_ssm, LoRA on the fused path, portable SSD on CUDA
#   bash scripts/gpu_mamba2.sh throughput   # run_clm, Mamba2-130m vs GPT-2 124M, same flags (liger CE for both)
#   bash scripts/gpu_mamba2.sh quality      # equal tokens from random init, dev perplexity, then run_qa on 4b and 5b
#   bash scripts/gpu_mamba2.sh all
# The kernels must be built first (bash .gpu/build_kernels.sh); data travels in .gpu/data (scripts/gpu_clm.sh prepare,
# plus bioasq/ and pmc_fulltext/). Environment: OUT (results, default outputs/gpu_mamba2), STEPS (quality: optimizer
# steps, default 1000), TOKENS_PER_STEP (quality: default 16384), TP_STEPS (throughput: default 40).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
OUT=${OUT:-outputs/gpu_mamba2}
DATA=${DATA:-.gpu/data}
STEPS=${STEPS:-1000}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-16384}
TP_STEPS=${TP_STEPS:-40}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl 2>/dev/null
export PYTHONPATH=/tmp/kernels:/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch, selective_scan_cuda, causal_conv1d_cuda, mamba_ssm" || {
  echo "ERROR: the mamba-ssm / causal-conv1d kernels do not import: run 'bash .gpu/build_kernels.sh' first" >&2; exit 1; }
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/environment.txt"

TOK="$DATA/tokenizers/gpt-neox-20b"
MAMBA=(--model_type mamba --config_overrides hidden_size=768,num_hidden_layers=24,state_size=16,vocab_size=50280)
MAMBA2=(--model_type mamba2 --config_overrides hidden_size=768,num_hidden_layers=24,state_size=128,head_dim=64,num_heads=24,expand=2,n_groups=1,chunk_size=256,vocab_size=50288,tie_word_embeddings=true)
GPT2=(--model_type gpt2 --config_overrides n_positions=2048,vocab_size=50280)

# clm NAME TOKENS_PER_STEP STEPS MODEL_ARGS...: one run_clm run at block 2048, bf16, liger/chunked CE (same for all)
clm() {
  local name=$1 tps=$2 steps=$3
  shift 3
  local dir=/tmp/gpu_mamba2_$name
  rm -rf "$dir"
  python3 examples/run_clm.py "$@" --tokenizer_name "$TOK" \
    --train_file "$DATA/pubmed/train.jsonl.gz" --validation_file "$DATA/pubmed/dev.jsonl.gz" \
    --block_size 2048 --tokens_per_step "$tps" --per_device_train_batch_size 8 --per_device_eval_batch_size 16 \
    --max_eval_samples 256 --max_steps "$steps" --learning_rate 6e-4 --lr_scheduler_type cosine_with_min_lr \
    --lr_scheduler_kwargs '{"min_lr": 1e-5}' --warmup_steps 0.05 --adam_beta2 0.95 --weight_decay 0.1 \
    --max_grad_norm 1.0 --bf16 --optim adamw_torch_fused --loss_chunk_size 2048 --preprocessing_num_workers 12 \
    --logging_steps 50 --save_strategy no --do_train --do_eval --seed 42 --report_to none --disable_tqdm true \
    --output_dir "$dir" > "$OUT/clm_$name.log" 2>&1
  local rc=$?
  grep -iE "code path|loss kernel|cross-entropy" "$OUT/clm_$name.log" | head -3
  cp "$dir/all_results.json" "$OUT/clm_$name.results.json" 2>/dev/null
  python3 - "$OUT/clm_$name.results.json" "$name" "$rc" <<'PY'
import json, sys
path, name, rc = sys.argv[1:]
try:
    r = json.load(open(path))
except OSError:
    print(f"| {name} | FAILED (exit {rc}) |"); sys.exit()
print(f"| {name} | {r['train_model_parameters'] / 1e6:.1f}M | {r['train_tokens']:,} | {r['train_tokens_per_second']:,.0f} | "
      f"{r.get('train_steady_tokens_per_second', float('nan')):,.0f} | {r.get('train_peak_memory_gib', float('nan'))} | "
      f"{r['train_loss']:.3f} | {r['perplexity']:.2f} | {r['train_runtime']:.0f} s |")
PY
}

checks() {
  echo "=== LoRA on Mamba-2's fused kernel path ==="
  timeout 180 python3 scripts/gpu_check_lora_mamba2.py 2>&1 | tee "$OUT/check_lora_mamba2.txt" | tail -30
  echo "=== conversion: mamba_ssm checkpoints vs transformers after biomamba-convert ==="
  timeout 180 python3 scripts/gpu_check_convert.py 2>&1 | tee "$OUT/check_convert.txt" | tail -30
  echo "=== portable SSD on CUDA vs the kernels (Mamba2-130m, B16 x 2048, bf16) ==="
  timeout 240 python3 benchmarks/bench_mamba2_portable.py --device cuda --preset 130m --check 2>&1 | tee "$OUT/bench_mamba2_portable_cuda.txt" | tail -30
}

throughput() {
  echo "=== run_clm throughput, $TP_STEPS steps of 65,536 tokens, liger CE for both, no compile ==="
  echo "| run | params | tokens | tokens/s | tokens/s after step 1 | peak GiB | train loss | eval ppl | runtime |" | tee -a "$OUT/throughput.md"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" | tee -a "$OUT/throughput.md"
  clm tp_mamba2 65536 "$TP_STEPS" "${MAMBA2[@]}" | tee -a "$OUT/throughput.md"
  clm tp_gpt2 65536 "$TP_STEPS" "${GPT2[@]}" | tee -a "$OUT/throughput.md"
}

quality() {
  echo "=== equal tokens: $STEPS steps x $TOKENS_PER_STEP tokens from random init ==="
  echo "| run | params | tokens | tokens/s | tokens/s after step 1 | peak GiB | train loss | dev ppl | runtime |" | tee -a "$OUT/quality.md"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" | tee -a "$OUT/quality.md"
  for model in mamba2 mamba gpt2; do
    case $model in mamba) args=("${MAMBA[@]}") ;; mamba2) args=("${MAMBA2[@]}") ;; gpt2) args=("${GPT2[@]}") ;; esac
    clm "q_$model" "$TOKENS_PER_STEP" "$STEPS" "${args[@]}" | tee -a "$OUT/quality.md"
  done
  for model in mamba2 mamba; do
    [ -f "/tmp/gpu_mamba2_q_$model/config.json" ] || continue
    EPOCHS=2 LAYOUTS=question_first DATA_DIR="$DATA" OUT_DIR="/tmp/gpu_qa_$model" RESULTS_DIR="$OUT/qa_$model" \
      bash scripts/gpu_qa.sh "/tmp/gpu_mamba2_q_$model" 2>&1 | tail -8 | tee -a "$OUT/quality_qa.md"
  done
}

case "$MODE" in
  checks) checks ;;
  throughput) throughput ;;
  quality) quality ;;
  all) checks; throughput; quality ;;
  *) echo "usage: bash scripts/gpu_mamba2.sh {checks|throughput|quality|all}" >&2; exit 2 ;;
esac
