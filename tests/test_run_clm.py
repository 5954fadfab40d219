"""examples/run_clm.py, biomamba_hf.script_utils and biomamba_hf.trainer: continued pretraining, evaluation, resume, multi-process."""

from __future__ import annotations

import doctest
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SENTENCES, data_dir, record_compiled_modules

from biomamba_hf import script_utils
from biomamba_hf.script_utils import (
    check_output_dir,
    config_from_overrides,
    gradient_accumulation_for,
    run_summary_lines,
)
from biomamba_hf.trainer import CLMTrainingArguments, token_nll_sums

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_clm.py"
CONFIGS = ROOT / "examples" / "configs"


def run(run_clm, monkeypatch, args):
    """Run the script's main() with ``args`` as the command line; return all_results.json."""
    monkeypatch.setattr(sys, "argv", ["run_clm.py", *map(str, args)])
    run_clm.main()
    args = [str(arg) for arg in args]
    if "--output_dir" in args:
        output_dir = args[args.index("--output_dir") + 1]
    else:
        output_dir = next(arg.split("=", 1)[1] for arg in args if arg.startswith("--output_dir="))
    return json.loads((Path(output_dir) / "all_results.json").read_text())


@pytest.fixture
def corpus(tmp_path):
    """A small training/validation corpus in the shared PubMed format (jsonl.gz, `text` field)."""
    import gzip

    paths = {}
    for name, sentences in (("train", SENTENCES * 6), ("dev", SENTENCES[::-1])):
        path = tmp_path / f"{name}.jsonl.gz"
        with gzip.open(path, "wt") as f:
            for i, text in enumerate(sentences):
                f.write(json.dumps({"id": f"{name}-{i}", "text": text}) + "\n")
        paths[name] = path
    return paths


def tiny_args(tmp_path, output_dir, **overrides):
    args = {
        "--block_size": 32,
        "--per_device_train_batch_size": 4,
        "--per_device_eval_batch_size": 4,
        "--learning_rate": 5e-3,
        "--max_steps": 6,
        "--logging_steps": 2,
        "--save_strategy": "no",
        "--seed": 0,
        "--report_to": "none",
        "--cache_dir": tmp_path / "cache",
        "--output_dir": output_dir,
    }
    args.update(overrides)
    flat = []
    for key, value in args.items():
        if value is None:
            continue
        flat.append(key)
        if value is not True:
            flat.append(value)
    return flat


def test_docstring_examples():
    assert doctest.testmod(script_utils, raise_on_error=False).failed == 0


# ---------------------------------------------------------------- perplexity over real tokens only


def test_token_nll_sums_by_hand_on_a_padded_example():
    import torch

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[3, 1, 4, 0], [2, 2, -100, -100]])  # second row: 2 real tokens, then padding
    sums = token_nll_sums(logits, labels)

    def nll(row, position, target):  # -log softmax(logits[row, position])[target], written out
        scores = [float(x) for x in logits[row, position]]
        return math.log(sum(math.exp(s) for s in scores)) - scores[target]

    # Position t predicts labels[t + 1]; row 0 has 3 predictions, row 1 only one (its target 2 at index 1).
    expected_row0 = nll(0, 0, 1) + nll(0, 1, 4) + nll(0, 2, 0)
    expected_row1 = nll(1, 0, 2)
    assert sums[:, 1].tolist() == [3.0, 1.0]
    assert sums[0, 0].item() == pytest.approx(expected_row0, rel=1e-5)
    assert sums[1, 0].item() == pytest.approx(expected_row1, rel=1e-5)
    loss = (expected_row0 + expected_row1) / 4  # mean over the 4 real next-token predictions
    assert (sums[:, 0].sum() / sums[:, 1].sum()).item() == pytest.approx(loss, rel=1e-5)
    # The mean of per-row means (what averaging padded batches gives) is a different number.
    assert (expected_row0 / 3 + expected_row1) / 2 != pytest.approx(loss, rel=1e-3)


def test_trainer_eval_loss_is_the_token_mean_over_unpadded_predictions(clm_dir, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, default_data_collator

    from biomamba_hf.trainer import CausalLMTrainer

    model = AutoModelForCausalLM.from_pretrained(clm_dir)
    blocks = [[5, 9, 13, 7, 21, 8], [30, 2, 44, 17, 3, 6], [12, 40, 0, 1, 1, 1]]  # the last one padded after 3
    labels = [list(blocks[0]), list(blocks[1]), [12, 40, 0, -100, -100, -100]]
    dataset = Dataset.from_dict({"input_ids": blocks, "labels": labels})
    args = CLMTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none")
    trainer = CausalLMTrainer(model=model, args=args, eval_dataset=dataset, data_collator=default_data_collator)
    metrics = trainer.evaluate()

    model.eval()
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor(blocks)).logits.float(), dim=-1)
    total, count = 0.0, 0
    for row, block_labels in enumerate(labels):
        for position in range(len(block_labels) - 1):
            target = block_labels[position + 1]
            if target != -100:
                total -= log_probs[row, position, target].item()
                count += 1
    assert count == 5 + 5 + 2
    assert metrics["eval_num_predictions"] == count
    assert metrics["eval_loss"] == pytest.approx(total / count, rel=1e-5)


# ---------------------------------------------------------------- tokens per step, output dir, config


def test_gradient_accumulation_from_tokens_per_step():
    assert gradient_accumulation_for(524288, 2048, 16, 8) == 2
    assert gradient_accumulation_for(524288, 2048, 8, 2) == 16
    assert gradient_accumulation_for(128, 32, 2, 2) == 1


def test_tokens_per_step_not_divisible_lists_working_batch_sizes():
    with pytest.raises(
        ValueError,
        match=r"--tokens_per_step 524288 is not a multiple of block_size \(2048\) x per_device_train_batch_size "
        r"\(6\) x world size \(8\) = 98304 tokens per micro-step\. Per-device batch sizes that divide it: "
        r"\[1, 2, 4, 8, 16, 32\]",
    ):
        gradient_accumulation_for(524288, 2048, 6, 8)
    with pytest.raises(ValueError, match=r"not even a multiple of block_size x world size = 6144"):
        gradient_accumulation_for(524288, 2048, 1, 3)


def test_run_summary_lines_name_every_quantity():
    lines = run_summary_lines(
        world_size=2, per_device_batch_size=4, gradient_accumulation_steps=3, block_size=64, code_path="x", dtype="y"
    )
    assert "tokens per optimizer step: 1,536 (64 x 4 x 3 x 2)" in lines
    assert lines[0] == "world size: 2" and lines[-2:] == ["Mamba code path: x", "dtype: y"]


def test_check_output_dir(tmp_path):
    out = tmp_path / "out"
    args = CLMTrainingArguments(output_dir=str(out), do_train=True, report_to="none")
    assert check_output_dir(args) is None  # does not exist yet
    out.mkdir()
    assert check_output_dir(args) is None  # empty
    (out / "notes.txt").write_text("x")
    with pytest.raises(
        ValueError, match=r"Output directory .*out already exists and is not empty .*--overwrite_output_dir"
    ):
        check_output_dir(args)
    for step in (2, 10, 12):
        (out / f"checkpoint-{step}").mkdir()
    for step in (2, 10):  # checkpoint-12 has no trainer state: half-written, never resumed
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert check_output_dir(args) == str(out / "checkpoint-10")
    (tmp_path / "restart").mkdir()
    for name in ("run_args.json", "initial_results.json"):  # written before the first checkpoint
        (tmp_path / "restart" / name).write_text("{}")
    args.output_dir = str(tmp_path / "restart")
    assert check_output_dir(args) is None
    args.output_dir = str(out)
    args.overwrite_output_dir = True
    assert check_output_dir(args) is None
    args.resume_from_checkpoint = str(out / "checkpoint-2")
    assert check_output_dir(args) == str(out / "checkpoint-2")


def test_config_from_overrides():
    config = config_from_overrides("mamba", "hidden_size=64,num_hidden_layers=2,use_mambapy=true,vocab_size=500")
    assert (config.intermediate_size, config.num_hidden_layers, config.use_mambapy, config.vocab_size) == (
        128,
        2,
        True,
        500,
    )
    with pytest.raises(ValueError, match=r"MambaConfig has no attribute 'hiden_size'"):
        config_from_overrides("mamba", "hiden_size=64")
    with pytest.raises(ValueError, match=r"'hidden_size' is not of the form key=value"):
        config_from_overrides("mamba", "hidden_size")
    with pytest.raises(ValueError, match=r"--model_type 'mambaa' is not a transformers model type"):
        config_from_overrides("mambaa")


def test_mambapy_is_switched_on_without_cuda_kernels():
    pytest.importorskip("mambapy")
    config = config_from_overrides("mamba", "hidden_size=32,num_hidden_layers=1")
    path = script_utils.configure_mamba_code_path(config, "cpu")
    assert config.use_mambapy is True
    assert "use_mambapy=True" in path


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train_file", "train.csv"], r"--train_file \S*train.csv: unsupported file extension '.csv'"),
        (["--train_file", "t.jsonl", "--block_size", "1"], r"--block_size must be at least 2 tokens, got 1"),
        (
            ["--train_file", "t.jsonl", "--model_name_or_path", "m", "--config_overrides", "hidden_size=8"],
            r"--config_overrides 'hidden_size=8' only applies to a model trained from scratch",
        ),
        (["--train_file", "t.jsonl", "--max_train_samples", "0"], r"--max_train_samples must be a positive"),
        (["--train_file", "t.jsonl", "--tokens_per_step", "-4"], r"--tokens_per_step must be a positive"),
        (["--model_type", "mamba"], r"No data: pass --train_file"),
        (["--train_file", "t.jsonl"], r"No model: pass --model_name_or_path"),
    ],
)
def test_argument_errors(run_clm, extra, message, tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a"}\n')  # an existing file: the error is the one named
    extra = [str(tmp_path / "t.jsonl") if value == "t.jsonl" else value for value in extra]
    args = ["--output_dir", str(tmp_path / "out"), *extra]
    if "--model_name_or_path" not in extra and "--train_file" in extra and "No model" not in message:
        args += ["--model_type", "mamba"]
    with pytest.raises(ValueError, match=message):
        run_clm.parse_args(args)


def test_errors_come_before_any_training(run_clm, monkeypatch, tmp_path, corpus, tokenizer_dir):
    base = [
        "--model_type", "mamba", "--config_overrides", "hidden_size=32,num_hidden_layers=1",
        "--tokenizer_name", tokenizer_dir, "--train_file", corpus["train"], "--do_train",
    ]  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.txt").write_text("an earlier run")
    with pytest.raises(ValueError, match=r"Output directory .*out already exists and is not empty"):
        run(run_clm, monkeypatch, base + tiny_args(tmp_path, out))
    with pytest.raises(ValueError, match=r"--tokens_per_step 1000 is not a multiple of block_size \(32\)"):
        run(run_clm, monkeypatch, base + tiny_args(tmp_path, out, **{"--tokens_per_step": 1000}))
    with pytest.raises(ValueError, match=r"contradicts --tokens_per_step 256, which needs 2"):
        run(
            run_clm,
            monkeypatch,
            base + tiny_args(tmp_path, out, **{"--tokens_per_step": 256, "--gradient_accumulation_steps": 3}),
        )
    assert sorted(os.listdir(out)) == ["results.txt"]


# ---------------------------------------------------------------- end-to-end runs


def test_continue_pretraining_from_a_checkpoint_folder(run_clm, monkeypatch, tmp_path, corpus, clm_dir):
    """--model_name_or_path with a local folder laid out like state-spaces/mamba-130m-hf (weights + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    args = ["--model_name_or_path", clm_dir, "--train_file", corpus["train"], "--validation_file", corpus["dev"]]
    args += ["--do_train", "--do_eval", "--eval_before_train", "--tokens_per_step", "256"]
    results = run(run_clm, monkeypatch, args + tiny_args(tmp_path, out))

    assert results["train_tokens_per_step"] == 256 and results["train_tokens"] == 6 * 256
    assert results["train_tokens_per_second"] > 0 and results["train_steady_tokens_per_second"] > 0
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    assert results["perplexity"] < results["initial_perplexity"]
    before = AutoModelForCausalLM.from_pretrained(clm_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    trainer_state = json.loads((out / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 6
    assert (out / "tokenizer.json").exists()


def test_speed_flags_train_like_the_stock_run(run_clm, monkeypatch, tmp_path, corpus, clm_dir):
    """--loss_chunk_size and --compile_norms (biomamba_hf.speed) give the same training run as the stock settings."""
    import torch
    from transformers import AutoModelForCausalLM

    common = [
        "--model_name_or_path",
        clm_dir,
        "--train_file",
        corpus["train"],
        "--do_train",
        "--tokens_per_step",
        "256",
    ]
    stock = run(run_clm, monkeypatch, common + tiny_args(tmp_path, tmp_path / "stock"))
    chunked = run(
        run_clm, monkeypatch, common + ["--loss_chunk_size", "16"] + tiny_args(tmp_path, tmp_path / "chunked")
    )
    compiled_modules = record_compiled_modules(monkeypatch)
    compiled = run(run_clm, monkeypatch, common + ["--compile_norms"] + tiny_args(tmp_path, tmp_path / "compiled"))
    assert compiled_modules == ["MambaRMSNorm"] * 3  # two blocks and the final norm
    for result in (chunked, compiled):
        assert result["train_loss"] == pytest.approx(stock["train_loss"], rel=1e-4)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "stock").state_dict()
    for other in ("chunked", "compiled"):
        b = AutoModelForCausalLM.from_pretrained(tmp_path / other).state_dict()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=f"{other}: {name}")


def test_resume_continues_from_the_saved_step(run_clm, monkeypatch, tmp_path, corpus, clm_dir):
    common = ["--model_name_or_path", clm_dir, "--train_file", corpus["train"], "--validation_file", corpus["dev"]]
    common += ["--do_train", "--do_eval", "--lr_scheduler_type", "constant"]
    straight = run(run_clm, monkeypatch, common + tiny_args(tmp_path, tmp_path / "straight", **{"--max_steps": 6}))

    out = tmp_path / "resumed"
    first = tiny_args(tmp_path, out, **{"--max_steps": 4, "--save_strategy": "steps", "--save_steps": 2})
    run(run_clm, monkeypatch, common + first)
    assert {"checkpoint-2", "checkpoint-4"} <= set(os.listdir(out))
    # Same output dir, no --overwrite_output_dir: training resumes from checkpoint-4 instead of failing; a longer
    # --max_steps is a changed argument, so it is asked for explicitly.
    resumed = run(
        run_clm, monkeypatch, common + ["--allow_changed_arguments"] + tiny_args(tmp_path, out, **{"--max_steps": 6})
    )
    assert resumed["train_start_step"] == 4
    assert resumed["train_tokens"] == 2 * 32 * 4
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-4)


def test_embedded_demo_arguments_run(run_clm, monkeypatch, tmp_path):
    """The no-argument default (shortened here): bundled corpus, tokenizer trained on the fly, perplexity falls."""
    out = tmp_path / "demo"
    args = run_clm.demo_arguments(str(out)) + ["--max_steps=12", "--max_eval_samples=16", "--logging_steps=4"]
    results = run(run_clm, monkeypatch, args)
    assert results["initial_perplexity"] > results["perplexity"]
    assert results["train_block_size"] == 128
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["vocab_size"] == 1000
    # A second run may write into the demo's own, now non-empty, folder.
    assert check_output_dir(run_clm.parse_args(args)[2]) is None


@pytest.mark.real_data
def test_tiny_model_on_pubmed_dev_perplexity_falls(run_clm, monkeypatch, tmp_path, tokenizer_dir):
    path = data_dir() / "pubmed" / "dev.jsonl.gz"
    args = [
        "--model_type", "mamba", "--config_overrides", "hidden_size=32,num_hidden_layers=2,state_size=8",
        "--tokenizer_name", tokenizer_dir, "--train_file", path, "--validation_split_percentage", "5",
        "--do_train", "--do_eval", "--eval_before_train", "--max_eval_samples", "24",
    ]  # fmt: skip
    out = tmp_path / "out"
    results = run(run_clm, monkeypatch, args + tiny_args(tmp_path, out, **{"--block_size": 64, "--max_steps": 25}))
    assert results["perplexity"] < 0.7 * results["initial_perplexity"]
    assert results["eval_num_predictions"] == results["eval_samples"] * 63
    assert results["train_tokens"] == 25 * 64 * 4


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_at_equal_global_batch(run_clm, monkeypatch, tmp_path, corpus, clm_dir):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU gives two gloo ranks (`--cpu` would give one)."""
    common = ["--model_name_or_path", clm_dir, "--train_file", corpus["train"], "--validation_file", corpus["dev"]]
    common += ["--do_train", "--do_eval", "--tokens_per_step", "256", "--dataloader_num_workers", "0"]
    single = run(run_clm, monkeypatch, common + tiny_args(tmp_path, tmp_path / "one"))

    out = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), str(SCRIPT)]
    args = common + tiny_args(tmp_path, out, **{"--per_device_train_batch_size": 2, "--per_device_eval_batch_size": 2})
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + list(map(str, args)), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "world size: 2" in done.stdout + done.stderr
    double = json.loads((out / "all_results.json").read_text())
    # Same tokens per step: 32 x 4 x 2 (one process, accumulation 2) = 32 x 2 x 2 x 2 (two processes).
    assert double["train_tokens"] == single["train_tokens"] == 6 * 256
    assert double["eval_num_predictions"] == single["eval_num_predictions"]
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-4)
    assert double["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)


# ---------------------------------------------------------------- configs


def test_recipe_config_matches_the_paper(run_clm, tmp_path):
    import yaml
    from helpers import stand_in_data_dir
    from transformers import HfArgumentParser

    recipe = yaml.safe_load((CONFIGS / "biomamba_recipe.yaml").read_text())
    assert recipe.pop("bf16") is True  # bf16 needs a GPU: parsed here without it
    recipe["data_dir"] = str(stand_in_data_dir(tmp_path))  # its data paths, only parsed here
    parser = HfArgumentParser((run_clm.ModelArguments, run_clm.DataTrainingArguments, CLMTrainingArguments))
    model_args, data_args, args = parser.parse_dict(recipe)
    assert model_args.model_name_or_path == "state-spaces/mamba-130m-hf"
    assert data_args.block_size == 2048
    assert args.tokens_per_step == 524288 and args.max_steps == 4800
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay, args.max_grad_norm) == (0.9, 0.95, 0.1, 1.0)
    assert args.learning_rate == 6e-4 and args.lr_scheduler_type.value == "cosine_with_min_lr"
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-5}
    assert args.loss_chunk_size == 2048 and args.compile_norms  # the fastest settings of BENCHMARKS.md, table 1
    # 0.5M tokens per step hold on 1, 2, 4 and 8 GPUs with the recipe's per-device batch.
    steps = {
        n: gradient_accumulation_for(args.tokens_per_step, 2048, args.per_device_train_batch_size, n)
        for n in (1, 2, 4, 8)
    }
    assert all(2048 * args.per_device_train_batch_size * n * k == 524288 for n, k in steps.items())


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "tiny_cpu.json"])
def test_small_configs_parse(run_clm, name, tmp_path):
    from helpers import stand_in_data_dir

    data = stand_in_data_dir(tmp_path)  # their data paths, only parsed here
    model_args, data_args, args = run_clm.parse_args([str(CONFIGS / name), "--data_dir", str(data)])
    assert model_args.model_type == "mamba" and data_args.block_size > 0 and args.do_train


@pytest.mark.parametrize(
    ("name", "distributed_type"),
    [
        ("single_gpu.yaml", "NO"),
        ("multi_gpu_bf16.yaml", "MULTI_GPU"),
        ("fsdp.yaml", "FSDP"),
        ("deepspeed_zero2.yaml", "DEEPSPEED"),
        ("multi_node.yaml", "MULTI_GPU"),
    ],
)
def test_accelerate_configs_load(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "examples" / "accelerate" / name))
    assert config.distributed_type.value == distributed_type
    if config.fsdp_config:
        _check_fsdp_wraps_blocks_of_both_families(config.fsdp_config)
    if config.deepspeed_config:
        ds = json.loads((ROOT / config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_accumulation_steps"] == "auto"


def _check_fsdp_wraps_blocks_of_both_families(fsdp_config):
    """accelerate's own FSDP2 wrap policy, built from the file's settings, finds blocks to shard in a Mamba and in a
    Mamba-2 model (a layer class named in the file that one family lacks makes accelerate refuse that family)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from helpers import tiny_config, tiny_mamba2_config
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    assert fsdp_config["fsdp_version"] == 2
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy=fsdp_config["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fsdp_config.get("fsdp_transformer_layer_cls_to_wrap"),
    )
    for model_class, make_config, block in (
        (MambaForCausalLM, tiny_config, "MambaBlock"),
        (Mamba2ForCausalLM, tiny_mamba2_config, "Mamba2Block"),
    ):
        model = model_class(make_config(100))
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        wrapped = [type(module).__name__ for module in model.modules() if policy(module)]
        assert wrapped.count(block) == model.config.num_hidden_layers, (model_class.__name__, wrapped)


def test_chunked_loss_is_refused_under_data_parallel(run_clm, monkeypatch, tmp_path, corpus):
    """Several GPUs in one process means nn.DataParallel, which the per-model chunked-loss hook does not survive."""
    monkeypatch.setattr(CLMTrainingArguments, "n_gpu", property(lambda self: 2))
    args = ["--model_type", "mamba", "--train_file", corpus["train"], "--do_train", "--loss_chunk_size", "16"]
    with pytest.raises(ValueError, match=r"--loss_chunk_size with 2 GPUs in one process .*DataParallel"):
        run(run_clm, monkeypatch, args + tiny_args(tmp_path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
