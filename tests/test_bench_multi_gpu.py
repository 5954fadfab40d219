"""benchmarks/bench_multi_gpu.py on a CPU: the commands it launches, the loss-curve comparison and the table rows
(the runs themselves need several GPUs; a CPU cannot stand in: accelerate downgrades FSDP to one process there)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "bench_multi_gpu.py"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_multi_gpu

    return bench_multi_gpu


def test_every_mode_launches_its_config_with_the_same_run_clm_flags(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--print_commands", "--out_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    assert len(commands) == 6  # 2 models x (ddp, fsdp, zero2), DDP first for each model
    configs = [Path(c[c.index("--config_file") + 1]).name for c in commands]
    assert configs == ["multi_gpu_bf16.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"] * 2
    for command in commands:
        assert (ROOT / "examples" / "accelerate" / Path(command[command.index("--config_file") + 1]).name).is_file()
        run_clm = command[command.index("--num_processes") + 2 :]
        assert Path(run_clm[0]).name == "run_clm.py"

    def shared(command):  # the run_clm flags, without the model shape and the output folder
        flags = command[command.index("--tokenizer_name") :]
        return [flag for flag in flags if not flag.startswith(str(tmp_path))]

    assert all(shared(command) == shared(commands[0]) for command in commands)
    assert {c[c.index("--model_type") + 1] for c in commands} == {"mamba", "mamba2"}


def _run_dir(tmp_path, name, losses, tokens_per_second=1000.0, memory=None):
    folder = tmp_path / name
    folder.mkdir()
    history = [{"step": i + 1, "loss": loss, "learning_rate": 1e-3} for i, loss in enumerate(losses)]
    folder.joinpath("trainer_state.json").write_text(json.dumps({"log_history": [*history, {"train_runtime": 1}]}))
    results = {"train_steady_tokens_per_second": tokens_per_second}
    if memory is not None:
        results["train_peak_memory_gib"] = memory
    folder.joinpath("all_results.json").write_text(json.dumps(results))
    return folder


def test_loss_curves_are_compared_step_by_step_against_the_tolerance(bench, tmp_path):
    args = bench.parse_args(["--num_processes", "2", "--tolerance", "0.02"])
    ddp = _run_dir(tmp_path, "ddp", [10.0, 8.0, 6.0], 2000.0, 12.5)
    close = _run_dir(tmp_path, "close", [10.1, 8.0, 6.05], 1800.0, 9.25)
    far = _run_dir(tmp_path, "far", [10.0, 8.0, 6.3])
    reference = bench.loss_curve(ddp)
    assert reference == {1: 10.0, 2: 8.0, 3: 6.0}
    assert bench.result_row(args, "mamba", "ddp", ddp, None, reference)[3:] == [
        "2,000", "1,000", "12.50", "reference", ""
    ]  # fmt: skip
    assert bench.result_row(args, "mamba2", "fsdp", close, None, reference)[3:] == [
        "1,800", "900", "9.25", "1.00%", "within"
    ]  # fmt: skip
    assert bench.result_row(args, "mamba2", "zero2", far, None, reference)[6:] == ["5.00%", "OUTSIDE"]
    assert bench.result_row(args, "mamba", "fsdp", far, "ValueError: no", reference)[3] == "failed: ValueError: no"
    with pytest.raises(ValueError, match="the runs logged different steps"):
        bench.largest_relative_difference({1: 1.0}, reference)


def test_arguments_are_checked_and_a_machine_without_enough_gpus_is_refused(bench, tmp_path, monkeypatch, capsys):
    import torch

    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "fsdp"])  # no DDP reference
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "ddp,zero3"])
    assert "--modes: unknown ['zero3']; choose from ddp, fsdp, zero2" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # whatever this machine has: nothing is launched
    with pytest.raises(SystemExit, match=r"2 processes need 2 GPUs, this machine has 1"):
        bench.main(["--out_dir", str(tmp_path)])
    assert not (tmp_path / "mamba_ddp").exists()
