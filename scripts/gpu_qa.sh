#!/bin/bash
# BioASQ on the GPU machine: fine-tune the 130m Mamba shape with the CUDA kernels and score it on the 4b and 5b
# protocols (examples/configs/bioasq_{4b,5b}.yaml: trained on the other years' golden-derived examples), for both QA
# layouts, in bf16. Prints a table of the batch-averaged strict accuracy / lenient accuracy / MRR and the time of each
# run. About 3-4 minutes on one H100 with the defaults (the kernels must already be built; see ../shared/gpu/README.md).
#
#   bash scripts/gpu_qa.sh                  # random init of the mamba-130m-hf shape (no Hub access on that machine)
#   bash scripts/gpu_qa.sh path/to/clm_run  # start from a continued-pretraining folder (examples/run_clm.py output)
#
# Settings (environment variables): EPOCHS (default 3), MAX_STEPS (default -1: use EPOCHS), LR (default 3e-4 for a
# random init, 5e-5 from a checkpoint), BATCH (16), LAYOUTS ("question_first repeat_context"), SETS ("4b 5b"),
# EVAL_BEFORE (false; true also scores the untrained start), DATA_DIR (.gpu/data: bioasq/ and
# tokenizers/gpt-neox-20b travel there), OUT_DIR (outputs/gpu_qa: one run folder each, models included),
# RESULTS_DIR (optional: where the small result files and logs of every run are copied).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-}
EPOCHS=${EPOCHS:-3}
MAX_STEPS=${MAX_STEPS:--1}
BATCH=${BATCH:-16}
LAYOUTS=${LAYOUTS:-"question_first repeat_context"}
SETS=${SETS:-"4b 5b"}
DATA_DIR=${DATA_DIR:-.gpu/data}
OUT_DIR=${OUT_DIR:-outputs/gpu_qa}
mkdir -p "$OUT_DIR"
RESULTS_DIR=${RESULTS_DIR:-}

export PYTHONPATH=/tmp/kernels:/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! python3 -c "import torch, selective_scan_cuda, causal_conv1d_cuda" 2>/dev/null; then
  echo "The mamba-ssm / causal-conv1d kernels are not importable from /tmp/kernels: run 'bash .gpu/build_kernels.sh'" \
       "first (about 8 minutes). Without them training falls back to a loop about 1000x slower." >&2
  exit 1
fi
python3 -c "import datasets, evaluate" 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl
for path in "$DATA_DIR/bioasq/4b" "$DATA_DIR/bioasq/5b" "$DATA_DIR/bioasq/7b" "$DATA_DIR/tokenizers/gpt-neox-20b"; do
  [ -d "$path" ] || { echo "$path is missing: copy ../shared/data/{bioasq,tokenizers} into $DATA_DIR" >&2; exit 1; }
done

if [ -n "$MODEL" ]; then
  MODEL_ARGS=(--model_name_or_path "$MODEL")
  LR=${LR:-5e-5}
  START="$MODEL"
else
  # state-spaces/mamba-130m-hf's shape: 24 layers, d_model 768, state 16, vocabulary 50,280 (GPT-NeoX, padded).
  MODEL_ARGS=(--model_type mamba --config_overrides hidden_size=768,num_hidden_layers=24,state_size=16,vocab_size=50280
              --tokenizer_name "$DATA_DIR/tokenizers/gpt-neox-20b")
  LR=${LR:-3e-4}
  START="random init (mamba-130m shape)"
fi

python3 - <<'PY'
import torch, transformers
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "start: $START; epochs $EPOCHS (max_steps $MAX_STEPS), lr $LR, batch $BATCH, bf16, layouts: $LAYOUTS; sets: $SETS"

total_start=$(date +%s)
for set in $SETS; do
  for layout in $LAYOUTS; do
    run="$OUT_DIR/$set-$layout"
    echo "=== BioASQ $set, $layout -> $run"
    start=$(date +%s)
    python3 examples/run_qa.py "examples/configs/bioasq_$set.yaml" \
      --data_dir "$DATA_DIR" "${MODEL_ARGS[@]}" --qa_layout "$layout" \
      --bf16 true --num_train_epochs "$EPOCHS" --max_steps "$MAX_STEPS" --learning_rate "$LR" \
      --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size 64 \
      --eval_before_train "${EVAL_BEFORE:-false}" --logging_steps 20 --disable_tqdm true \
      --dataloader_num_workers 2 --output_dir "$run" --overwrite_output_dir true > "$run.log" 2>&1 \
      || { tail -40 "$run.log"; exit 1; }
    echo "$(( $(date +%s) - start )) s" > "$run.seconds"
    grep -E "run: |BioASQ|train_runtime|train_samples_per_second|windows|golden -> SQuAD" "$run.log" | sed 's/^.* - //' || true
    if [ -n "$RESULTS_DIR" ]; then
      mkdir -p "$RESULTS_DIR/$set-$layout"
      cp "$run.log" "$run.seconds" "$RESULTS_DIR/$set-$layout/"
      cp "$run"/*.json "$RESULTS_DIR/$set-$layout/"
    fi
  done
done

python3 - "$OUT_DIR" "$SETS" "$LAYOUTS" "$(( $(date +%s) - total_start ))" <<'PY'
import json, sys
from pathlib import Path

out, sets, layouts, seconds = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3].split(), sys.argv[4]
print("\nBioASQ factoid, batch-averaged (micro average over questions in brackets)")
print(f"{'set':<4} {'layout':<15} {'strict acc':>16} {'lenient acc':>16} {'MRR':>16} {'MRR before':>10} {'train loss':>10} {'time':>7}")
for s in sets:
    for layout in layouts:
        run = out / f"{s}-{layout}"
        r = json.loads((run / "all_results.json").read_text())
        cells = [f"{r[f'bioasq_{s}_{k}']:.4f} ({r[f'bioasq_{s}_micro_{k}']:.4f})" for k in ("strict_acc", "lenient_acc", "mrr")]
        took = Path(f"{run}.seconds").read_text().strip()
        before = r.get(f"initial_bioasq_{s}_mrr")
        before = "-" if before is None else f"{before:.4f}"
        print(f"{s:<4} {layout:<15} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {before:>10} {r['train_loss']:>10.4f} {took:>7}")
print(f"total: {seconds} s")
PY
