#!/usr/bin/env python
"""The multi-GPU configs of ``examples/accelerate/`` really run (issue 13, target 6): DDP, FSDP2 and DeepSpeed ZeRO-2
on the GPUs of one machine, for Mamba-130m and Mamba2-130m shapes, through ``examples/run_clm.py``.

Each (model, mode) is one ``accelerate launch --config_file <mode's file> --num_processes N examples/run_clm.py`` with
the same flags for every mode: random init from the same seed, PubMed abstracts (``pubmed/train.jsonl.gz`` of the
data folder), the same tokens per optimizer step, steps, learning-rate schedule and chunked / liger loss, a loss
logged every step. Reported per run: tokens/s of all GPUs and per GPU (run_clm's ``train_steady_tokens_per_second``),
rank 0's peak device memory (``train_peak_memory_gib``), and the loss curve against DDP's: the largest relative
difference over the logged steps, checked against ``--tolerance``. A run that fails gets the last line of its error
in its row (and the command exits 1).

Modes: ``ddp`` = ``multi_gpu_bf16.yaml``, ``fsdp`` = ``fsdp.yaml``, ``zero2`` = ``deepspeed_zero2.yaml`` (needs
``deepspeed``; its CUDA ops can stay unbuilt: ZeRO-2 with the PyTorch optimizer). ``--compile_norms`` adds run_clm's
compiled norms to every run (to check them under FSDP).

    python benchmarks/bench_multi_gpu.py --data_dir .gpu/data --num_processes 2 --markdown_out outputs/multi_gpu.md
    python benchmarks/bench_multi_gpu.py --print_commands                      # what would run, on any machine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Mode -> the accelerate config file it launches with.
MODES = {"ddp": "multi_gpu_bf16.yaml", "fsdp": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml"}
MODEL_NAMES = {"mamba": "Mamba-130m", "mamba2": "Mamba2-130m"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=".gpu/data", help="the shared data folder (pubmed/, tokenizers/)")
    parser.add_argument("--models", default="mamba,mamba2", help="comma-separated, of mamba, mamba2")
    parser.add_argument("--modes", default="ddp,fsdp,zero2", help="comma-separated, of " + ", ".join(MODES))
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--max_steps", type=int, default=40)
    parser.add_argument("--tokens_per_step", type=int, default=131072)
    parser.add_argument("--block_size", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16, help="per-device micro-batch")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest relative loss difference to DDP")
    parser.add_argument("--compile_norms", action="store_true")
    parser.add_argument("--out_dir", default="outputs/multi_gpu")
    parser.add_argument("--markdown_out", default=None)
    parser.add_argument("--print_commands", action="store_true", help="print the launch commands and exit")
    args = parser.parse_args(argv)
    import common

    args.models = common.choices(parser, "--models", args.models, MODEL_NAMES)
    args.modes = common.choices(parser, "--modes", args.modes, MODES)
    if "ddp" not in args.modes:
        parser.error("--modes must include ddp: every loss curve is compared with DDP's")
    args.data_dir, args.out_dir = Path(args.data_dir), Path(args.out_dir)
    return args


def launch_command(args, model: str, mode: str, output_dir: Path) -> list[str]:
    """One run: the mode's accelerate config, then run_clm with the flags every mode shares."""
    from bench_equal_compute import model_flags

    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "examples" / "accelerate" / MODES[mode]),
        "--num_processes", str(args.num_processes),
        str(ROOT / "examples" / "run_clm.py"), *model_flags("130m")[model],
        "--tokenizer_name", str(args.data_dir / "tokenizers" / "gpt-neox-20b"),
        "--train_file", str(args.data_dir / "pubmed" / "train.jsonl.gz"),
        "--block_size", str(args.block_size), "--tokens_per_step", str(args.tokens_per_step),
        "--per_device_train_batch_size", str(args.batch), "--max_steps", str(args.max_steps),
        "--learning_rate", "6e-4", "--warmup_steps", "0.05", "--adam_beta2", "0.95", "--weight_decay", "0.1",
        "--max_grad_norm", "1.0", "--loss_chunk_size", "2048", "--bf16", "--logging_steps", "1",
        "--save_strategy", "no", "--do_train", "--seed", "42", "--report_to", "none", "--disable_tqdm", "true",
        "--dataloader_num_workers", "0", "--output_dir", str(output_dir), "--overwrite_output_dir",
    ]  # fmt: skip
    if args.compile_norms:
        command.append("--compile_norms")
    return command


def loss_curve(run_dir: Path) -> dict[int, float]:
    """{optimizer step: logged training loss} of a finished run (its ``trainer_state.json``)."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return {entry["step"]: float(entry["loss"]) for entry in state["log_history"] if "loss" in entry}


def largest_relative_difference(curve: dict[int, float], reference: dict[int, float]) -> float:
    """max over the steps of |loss - reference| / |reference|; both curves must log the same steps."""
    if sorted(curve) != sorted(reference) or not reference:
        raise ValueError(
            f"the runs logged different steps ({sorted(curve)[:5]}... vs {sorted(reference)[:5]}...): compare runs "
            "with the same --max_steps and --logging_steps"
        )
    return max(abs(curve[step] - reference[step]) / abs(reference[step]) for step in reference)


def result_row(args, model: str, mode: str, run_dir: Path, error: str | None, ddp_curve) -> list[str]:
    name = MODEL_NAMES[model]
    if error is not None:
        return [name, mode, MODES[mode], f"failed: {error}", "", "", "", ""]
    results = json.loads((run_dir / "all_results.json").read_text())
    tokens_per_second = results.get("train_steady_tokens_per_second", 0.0)
    memory = results.get("train_peak_memory_gib")
    if mode == "ddp" or ddp_curve is None:
        difference, verdict = "reference" if mode == "ddp" else "no DDP run to compare with", ""
    else:
        value = largest_relative_difference(loss_curve(run_dir), ddp_curve)
        difference, verdict = f"{value:.2%}", "within" if value <= args.tolerance else "OUTSIDE"
    return [
        name,
        mode,
        MODES[mode],
        f"{tokens_per_second:,.0f}",
        f"{tokens_per_second / args.num_processes:,.0f}",
        "" if memory is None else f"{memory:.2f}",
        difference,
        verdict,
    ]


def last_error_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if "Error" in line or "error:" in line]
    return (lines[-1] if lines else (log.strip().splitlines() or ["no output"])[-1])[:300]


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = [(model, mode) for model in args.models for mode in ["ddp", *[m for m in args.modes if m != "ddp"]]]
    if args.print_commands:
        for model, mode in runs:
            print(shlex.join(launch_command(args, model, mode, args.out_dir / f"{model}_{mode}")))
        return 0
    import torch

    if torch.cuda.device_count() < args.num_processes:
        raise SystemExit(
            f"{args.num_processes} processes need {args.num_processes} GPUs, this machine has "
            f"{torch.cuda.device_count()}: run on a multi-GPU machine or lower --num_processes."
        )
    if "zero2" in args.modes and importlib.util.find_spec("deepspeed") is None:
        raise SystemExit("--modes zero2 needs deepspeed (pip install deepspeed; its ops may stay unbuilt).")
    rows, failed, ddp_curves = [], False, {}
    for model, mode in runs:
        run_dir = args.out_dir / f"{model}_{mode}"
        run_dir.mkdir(parents=True, exist_ok=True)
        command = launch_command(args, model, mode, run_dir)
        print(f"[bench] {model} {mode}: {shlex.join(command)}", flush=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        (args.out_dir / f"{model}_{mode}.log").write_text(done.stdout + done.stderr)
        error = None if done.returncode == 0 else last_error_line(done.stdout + done.stderr)
        failed |= error is not None
        if mode == "ddp" and error is None:
            ddp_curves[model] = loss_curve(run_dir)
        rows.append(result_row(args, model, mode, run_dir, error, ddp_curves.get(model)))
        print(f"[bench] {' | '.join(rows[-1])}", flush=True)
    text = report(args, rows)
    print(text)
    if args.markdown_out:
        Path(args.markdown_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown_out).write_text(text + "\n")
    return 1 if failed else 0


def report(args, rows) -> str:
    import common
    import torch

    notes = [
        f"{args.num_processes} processes; random init, seed 42; {args.max_steps} optimizer steps of "
        f"{args.tokens_per_step:,} tokens (block {args.block_size}, micro-batch {args.batch}); bf16, chunked / liger "
        f"loss (--loss_chunk_size 2048){', --compile_norms' if args.compile_norms else ''}; PubMed abstracts",
        f"loss curves: largest relative difference to DDP over the {args.max_steps} logged steps; tolerance "
        f"{args.tolerance:.0%}",
        "tokens/s: run_clm's train_steady_tokens_per_second (all GPUs, after the first step); memory: rank 0's "
        "torch.cuda.max_memory_allocated",
    ]
    header = common.report_header("Multi-GPU configs through run_clm", torch.device("cuda"), notes)
    table = common.markdown_table(
        ["model", "mode", "config", "tokens/s", "tokens/s per GPU", "peak memory GiB (rank 0)", "loss vs DDP", ""],
        rows,
    )
    return header + "\n\n" + table


if __name__ == "__main__":
    sys.exit(main())
