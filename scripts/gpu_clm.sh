#!/bin/bash
# GPU benchmark of continued pretraining (examples/run_clm.py) at the BioMamba recipe's real shape: Mamba-130m
# (d_model 768, 24 layers, vocab 50,280, GPT-NeoX tokenizer), random init (no Hub access on the GPU machine),
# block 2048, bf16, fused CUDA kernels, on PubMed train; one GPU, then DDP on two GPUs.
#
# Usage (from the repository root):
#   bash scripts/gpu_clm.sh prepare   # development machine: copy the data the run needs into the ignored .gpu/data
#   bash scripts/gpu_clm.sh build     # GPU machine: build the mamba-ssm/causal-conv1d kernels (~7.5 min, once)
#   bash scripts/gpu_clm.sh bench     # GPU machine, after `build`: 1 GPU, then DDP over 2 GPUs if there are 2
#   bash scripts/gpu_clm.sh single    # only the one-GPU run;  `ddp`: only the two-GPU run
#   bash scripts/gpu_clm.sh single --compile_norms   # flags after the mode go to run_clm.py (run named after them)
# Environment: STEPS (default 300 optimizer steps per run), TOKENS_PER_STEP (default 65536 = 32 sequences of 2048),
# PER_DEVICE_BATCH (default 16), OUT (where logs and results go; default outputs/gpu_clm), DATA (default .gpu/data).
# Each run prints tokens/s, MFU = 6 x parameters x tokens/s / bf16 dense peak (989 TFLOP/s per H100 SXM or H200 GPU)
# and peak GPU memory, and writes them to $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-bench}
shift || true
EXTRA=("$@")
STEPS=${STEPS:-300}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-65536}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
OUT=${OUT:-outputs/gpu_clm}
DATA=${DATA:-.gpu/data}
PEAK_TFLOPS=989

prepare() {
  local shared=${SHARED_DATA:-../shared/data}
  mkdir -p "$DATA/pubmed" "$DATA/tokenizers"
  cp -n "$shared/pubmed/train.jsonl.gz" "$shared/pubmed/dev.jsonl.gz" "$DATA/pubmed/"
  cp -rn "$shared/tokenizers/gpt-neox-20b" "$DATA/tokenizers/"
  grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
  du -sh .gpu
}

setup_gpu_env() {
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/kernels:/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  if ! python3 -c "import torch, selective_scan_cuda, causal_conv1d_cuda" 2>/dev/null; then
    echo "ERROR: the Mamba CUDA kernels do not import: run 'bash scripts/gpu_clm.sh build' on this machine first." >&2
    echo "       (Without them training falls back to a PyTorch loop ~1000x slower: no benchmark on that path.)" >&2
    exit 1
  fi
  for f in "$DATA/pubmed/train.jsonl.gz" "$DATA/pubmed/dev.jsonl.gz" "$DATA/tokenizers/gpt-neox-20b/tokenizer.json"; do
    [ -f "$f" ] || { echo "ERROR: $f is missing: run 'bash scripts/gpu_clm.sh prepare' on the development machine and carry .gpu" >&2; exit 1; }
  done
  mkdir -p "$OUT"
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'GPU', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count())" | tee "$OUT/environment.txt"
}

# run NAME NUM_GPUS
run() {
  local name=$1 gpus=$2
  [ ${#EXTRA[@]} -gt 0 ] && name="${name}$(printf '_%s' "${EXTRA[@]#--}" | tr -c 'A-Za-z0-9_\n' '_')"
  local dir=/tmp/gpu_clm_$name
  rm -rf "$dir"
  local launch=(python3 -m accelerate.commands.launch --num_machines 1 --mixed_precision bf16 --dynamo_backend no)
  if [ "$gpus" -gt 1 ]; then
    launch+=(--multi_gpu --num_processes "$gpus" --main_process_port 29517)
  else
    launch+=(--num_processes 1)
  fi
  echo "=== $name: $gpus GPU(s), $STEPS steps of $TOKENS_PER_STEP tokens ==="
  local start=$(date +%s)
  CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1))) "${launch[@]}" examples/run_clm.py \
    --model_type mamba \
    --config_overrides "hidden_size=768,num_hidden_layers=24,vocab_size=50280,state_size=16" \
    --tokenizer_name "$DATA/tokenizers/gpt-neox-20b" \
    --train_file "$DATA/pubmed/train.jsonl.gz" --validation_file "$DATA/pubmed/dev.jsonl.gz" \
    --block_size 2048 --tokens_per_step "$TOKENS_PER_STEP" --per_device_train_batch_size "$PER_DEVICE_BATCH" \
    --per_device_eval_batch_size 16 --max_eval_samples 64 \
    --max_steps "$STEPS" --learning_rate 6e-4 --lr_scheduler_type cosine_with_min_lr \
    --lr_scheduler_kwargs '{"min_lr": 1e-5}' --warmup_steps 0.1 --adam_beta2 0.95 --weight_decay 0.1 \
    --max_grad_norm 1.0 --bf16 --optim adamw_torch_fused --loss_chunk_size "${LOSS_CHUNK:-2048}" \
    --preprocessing_num_workers 8 \
    --logging_steps 25 --save_strategy no --do_train --do_eval --seed 42 --report_to none \
    --disable_tqdm true --output_dir "$dir" "${EXTRA[@]}" 2>&1 | tee "$OUT/$name.log"
  cp "$dir/all_results.json" "$OUT/$name.all_results.json"
  grep -q "Mamba code path: CUDA kernels" "$OUT/$name.log" || {
    echo "ERROR: the run did not use the CUDA kernels (see 'Mamba code path' in $OUT/$name.log)" >&2; exit 1; }
  python3 - "$OUT/$name.all_results.json" "$name" "$gpus" "$PEAK_TFLOPS" "$(( $(date +%s) - start ))" <<'PY' | tee -a "$OUT/summary.md"
import json, sys
path, name, gpus, peak, wall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = json.load(open(path))
tps = r["train_tokens_per_second"]
mfu = 6 * r["train_model_parameters"] * tps / (peak * 1e12 * gpus)
print(f"| {name} | {gpus} | {r['train_model_parameters'] / 1e6:.1f}M | {r['train_tokens']:,} | {tps:,.0f} | "
      f"{r.get('train_steady_tokens_per_second', float('nan')):,.0f} | "
      f"{tps / gpus:,.0f} | {mfu:.1%} | {r.get('train_peak_memory_gib', float('nan'))} | {r['train_loss']:.3f} | "
      f"{r['perplexity']:.1f} | {wall} s |")
PY
}

header() {
  echo "| run | GPUs | params | tokens | tokens/s | tokens/s after step 1 | tokens/s/GPU | MFU (bf16 peak ${PEAK_TFLOPS} TFLOP/s/GPU) | peak mem GiB (rank 0) | train loss | eval ppl | wall |" | tee -a "$OUT/summary.md"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" | tee -a "$OUT/summary.md"
}

case "$MODE" in
  prepare) prepare ;;
  build) bash .gpu/build_kernels.sh ;;
  single) setup_gpu_env; header; run single_gpu 1 ;;
  ddp) setup_gpu_env; header; run ddp_2gpu 2 ;;
  bench)
    setup_gpu_env; header
    run single_gpu 1
    if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
      run ddp_2gpu 2
    else
      echo "only one GPU here: DDP run skipped (use a 2-GPU machine)"
    fi
    ;;
  *) echo "usage: bash scripts/gpu_clm.sh {prepare|build|bench|single|ddp}" >&2; exit 2 ;;
esac
