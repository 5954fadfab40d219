"""benchmarks/bench_equal_compute.py without training: the commands every model gets (same flags but the shape), the
time-budget sizing, the kernel check on logs, the held-out check and the table. The full tiny preset (18 subprocess
runs, minutes on a CPU) is run by hand: python benchmarks/bench_equal_compute.py --preset tiny --allow_fallback."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from helpers import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_equal_compute", ROOT / "benchmarks" / "bench_equal_compute.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_equal_compute"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_equal_compute", None)


def _args(bench, tmp_path, *extra):
    args = bench.parse_args(
        ["--preset", "130m", "--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"), *extra]
    )
    args.train_file, args.dev_file = tmp_path / "train.jsonl", tmp_path / "dev.jsonl.gz"
    return args


def _strip_shape(command):
    i = command.index("--config_overrides")
    return command[:1] + command[2 : i - 1] + command[i + 2 :]


def test_every_model_gets_the_same_flags_but_its_shape(bench, tmp_path):
    args = _args(bench, tmp_path, "--device", "cuda")
    commands = {m: bench.clm_command(args, m, tmp_path / m, 1000) for m in bench.MODELS}
    stripped = {m: [a for a in _strip_shape(c) if a != str(tmp_path / m)] for m, c in commands.items()}
    assert stripped["mamba"] == stripped["mamba2"] == stripped["gpt2"]
    flags = commands["gpt2"]
    for expected in (["--tokens_per_step", "16384"], ["--loss_chunk_size", "2048"], ["--block_size", "2048"]):
        assert any(flags[i : i + 2] == expected for i in range(len(flags)))
    assert "--bf16" in flags and "adamw_torch_fused" in flags and "--compile_norms" not in flags
    assert "--validation_file" in flags and str(tmp_path / "dev.jsonl.gz") in flags
    assert "--model_type" in commands["mamba2"] and "mamba2" in commands["mamba2"]
    assert "n_positions=2048" in " ".join(commands["gpt2"])
    timed = bench.clm_command(args, "mamba", tmp_path / "t", 1226, max_train_seconds=120.0)
    assert timed[-2:] == ["--max_train_seconds", "120.0"]


def test_qa_command_uses_the_protocol_config(bench, tmp_path):
    args = _args(bench, tmp_path, "--device", "cpu")
    command = bench.qa_command(args, tmp_path / "clm", "5b", tmp_path / "qa")
    assert command[2].endswith("examples/configs/bioasq_5b.yaml")
    assert command[command.index("--qa_layout") + 1] == "question_first"
    assert command[command.index("--model_name_or_path") + 1] == str(tmp_path / "clm")
    assert "--use_cpu" in command and "--bf16" not in command


def test_steps_for_budget(bench):
    assert bench.steps_for_budget(163840.0, 16384, 120.0) == 1225  # 10 steps/s x 120 s x 1.02 + the first step
    with pytest.raises(ValueError, match="no throughput"):
        bench.steps_for_budget(0.0, 16384, 120.0)


def test_kernel_check_on_logs(bench):
    kernels = "x - run: Mamba code path: CUDA kernels (mamba-ssm + causal-conv1d)\n"
    assert bench.fallback_problem("mamba", kernels, "cuda") is None
    ssd = "run: Mamba-2 code path: mamba-ssm Triton SSD kernels + causal-conv1d\n"
    assert bench.fallback_problem("mamba2", ssd, "cuda") is None
    portable = "run: Mamba-2 code path: biomamba_hf portable chunked SSD (PyTorch); mamba-ssm's CUDA kernels ...\n"
    assert bench.fallback_problem("mamba2", portable, "cuda").startswith("fallback code path: biomamba_hf portable")
    assert bench.fallback_problem("mamba", "no such line", "cuda") == "no code-path line in the log"
    assert bench.fallback_problem("mamba", kernels, "cpu").startswith("not on a GPU")
    assert bench.fallback_problem("gpt2", "", "cuda") is None
    liger = "INFO Training loss: chunked linear cross-entropy (liger-kernel fused linear CE), 2048 tokens per chunk"
    assert bench.loss_kernel(liger) == "liger-kernel fused linear CE"


def test_held_out_check(bench):
    text = "Aspirin and platelets. " + "Aspirin irreversibly inhibits cyclooxygenase in platelets. " * 6
    dev = [{"id": "pmid:1", "text": text}]
    assert bench.held_out_check([{"id": "pmid:2", "text": "Something else entirely. " * 5}], dev)["dev_in_train"] == []
    assert bench.held_out_check([{"id": "pmid:1", "text": "other"}], dev)["dev_in_train"] == ["pmid:1"]
    article = {"pmcid": "PMC9", "text": "A title\n\nINTRODUCTION " + "x " * 50 + text.upper() + " more"}
    assert bench.held_out_check([article], dev)["dev_in_train"] == ["pmid:1"]  # a passage inside a full text


def test_table_has_every_row_and_refuses_fallback_rows(bench):
    ok = bench.Run("mamba2", "time", max_steps=1226)
    ok.clm = {
        "train_tokens": 19_660_800, "train_tokens_per_step": 16384, "train_steps": 1200, "perplexity": 21.5,
        "train_steady_tokens_per_second": 150000.0, "train_stopped_by_time_budget": 1,
        "train_time_budget_seconds": 120.0, "loss_kernel": "liger",
    }  # fmt: skip
    ok.qa = {
        "4b": {"bioasq_4b_strict_acc": 0.25, "bioasq_4b_lenient_acc": 0.3, "bioasq_4b_mrr": 0.27},
        "5b": {"error": "run_qa cannot load a QA head for this model (exit 1)"},
    }
    refused = bench.Run("mamba", "tokens", refused="refused: fallback code path: x (--allow_fallback to report it)")
    table = bench.render_table([ok, refused])
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.count("|") == len(bench.TABLE_HEADERS) + 1 for line in lines)
    assert "| Mamba2-130m | time | 19,660,800 | 150000 | 1,200 | 21.50 | 0.2500 | 0.3000 | 0.2700 | n/a |" in table
    assert "stopped by the budget" in table and "5b: run_qa cannot load a QA head" in table
    assert "| Mamba-130m | tokens | - |" in table and "refused: fallback code path" in table


def test_bad_arguments_are_refused(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "bert", "--data_dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.parse_args(["--tokens_per_step", "1000", "--data_dir", str(tmp_path)])
