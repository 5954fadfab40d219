#!/usr/bin/env python
"""Equal-compute quality benchmark (issue 13, target 5): Mamba-130m, Mamba2-130m and GPT-2 124M trained from random
init on the shared PubMed + PMC text, at equal tokens and at equal GPU time, scored by perplexity on held-out text
and by BioASQ 4b / 5b after fine-tuning.

Every model goes through the same scripts with the same flags (``subprocess`` calls of ``examples/run_clm.py`` and
``examples/run_qa.py``); only the model shape differs (``--model_type``/``--config_overrides`` as in
``scripts/gpu_mamba2.sh``). One markdown table is printed and written with the machine, date and command to
``--markdown_out``.

Regimes
    * ``tokens``: the same ``--max_steps`` x ``--tokens_per_step`` for every model.
    * ``time``: the same ``--max_train_seconds`` (``biomamba_hf.trainer.TimeBudgetCallback``: wall time counted from
      the end of the first optimizer step, so one-time start-up is not counted). The learning-rate schedule is planned
      for ``--max_steps``, so each model gets its own ``max_steps`` = its measured optimizer steps/s x the budget
      (+2 %, + the uncounted first step): the cosine schedule then ends at the budget whatever the model's speed, and
      the budget, not max_steps, ends the run. Steps/s come from the model's ``tokens`` run
      (``train_steady_tokens_per_second``, same flags) or, when that regime is not run, from a short probe run
      (``--probe_steps``, 60 at the 130m preset: a 20-step probe read Mamba2-130m at 76.7k tokens/s where its 574-step
      run held 93.6k, so its schedule ended after 100 of the 120 s; GPT-2 and Mamba-1 probes were within 7 %).

Levers (the same for every model): bf16 autocast on a GPU, fused AdamW, chunked linear cross-entropy
(``--loss_chunk_size``: liger-kernel's fused linear CE on CUDA when installed, else the PyTorch chunked loss; the
kernel each run used is read from its log). ``--compile_norms`` is used for **no** model: it compiles the RMS norms of
Mamba blocks and does not apply to GPT-2. ``--torch_compile`` (Trainer's whole-model ``torch.compile``) is off by
default and, when given, applies to all three.

Tokens per step: 16,384 by default (8 sequences of 2,048). A small budget (tens of millions of tokens) is better spent
on more, smaller optimizer steps: an earlier measurement on this corpus gave far lower perplexity with 16k-token
steps than with 65k-token steps for the same time (450 steps of 65,536 tokens is a poor regime for a from-scratch
130m model). 1,000 steps x 16,384 = 16.4M tokens, less than one pass over the ~27M tokens of PubMed + PMC.

Held-out text: ``pubmed/dev.jsonl.gz``; no run trains on it. Before training, the benchmark checks that no dev
document is in the training text (same id/PMID/PMCID, the same opening, or a 120-character passage of its middle
found verbatim in a training document) and stops if one is.

The kernels: on a GPU each Mamba-family run's log must show the CUDA kernel code path (``run: Mamba code path:`` /
``run: Mamba-2 code path:`` of run_clm and run_qa); a row that ran on a fallback is refused (its cells say so)
unless ``--allow_fallback``.

Stages are resumable: each run writes its folder under ``--out_dir`` and a finished stage is not run again (delete
the folder or pass ``--force``). ``--deadline_seconds`` stops launching stages that would not finish in time (exit
code 3: run the same command again), so the whole benchmark fits in calls of limited length::

    python benchmarks/bench_equal_compute.py --preset 130m --data_dir .gpu/data --out_dir outputs/equal_compute \\
        --markdown_out outputs/equal_compute/equal_compute.md --deadline_seconds 540

CPU smoke test (tiny shapes, a few steps, fallback paths allowed)::

    python benchmarks/bench_equal_compute.py --preset tiny --allow_fallback --out_dir /tmp/equal_compute_tiny
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mamba", "mamba2", "gpt2")
MODEL_NAMES = {"mamba": "Mamba-130m", "mamba2": "Mamba2-130m", "gpt2": "GPT-2 124M"}
REGIMES = ("tokens", "time")
QA_SETS = ("4b", "5b")
#: Code paths that count as the CUDA kernels (biomamba_hf.ops.mamba_code_path on a GPU with mamba-ssm).
KERNEL_PATH_PREFIXES = ("CUDA kernels (mamba-ssm", "mamba-ssm Triton SSD kernels + causal-conv1d")
CODE_PATH_LINE = re.compile(r"run: (Mamba|Mamba-2) code path: (.*)$", re.MULTILINE)
LOSS_KERNEL_LINE = re.compile(r"Training loss: chunked linear cross-entropy \(([^)]*)\)")
#: Exit code when --deadline_seconds left stages to run: run the same command again.
EXIT_INCOMPLETE = 3


def model_flags(preset: str, vocab: int = 50280) -> dict[str, list[str]]:
    """``--model_type`` / ``--config_overrides`` of each model (130m: the shapes of scripts/gpu_mamba2.sh)."""
    if preset == "130m":
        shapes = {
            "mamba": f"hidden_size=768,num_hidden_layers=24,state_size=16,vocab_size={vocab}",
            "mamba2": "hidden_size=768,num_hidden_layers=24,state_size=128,head_dim=64,num_heads=24,expand=2,"
            "n_groups=1,chunk_size=256,vocab_size=50288,tie_word_embeddings=true",
            "gpt2": f"n_positions=2048,vocab_size={vocab}",
        }
    elif preset == "tiny":
        shapes = {
            "mamba": f"hidden_size=64,num_hidden_layers=2,state_size=8,vocab_size={vocab}",
            "mamba2": "hidden_size=64,num_hidden_layers=2,state_size=16,head_dim=16,num_heads=8,expand=2,"
            "n_groups=1,chunk_size=32,vocab_size=50288,tie_word_embeddings=true",
            "gpt2": f"n_embd=64,n_layer=2,n_head=2,n_positions=512,vocab_size={vocab}",
        }
    else:
        raise ValueError(f"unknown preset {preset!r}: 130m or tiny")
    return {model: ["--model_type", model, "--config_overrides", shape] for model, shape in shapes.items()}


#: Defaults per preset; flags override them.
PRESETS = {
    "130m": dict(
        block_size=2048,
        batch=8,
        eval_batch=16,
        tokens_per_step=16384,
        max_steps=1000,
        max_train_seconds=120.0,
        probe_steps=60,
        learning_rate=6e-4,
        qa_epochs=2,
        qa_max_steps=-1,
        qa_batch=16,
        qa_max_train_samples=None,
        qa_learning_rate=5e-5,
        workers=12,
        logging_steps=50,
        train_docs=None,
    ),
    "tiny": dict(
        block_size=128,
        batch=2,
        eval_batch=8,
        tokens_per_step=512,
        max_steps=3,
        max_train_seconds=2.0,
        probe_steps=3,
        learning_rate=3e-3,
        qa_epochs=1,
        qa_max_steps=2,
        qa_batch=4,
        qa_max_train_samples=16,
        qa_learning_rate=1e-3,
        workers=None,
        logging_steps=1,
        train_docs=100,
        max_eval_samples=8,
    ),
}


@dataclass
class Run:
    """One (model, regime): its pretraining folder, results and QA results."""

    model: str
    regime: str
    max_steps: int | None = None
    clm: dict = field(default_factory=dict)
    qa: dict = field(default_factory=dict)  # set -> all_results (or {"error": ...})
    notes: list = field(default_factory=list)
    refused: str | None = None


# --------------------------------------------------------------------------------------------------------------------
# command construction
# --------------------------------------------------------------------------------------------------------------------


def clm_command(
    args, model: str, output_dir: Path, max_steps: int, *, max_train_seconds: float | None = None, do_eval=True
) -> list[str]:
    """The run_clm command of ``model``: identical flags for every model but the shape (and the time budget)."""
    command = [
        sys.executable, str(ROOT / "examples" / "run_clm.py"), *model_flags(args.preset)[model],
        "--tokenizer_name", str(args.tokenizer),
        "--train_file", str(args.train_file),
        "--block_size", str(args.block_size),
        "--tokens_per_step", str(args.tokens_per_step),
        "--per_device_train_batch_size", str(args.batch),
        "--per_device_eval_batch_size", str(args.eval_batch),
        "--max_steps", str(max_steps),
        "--learning_rate", str(args.learning_rate),
        "--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs", '{"min_lr": 1e-5}',
        "--warmup_steps", "0.05", "--adam_beta2", "0.95", "--weight_decay", "0.1", "--max_grad_norm", "1.0",
        "--loss_chunk_size", str(args.loss_chunk_size),
        "--logging_steps", str(args.logging_steps),
        "--save_strategy", "no", "--do_train", "--seed", str(args.seed), "--report_to", "none",
        "--disable_tqdm", "true", "--dataloader_num_workers", "0",
        "--output_dir", str(output_dir), "--overwrite_output_dir",
    ]  # fmt: skip
    if args.workers:
        command += ["--preprocessing_num_workers", str(args.workers)]
    if do_eval:
        command += ["--do_eval", "--validation_file", str(args.dev_file)]
        if args.max_eval_samples:
            command += ["--max_eval_samples", str(args.max_eval_samples)]
    if args.device == "cuda":
        command += ["--bf16", "--optim", "adamw_torch_fused"]
    else:
        command += ["--use_cpu", "true"]
    if args.torch_compile:
        command += ["--torch_compile", "true"]
    if max_train_seconds is not None:
        command += ["--max_train_seconds", str(max_train_seconds)]
    return command


def qa_command(args, checkpoint: Path, qa_set: str, output_dir: Path) -> list[str]:
    """The run_qa command of one BioASQ protocol (examples/configs/bioasq_<set>.yaml), question_first layout."""
    command = [
        sys.executable, str(ROOT / "examples" / "run_qa.py"), str(ROOT / "examples" / "configs" / f"bioasq_{qa_set}.yaml"),
        "--data_dir", str(args.data_dir),
        "--model_name_or_path", str(checkpoint),
        "--qa_layout", "question_first",
        "--num_train_epochs", str(args.qa_epochs), "--max_steps", str(args.qa_max_steps),
        "--learning_rate", str(args.qa_learning_rate),
        "--per_device_train_batch_size", str(args.qa_batch), "--per_device_eval_batch_size", "64",
        "--eval_before_train", "false", "--logging_steps", "20", "--disable_tqdm", "true",
        "--dataloader_num_workers", "0", "--seed", str(args.seed),
        "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
    ]  # fmt: skip
    if args.qa_max_train_samples:
        command += ["--max_train_samples", str(args.qa_max_train_samples)]
    command += ["--bf16", "true"] if args.device == "cuda" else ["--use_cpu", "true"]
    return command


def steps_for_budget(steady_tokens_per_second: float, tokens_per_step: int, seconds: float) -> int:
    """``max_steps`` whose schedule ends at the time budget: steps/s x budget, +2 % so that the budget (not
    max_steps) ends the run, + the first step (not counted by the budget's clock).

    >>> steps_for_budget(163840.0, 16384, 120.0)
    1225
    """
    if steady_tokens_per_second <= 0:
        raise ValueError(f"no throughput measured ({steady_tokens_per_second} tokens/s): cannot size max_steps")
    return math.ceil(steady_tokens_per_second / tokens_per_step * seconds * 1.02) + 1


# --------------------------------------------------------------------------------------------------------------------
# logs, kernels, held-out check
# --------------------------------------------------------------------------------------------------------------------


def code_paths(log_text: str) -> list[str]:
    """The Mamba / Mamba-2 code paths a run_clm or run_qa log reports (``run: ... code path: ...`` lines)."""
    return [match.group(2).strip() for match in CODE_PATH_LINE.finditer(log_text)]


def is_kernel_path(path: str) -> bool:
    """Whether a logged code path is mamba-ssm's CUDA kernels (not a PyTorch fallback or portable path)."""
    return path.startswith(KERNEL_PATH_PREFIXES)


def fallback_problem(model: str, log_text: str, device: str) -> str | None:
    """Why a Mamba-family run does not count as a kernel run (``None`` when it does, or for GPT-2)."""
    if model == "gpt2":
        return None
    paths = code_paths(log_text)
    if not paths:
        return "no code-path line in the log"
    if device != "cuda":
        return f"not on a GPU ({paths[0]})"
    bad = [path for path in paths if not is_kernel_path(path)]
    return f"fallback code path: {bad[0]}" if bad else None


def loss_kernel(log_text: str) -> str | None:
    match = LOSS_KERNEL_LINE.search(log_text)
    return match.group(1) if match else None


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _key(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())[:80]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                records.append(json.loads(line))
                if limit is not None and len(records) >= limit:
                    break
    return records


def held_out_check(train_records: list[dict], dev_records: list[dict]) -> dict:
    """Dev documents found in the training text: same id / PMID / PMCID, same opening (first 80 letters and digits)
    or a 120-character passage from the middle of the dev text verbatim in a training document."""
    ids = set()
    for record in train_records:
        for name in ("id", "pmid", "pmcid"):
            if record.get(name):
                ids.add(f"{name}:{record[name]}")
    openings = {_key(record["text"]) for record in train_records}
    corpus = "\n".join(_normalise(record["text"]) for record in train_records)
    found = []
    for record in dev_records:
        text = _normalise(record["text"])
        middle = text[max(0, len(text) // 2 - 60) : len(text) // 2 + 60]
        same_id = any(record.get(name) and f"{name}:{record[name]}" in ids for name in ("id", "pmid", "pmcid"))
        if same_id or _key(record["text"]) in openings or (len(middle) >= 60 and middle in corpus):
            found.append(record.get("id") or record.get("pmid") or text[:40])
    return {"dev_documents": len(dev_records), "train_documents": len(train_records), "dev_in_train": found}


def prepare_text(args) -> None:
    """Write the training text (PubMed train + PMC full text, or the tiny preset's first documents) to the output
    folder and check that no dev document is in it."""
    data = args.data_dir
    args.dev_file = data / "pubmed" / "dev.jsonl.gz"
    args.train_file = args.out_dir / "train_text.jsonl"
    report_path = args.out_dir / "held_out_check.json"
    if args.train_file.is_file() and report_path.is_file() and not args.force:
        args.held_out = json.loads(report_path.read_text())
        return
    sources = [data / "pubmed" / "train.jsonl.gz"]
    if args.pmc and (data / "pmc_fulltext" / "train.jsonl.gz").is_file():
        sources.append(data / "pmc_fulltext" / "train.jsonl.gz")
    train = []
    for source in sources:
        train += read_jsonl(source, limit=args.train_docs)
    dev = read_jsonl(args.dev_file)
    report = held_out_check(train, dev)
    report["train_sources"] = [str(source.relative_to(data)) for source in sources]
    if report["dev_in_train"]:
        raise SystemExit(
            f"{len(report['dev_in_train'])} dev documents are in the training text (e.g. {report['dev_in_train'][:5]}):"
            " perplexity would not be on held-out text. Fix the data split first."
        )
    tmp = args.train_file.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in train:
            handle.write(json.dumps({"text": record["text"]}, ensure_ascii=False) + "\n")
    tmp.replace(args.train_file)
    report_path.write_text(json.dumps(report, indent=1))
    args.held_out = report


# --------------------------------------------------------------------------------------------------------------------
# running the stages
# --------------------------------------------------------------------------------------------------------------------


class Deadline(Exception):
    """A stage would not finish before --deadline_seconds."""


class Runner:
    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.durations: dict[str, float] = {}  # stage kind -> last duration (s), to plan within the deadline
        self.skipped: list[str] = []

    def expected(self, kind: str, default: float) -> float:
        return self.durations.get(kind, default)

    def run(self, kind: str, command: list[str], log: Path, expected_seconds: float) -> int:
        deadline = self.args.deadline_seconds
        if deadline and time.monotonic() - self.start + expected_seconds > deadline:
            raise Deadline(f"{log.parent.name}: about {expected_seconds:.0f} s, past --deadline_seconds {deadline:g}")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[bench] {log.parent.name}: {shlex.join(command)}", flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        began = time.monotonic()
        with log.open("w", encoding="utf-8") as handle:
            handle.write("$ " + shlex.join(command) + "\n")
            handle.flush()
            rc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        self.durations[kind] = time.monotonic() - began
        print(f"[bench] {log.parent.name}: exit {rc} after {self.durations[kind]:.0f} s (log {log})", flush=True)
        return rc


def _results(folder: Path) -> dict | None:
    path = folder / "all_results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else "(no log)"


def pretrain(runner: Runner, run: Run, max_steps: int, budget: float | None) -> None:
    args = runner.args
    folder = args.out_dir / f"{run.model}_{run.regime}" / "clm"
    log = folder.parent / "clm.log"
    run.max_steps = max_steps
    if _results(folder) is None or args.force:
        seconds = budget if budget is not None else max_steps * args.tokens_per_step / 50_000
        command = clm_command(args, run.model, folder, max_steps, max_train_seconds=budget)
        rc = runner.run("clm", command, log, runner.expected("clm", seconds + 60))
        if rc != 0:
            run.refused = f"run_clm failed (exit {rc})"
            print(_tail(log), file=sys.stderr)
            return
    run.clm = _results(folder) or {}
    text = log.read_text(errors="replace") if log.is_file() else ""
    problem = fallback_problem(run.model, text, args.device)
    if problem and not args.allow_fallback:
        run.refused = f"refused: {problem} (--allow_fallback to report it)"
    elif problem:
        run.notes.append(problem)
    kernel = loss_kernel(text)
    if kernel:
        run.clm["loss_kernel"] = kernel


def probe_throughput(runner: Runner, model: str) -> float:
    """Steady tokens/s of ``model`` with the benchmark's flags: from its tokens run, else a short probe run."""
    args = runner.args
    done = _results(args.out_dir / f"{model}_tokens" / "clm")
    if done and done.get("train_steady_tokens_per_second"):
        return done["train_steady_tokens_per_second"]
    folder = args.out_dir / f"{model}_probe" / "clm"
    if _results(folder) is None or args.force:
        command = clm_command(args, model, folder, args.probe_steps, do_eval=False)
        rc = runner.run("probe", command, folder.parent / "clm.log", runner.expected("probe", 90))
        if rc != 0:
            raise SystemExit(f"the throughput probe of {model} failed:\n{_tail(folder.parent / 'clm.log')}")
    return _results(folder)["train_steady_tokens_per_second"]


def finetune(runner: Runner, run: Run) -> None:
    args = runner.args
    checkpoint = args.out_dir / f"{run.model}_{run.regime}" / "clm"
    for qa_set in args.qa_sets:
        folder = args.out_dir / f"{run.model}_{run.regime}" / f"qa_{qa_set}"
        log = folder.parent / f"qa_{qa_set}.log"
        if _results(folder) is None or args.force:
            rc = runner.run("qa", qa_command(args, checkpoint, qa_set, folder), log, runner.expected("qa", 120))
            if rc != 0:
                reason = "run_qa failed"
                text = _tail(log, 40)
                if "Unrecognized configuration class" in text or "ForQuestionAnswering" in text:
                    reason = "run_qa cannot load a QA head for this model"
                run.qa[qa_set] = {"error": f"{reason} (exit {rc}; {log})"}
                print(text, file=sys.stderr)
                continue
            if not args.keep_qa_models:
                for weights in folder.glob("*.safetensors"):
                    weights.unlink()
        results = _results(folder) or {}
        text = log.read_text(errors="replace") if log.is_file() else ""
        problem = fallback_problem(run.model, text, args.device)
        if problem and not args.allow_fallback:
            results = {"error": f"refused: QA {problem}"}
        run.qa[qa_set] = results


# --------------------------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------------------------

TABLE_HEADERS = (
    "model", "regime", "tokens", "tokens/s", "steps", "dev ppl",
    "4b strict", "4b lenient", "4b MRR", "5b strict", "5b lenient", "5b MRR", "notes",
)  # fmt: skip


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def table_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        row = [MODEL_NAMES[run.model], run.regime]
        if run.refused:
            rows.append(row + ["-"] * (len(TABLE_HEADERS) - 3) + [run.refused])
            continue
        r = run.clm
        steps = r.get("train_steps")
        if steps is None and r.get("train_tokens") is not None and r.get("train_tokens_per_step"):
            steps = r["train_tokens"] // r["train_tokens_per_step"]
        notes = list(run.notes)
        if run.regime == "time":
            stopped = r.get("train_stopped_by_time_budget")
            notes.append(
                f"budget {r.get('train_time_budget_seconds', 0):g} s, max_steps {run.max_steps}, "
                + ("stopped by the budget" if stopped else "schedule ended before the budget")
            )
        if r.get("loss_kernel"):
            notes.append(f"loss: {r['loss_kernel']}")
        row += [
            _number(r.get("train_tokens")),
            _number(r.get("train_steady_tokens_per_second"), 0) if r.get("train_steady_tokens_per_second") else "-",
            _number(steps),
            _number(r.get("perplexity"), 2),
        ]
        for qa_set in QA_SETS:
            result = run.qa.get(qa_set)
            if result is None:
                row += ["-"] * 3
            elif "error" in result:
                row += ["n/a"] * 3
                notes.append(f"{qa_set}: {result['error']}")
            else:
                row += [_number(result.get(f"bioasq_{qa_set}_{key}")) for key in ("strict_acc", "lenient_acc", "mrr")]
        rows.append(row + ["; ".join(notes) or ""])
    return rows


def render_table(runs: list[Run]) -> str:
    rows = table_rows(runs)
    lines = ["| " + " | ".join(TABLE_HEADERS) + " |", "|" + "|".join("---" for _ in TABLE_HEADERS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(args, runs: list[Run], incomplete: list[str]) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common
    import torch

    held = args.held_out
    notes = [
        f"preset {args.preset}: block {args.block_size}, {args.tokens_per_step:,} tokens per optimizer step "
        f"(batch {args.batch}, accumulation {args.tokens_per_step // (args.block_size * args.batch)}), "
        f"lr {args.learning_rate:g} cosine to 1e-5, warm-up 5 %, seed {args.seed}",
        f"regimes: tokens = {args.max_steps} steps x {args.tokens_per_step:,} tokens for every model; "
        f"time = {args.max_train_seconds:g} s of training after the first optimizer step, max_steps per model from "
        "its measured steps/s (schedule ends at the budget)",
        f"levers for all: {'bf16 autocast, fused AdamW, ' if args.device == 'cuda' else ''}chunked linear CE "
        f"(--loss_chunk_size {args.loss_chunk_size}){', torch.compile (whole model)' if args.torch_compile else ''}; "
        "--compile_norms for none (it applies to Mamba blocks only, not to GPT-2)",
        f"training text: {', '.join(held['train_sources'])} ({held['train_documents']:,} documents); dev ppl on "
        f"pubmed/dev.jsonl.gz ({held['dev_documents']} documents; none found in the training text)",
        f"BioASQ: run_qa, examples/configs/bioasq_{{4b,5b}}.yaml, question_first, {args.qa_epochs} epochs"
        f"{f' (max_steps {args.qa_max_steps})' if args.qa_max_steps > 0 else ''}, lr {args.qa_learning_rate:g}; "
        "batch-averaged strict / lenient accuracy and MRR",
        "tokens/s: run_clm's train_steady_tokens_per_second (after the first optimizer step)",
    ]
    if incomplete:
        notes.append(f"INCOMPLETE: {len(incomplete)} stages not run yet (--deadline_seconds): run the command again")
    header = common.report_header(
        "Equal-compute quality benchmark (issue 13, target 5)", torch.device(args.device), notes
    )
    return header + "\n\n" + render_table(runs)


# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="130m", help="model shapes and defaults")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="tokens, time or both")
    parser.add_argument("--qa_sets", default=",".join(QA_SETS), help="BioASQ protocols to run (empty: none)")
    parser.add_argument("--data_dir", default=None, help="shared data folder (default $BIOMAMBA_DATA_DIR, .gpu/data)")
    parser.add_argument("--tokenizer", default=None, help="default <data_dir>/tokenizers/gpt-neox-20b (all models)")
    parser.add_argument("--out_dir", default="outputs/equal_compute", help="run folders (resumable)")
    parser.add_argument("--markdown_out", default=None, help="write the report (machine, date, command, table) here")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--allow_fallback", action="store_true", help="report Mamba rows that ran without kernels")
    parser.add_argument("--force", action="store_true", help="rerun stages whose results exist")
    parser.add_argument("--keep_qa_models", action="store_true", help="keep the fine-tuned QA weights")
    parser.add_argument("--no_pmc", dest="pmc", action="store_false", help="train on PubMed abstracts only")
    parser.add_argument("--torch_compile", action="store_true", help="Trainer's torch.compile, for every model")
    parser.add_argument("--deadline_seconds", type=float, default=None, help="launch no stage that would end later")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--loss_chunk_size", type=int, default=2048)
    for name, value in PRESETS["130m"].items():
        kind = float if isinstance(value, float) else int
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"default: preset's (130m: {value})")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="dev blocks scored (default: all)")
    args = parser.parse_args(argv)
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.models = [m for m in args.models.split(",") if m]
    args.regimes = [r for r in args.regimes.split(",") if r]
    args.qa_sets = [s for s in args.qa_sets.split(",") if s]
    for values, allowed, flag in ((args.models, MODELS, "models"), (args.regimes, REGIMES, "regimes"),
                                  (args.qa_sets, QA_SETS, "qa_sets")):  # fmt: skip
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"--{flag}: {bad} not in {allowed}")
    if args.tokens_per_step % (args.block_size * args.batch):
        parser.error(f"--tokens_per_step {args.tokens_per_step} is not a multiple of block x batch")
    if args.max_train_seconds <= 0 or args.max_steps <= 0:
        parser.error("--max_train_seconds and --max_steps must be positive")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    data = args.data_dir or os.environ.get("BIOMAMBA_DATA_DIR") or ".gpu/data"
    args.data_dir = Path(data).resolve()
    args.tokenizer = Path(args.tokenizer or args.data_dir / "tokenizers" / "gpt-neox-20b").resolve()
    args.out_dir = Path(args.out_dir).resolve()
    return args


def check_kernels(args) -> None:
    """On a GPU, refuse before any work when the kernels do not import (unless --allow_fallback)."""
    if args.device != "cuda" or args.allow_fallback or not set(args.models) & {"mamba", "mamba2"}:
        return
    from biomamba_hf.ops import cuda_kernels_available

    if not cuda_kernels_available():
        raise SystemExit(
            "mamba-ssm / causal-conv1d CUDA kernels cannot be imported: build them first (bash .gpu/build_kernels.sh) "
            "or pass --allow_fallback to report fallback rows knowingly."
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    for path in (
        args.data_dir / "pubmed" / "train.jsonl.gz",
        args.data_dir / "pubmed" / "dev.jsonl.gz",
        args.tokenizer,
    ):
        if not path.exists():
            raise SystemExit(f"{path} is missing: pass --data_dir (the shared data folder) or --tokenizer")
    check_kernels(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prepare_text(args)
    runner = Runner(args)
    runs, incomplete = [], []
    for regime in REGIMES:
        if regime not in args.regimes:
            continue
        for model in args.models:
            run = Run(model, regime)
            runs.append(run)
            try:
                if regime == "tokens":
                    pretrain(runner, run, args.max_steps, None)
                else:
                    rate = probe_throughput(runner, model)
                    steps = steps_for_budget(rate, args.tokens_per_step, args.max_train_seconds)
                    pretrain(runner, run, steps, args.max_train_seconds)
                if not run.refused and args.qa_sets:
                    finetune(runner, run)
            except Deadline as reason:
                incomplete.append(str(reason))
                run.refused = "not run yet (deadline): run the command again"
    text = report(args, runs, incomplete)
    print(text, flush=True)
    if args.markdown_out:
        path = Path(args.markdown_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    if incomplete:
        print(f"[bench] {len(incomplete)} stages left: run the same command again", flush=True)
        return EXIT_INCOMPLETE
    return 0


if __name__ == "__main__":
    sys.exit(main())
