"""kill -9 during training, rerun the same command: training resumes from the last complete checkpoint and ends
exactly where an uninterrupted run with the same seed ends.

The commands run in child processes of ``tests/interrupted_run.py`` (a fork server, so that torch is imported once),
which ``SIGKILL`` themselves at chosen moments: inside an optimizer step, in the middle of writing a checkpoint,
after a checkpoint was written but before it was marked complete, and while writing the final model.

Tolerance. On a CPU with one thread, two uninterrupted runs with the same seed give bit-identical weights (checked
below), and a resumed run restores weights, optimizer moments, scheduler, RNG states and data order exactly from
files written without loss (safetensors and ``torch.save`` keep float32 bit for bit). So the resumed run must match
the uninterrupted one exactly; we allow 1e-6 relative on losses and 1e-6 absolute on weights (of order 0.1 to 1) only
so that a different BLAS build that reorders a sum still passes, which is four orders of magnitude below the change
one optimizer step makes to this model's loss (~1e-2).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SENTENCES

from biomamba_hf.reliability import COMPLETE_MARKER, last_complete_checkpoint
from biomamba_hf.script_utils import LOCK_FILE

ROOT = Path(__file__).resolve().parents[1]
RUN_CLM = ROOT / "examples" / "run_clm.py"
SERVER = Path(__file__).with_name("interrupted_run.py")
MAX_STEPS = 8


class Runner:
    """Client of the fork server: ``run(argv, kill=...)`` returns the child's return code (``-9``: killed)."""

    def __init__(self, workdir: Path):
        env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,
            env={**os.environ, **env},
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}
        self.workdir = workdir
        self.count = 0

    def run(self, script: Path, argv: list[str], kill: str | None = None) -> tuple[int, str]:
        self.count += 1
        log = self.workdir / f"run{self.count}.log"
        env = {"BIOMAMBA_TEST_KILL": kill} if kill else {}
        request = {"script": str(script), "argv": [str(a) for a in argv], "env": env, "log": str(log)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        return reply["returncode"], log.read_text()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("runs"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    # ~17 blocks of 32 tokens: 5 steps per epoch at batch 4, so 8 steps cross an epoch boundary.
    for name, sentences in (("train", SENTENCES * 3), ("dev", SENTENCES[::-1])):
        path = folder / f"{name}.jsonl.gz"
        with gzip.open(path, "wt") as f:
            for i, text in enumerate(sentences):
                f.write(json.dumps({"id": f"{name}-{i}", "text": text}) + "\n")
        paths[name] = path
    return paths


def clm_args(corpus, clm_dir, output_dir, cache_dir) -> list[str]:
    return [
        "--model_name_or_path", clm_dir, "--train_file", corpus["train"], "--validation_file", corpus["dev"],
        "--do_train", "--do_eval", "--block_size", "32", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8", "--learning_rate", "5e-3", "--lr_scheduler_type", "cosine",
        "--warmup_steps", "2", "--max_steps", str(MAX_STEPS), "--save_strategy", "steps", "--save_steps", "2",
        "--logging_steps", "1", "--seed", "7", "--report_to", "none", "--dataloader_num_workers", "0",
        "--cache_dir", cache_dir, "--output_dir", output_dir,
    ]  # fmt: skip


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def step_losses(folder: Path) -> dict[int, float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def assert_same_weights_and_losses(resumed: Path, straight: Path, max_steps: int, exact: bool = False) -> dict:
    """Final weights (bit-equal, or within 1e-6) and every step's loss equal; returns the resumed run's losses."""
    import torch

    a, b = weights(resumed), weights(straight)
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    losses_a, losses_b = step_losses(resumed), step_losses(straight)
    assert sorted(losses_a) == list(range(1, max_steps + 1))
    assert losses_a == pytest.approx(losses_b, rel=1e-6, abs=0)
    return losses_a


def assert_same_run(resumed: Path, straight: Path, exact: bool = False):
    assert_same_weights_and_losses(resumed, straight, MAX_STEPS, exact)
    results_a = json.loads((resumed / "eval_results.json").read_text())
    results_b = json.loads((straight / "eval_results.json").read_text())
    assert results_a["eval_loss"] == pytest.approx(results_b["eval_loss"], rel=1e-6, abs=0)


def resumed_from(log: str) -> str | None:
    """The checkpoint run_clm.py said it resumes from (its own log line, not Trainer's)."""
    found = re.findall(r"run_clm - Resuming training from checkpoint (\S+)", log)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def straight(runner, corpus, clm_dir, tmp_path_factory):
    """The uninterrupted run, done twice: same seed, same machine, bit-identical (the basis of the tolerance)."""
    folder = tmp_path_factory.mktemp("straight")
    code, log = runner.run(RUN_CLM, clm_args(corpus, clm_dir, folder / "a", folder / "cache"))
    assert code == 0, log[-3000:]
    code, log = runner.run(RUN_CLM, clm_args(corpus, clm_dir, folder / "b", folder / "cache"))
    assert code == 0, log[-3000:]
    assert_same_run(folder / "b", folder / "a", exact=True)
    assert all((c / COMPLETE_MARKER).is_file() for c in (folder / "a").glob("checkpoint-*"))
    return folder / "a"


@pytest.mark.slow
def test_run_clm_resumes_after_kill_9_in_a_step_and_in_checkpoint_saves(runner, corpus, clm_dir, straight, tmp_path):
    from transformers.trainer_utils import get_last_checkpoint

    out = tmp_path / "interrupted"
    command = clm_args(corpus, clm_dir, out, tmp_path / "cache")

    # 1. Killed inside step 3 (gradients computed, update not applied): checkpoint-2 is the one to resume from.
    code, log = runner.run(RUN_CLM, command, kill="mid_step:3")
    assert code == -9, log[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")

    # 2. Same command: resumes from checkpoint-2 (the killed run's lock is stale: replaced); killed while writing
    #    checkpoint-4 (optimizer.pt cut in half).
    assert (out / LOCK_FILE).is_file()
    code, log = runner.run(RUN_CLM, command, kill="torn_save:4")
    assert code == -9, log[-3000:]
    assert re.search(rf"Replacing the stale lock \S+{LOCK_FILE} of process \d+ .*has ended", log)
    assert resumed_from(log) == str(out / "checkpoint-2")
    assert not (out / "checkpoint-4" / COMPLETE_MARKER).exists()
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-4")  # what transformers would resume from
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")

    # 3. Same command: skips the torn checkpoint-4, resumes from checkpoint-2, rewrites checkpoint-4 completely;
    #    killed after Trainer wrote checkpoint-6 but before it was marked complete.
    code, log = runner.run(RUN_CLM, command, kill="before_marker:6")
    assert code == -9, log[-3000:]
    assert resumed_from(log) == str(out / "checkpoint-2")
    assert re.search(r"Skipping incomplete checkpoint \S+checkpoint-4: it has no checkpoint_complete.json", log)
    assert re.search(r"Removing incomplete checkpoint \S+checkpoint-4", log)
    optimizer = (out / "checkpoint-4" / "optimizer.pt").stat().st_size
    assert optimizer == (straight / "checkpoint-4" / "optimizer.pt").stat().st_size  # rewritten whole
    assert (out / "checkpoint-6" / "trainer_state.json").is_file()
    assert last_complete_checkpoint(out) == str(out / "checkpoint-4")

    # 4. Same command, no kill: resumes from checkpoint-4 and ends exactly where the uninterrupted run ends.
    code, log = runner.run(RUN_CLM, command)
    assert code == 0, log[-3000:]
    assert resumed_from(log) == str(out / "checkpoint-4")
    assert_same_run(out, straight)
    assert json.loads((out / "all_results.json").read_text())["train_start_step"] == 4
    assert not (out / LOCK_FILE).exists()  # released at the end
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == [f"checkpoint-{s}" for s in (2, 4, 6, 8)]
    assert all((c / COMPLETE_MARKER).is_file() for c in checkpoints)
    for checkpoint in checkpoints:  # every checkpoint equals the uninterrupted run's one of the same step
        assert_checkpoint_equal(checkpoint, straight / checkpoint.name)


@pytest.mark.slow
def test_run_clm_killed_while_writing_the_final_model_reruns_to_the_same_result(
    runner, corpus, clm_dir, straight, tmp_path
):
    out = tmp_path / "final"
    command = clm_args(corpus, clm_dir, out, tmp_path / "cache")
    code, log = runner.run(RUN_CLM, command, kill="final_save")
    assert code == -9, log[-3000:]
    assert last_complete_checkpoint(out) == str(out / f"checkpoint-{MAX_STEPS}")
    code, log = runner.run(RUN_CLM, command)
    assert code == 0, log[-3000:]
    assert resumed_from(log) == str(out / f"checkpoint-{MAX_STEPS}")
    assert_same_run(out, straight)


def assert_checkpoint_equal(a: Path, b: Path):
    import torch

    wa, wb = weights(a), weights(b)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-6, msg=f"{a.name}: {name}")


# ---------------------------------------------------------------- NaN / inf losses


def _tiny_trainer(tmp_path, tokenizer, callbacks, trainer_class=None, **overrides):
    import torch
    from helpers import tiny_config
    from transformers import MambaForCausalLM, Trainer, TrainingArguments, default_data_collator

    trainer_class = trainer_class or Trainer

    torch.manual_seed(0)
    model = MambaForCausalLM(tiny_config(vocab_size=len(tokenizer)))
    ids = tokenizer(" ".join(SENTENCES))["input_ids"]
    blocks = [ids[i : i + 16] for i in range(0, len(ids) - 16, 16)]
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]
    options = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=6, save_strategy="steps",
        save_steps=2, logging_steps=1, learning_rate=1e-3, report_to="none", use_cpu=True, seed=0,
        dataloader_num_workers=0,
    )  # fmt: skip
    options.update(overrides)
    trainer = trainer_class(
        model=model,
        args=TrainingArguments(**options),
        train_dataset=dataset,
        data_collator=default_data_collator,
        callbacks=callbacks,
    )
    return trainer, model


class PoisonWeights:
    """Test-only: at the start of step ``step``, fill the embeddings with ``value`` (inf gives a NaN loss)."""

    def __new__(cls, step: int, value: float):
        from transformers import TrainerCallback

        class Poison(TrainerCallback):
            def on_step_begin(self, args, state, control, model=None, **kwargs):
                import torch

                if state.global_step + 1 == step:
                    with torch.no_grad():
                        model.get_input_embeddings().weight[:8].fill_(value)

        return Poison()


def test_a_non_finite_loss_stops_training_with_the_step_and_the_last_good_checkpoint(tmp_path, tokenizer):
    import torch

    from biomamba_hf.reliability import NonFiniteLossError, reliability_callbacks

    trainer, model = _tiny_trainer(
        tmp_path, tokenizer, [PoisonWeights(step=5, value=float("inf")), *reliability_callbacks()]
    )
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=rf"Training stopped at step 5: the training loss is nan .*the "
                       rf"optimizer did not apply this step\. The last complete checkpoint is {re.escape(str(out))}"
                       r"/checkpoint-4: resume from it"):  # fmt: skip
        trainer.train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-4")
    assert all(torch.isfinite(w).all() for w in weights(out / "checkpoint-4").values())
    # The update of step 5 was not applied: the parameters the poison did not touch are still finite.
    assert all(torch.isfinite(p).all() for n, p in model.named_parameters() if "embeddings" not in n)


def test_without_the_callback_trainer_trains_on_through_a_nan_loss(tmp_path, tokenizer):
    """Why the callback exists: Trainer's logging_nan_inf_filter hides the NaN in the logs and training goes on."""
    import math

    trainer, model = _tiny_trainer(tmp_path, tokenizer, [PoisonWeights(step=3, value=float("inf"))], max_steps=4)
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4 and all(math.isfinite(loss) for loss in logged)  # the logs show nothing wrong
    import torch

    assert not all(torch.isfinite(p).all() for p in model.parameters())  # but the weights are garbage


def test_a_non_finite_gradient_with_a_finite_loss_also_stops_training(tmp_path, tokenizer):
    from transformers import TrainerCallback

    from biomamba_hf.reliability import NonFiniteLossError, reliability_callbacks

    class PoisonGradient(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step + 1 == 3:
                next(model.parameters()).grad.view(-1)[0] = float("nan")

    callbacks = [PoisonGradient(), *reliability_callbacks()]
    trainer, _ = _tiny_trainer(tmp_path, tokenizer, callbacks)
    with pytest.raises(NonFiniteLossError, match=r"step 3: the gradients hold NaN or infinite values \(losses of "):
        trainer.train()
    assert last_complete_checkpoint(tmp_path / "out") == str(tmp_path / "out" / "checkpoint-2")


def _parameters_with_gradients(count: int):
    """A module of ``count`` parameters of mixed dtypes and shapes (a scalar and an empty one among them), each with
    a finite gradient."""
    import torch

    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    shapes = [(7, 5), (), (0,), (300,)]
    module = torch.nn.Module()
    for i in range(count):
        parameter = torch.nn.Parameter(torch.zeros(shapes[i % 4], dtype=dtypes[(i // 4) % 4]))
        parameter.grad = torch.randn(parameter.shape, dtype=torch.float32).to(parameter.dtype)
        module.register_parameter(f"p{i}", parameter)
    return module


def _pre_optimizer_step(callback, module, tmp_path, losses=()):
    from types import SimpleNamespace

    callback._losses = [loss.reshape(-1)[:1] for loss in losses]
    args = SimpleNamespace(fp16=False, output_dir=str(tmp_path))
    callback.on_pre_optimizer_step(args, SimpleNamespace(global_step=6), None, model=module)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_non_finite_gradient_element_of_every_dtype_is_caught_before_the_optimizer_step(tmp_path, value):
    """The one fused check per step still sees a single bad element in any gradient (mixed dtypes, scalars)."""
    import torch

    from biomamba_hf.reliability import NonFiniteLossCallback, NonFiniteLossError

    module = _parameters_with_gradients(16)
    callback = NonFiniteLossCallback()
    _pre_optimizer_step(callback, module, tmp_path, [torch.tensor(2.5)])  # all finite: no stop
    for parameter in module.parameters():
        if parameter.numel() == 0:
            continue
        saved = parameter.grad.clone()
        parameter.grad.view(-1)[-1] = value
        with pytest.raises(NonFiniteLossError, match=r"step 7: the gradients hold NaN or infinite values \(losses "):
            _pre_optimizer_step(callback, module, tmp_path, [torch.tensor(2.5)])
        parameter.grad = saved
    with pytest.raises(NonFiniteLossError, match=rf"step 7: the training loss is 2.5, {value} \(one value per"):
        _pre_optimizer_step(callback, module, tmp_path, [torch.tensor(2.5), torch.tensor(value)])
    # finite values beyond the float32 range (float64 gradients) and at the float16 limit are not flagged
    module.p8.grad.fill_(1e300)
    module.p12.grad.fill_(65504.0)
    _pre_optimizer_step(callback, module, tmp_path, [torch.tensor(2.5)])


def test_the_non_finite_check_costs_a_fixed_number_of_operations_and_one_host_sync_per_step(tmp_path):
    """Guards the per-step cost: it was two kernels per gradient (hundreds for Mamba2-130m); now it is a fixed
    handful of operations whatever the number of parameters, and a single read of the result (``.item()``)."""
    import collections

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from biomamba_hf.reliability import NonFiniteLossCallback

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for count in (16, 256):
        module = _parameters_with_gradients(count)
        with CountOps() as mode:
            _pre_optimizer_step(NonFiniteLossCallback(), module, tmp_path, [torch.tensor(1.0), torch.tensor(2.0)])
        counts[count] = mode.ops
    assert counts[16] == counts[256], counts
    assert counts[256]["aten._local_scalar_dense"] == 1  # .item(), bool(tensor), float(tensor): host syncs
    assert sum(counts[256].values()) <= 30, counts[256]  # 4 dtype groups: ~26, of which 7 build the test's losses


# ---------------------------------------------------------------- marked checkpoints changed later, full disks


def test_a_marked_checkpoint_whose_file_was_truncated_later_is_not_resumed(tmp_path):
    from biomamba_hf.reliability import checkpoint_problem, mark_checkpoint_complete

    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w" * 100)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        mark_checkpoint_complete(folder)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    os.truncate(tmp_path / "checkpoint-4" / "model.safetensors", 60)  # e.g. a copy or a restore cut short
    assert checkpoint_problem(tmp_path / "checkpoint-4") == "model.safetensors has 60 bytes, 100 were written"
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert checkpoint_problem(tmp_path / "checkpoint-2") == "trainer_state.json is missing"
    assert last_complete_checkpoint(tmp_path) is None


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 154112 vs 154004"),
    ],
)
def test_a_full_disk_while_saving_names_the_disk_and_the_checkpoint_to_resume_from(
    tmp_path, tokenizer, monkeypatch, failure
):
    from transformers import Trainer

    from biomamba_hf.reliability import DiskFullError, reliability_callbacks
    from biomamba_hf.trainer import BiomambaTrainer

    assert callable(getattr(Trainer, "_save_checkpoint", None))  # the private method BiomambaTrainer overrides
    original = Trainer._save_optimizer_and_scheduler

    def full_disk(self, output_dir):
        if self.state.global_step == 4:
            raise failure
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full_disk)
    trainer, _ = _tiny_trainer(tmp_path, tokenizer, reliability_callbacks(), trainer_class=BiomambaTrainer)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=rf"The disk is full: saving checkpoint-4 into {re.escape(str(out))} "
                       rf"failed \(.* free on the disk of .*\). Rerunning the same command resumes from "
                       rf"{re.escape(str(out))}/checkpoint-2, the last complete checkpoint"):  # fmt: skip
        trainer.train()
    with pytest.raises(DiskFullError, match=r"saving the model into .*elsewhere failed .*resumes from .*checkpoint-2"):
        with monkeypatch.context() as patch:
            patch.setattr(Trainer, "_save", lambda self, *a, **k: (_ for _ in ()).throw(failure))
            trainer.save_model(str(tmp_path / "elsewhere"))


# ---------------------------------------------------------------- preflight: unwritable output, full disk


def _args(output_dir, **overrides):
    from transformers import TrainingArguments

    options = dict(output_dir=str(output_dir), max_steps=100, save_strategy="steps", save_steps=10, use_cpu=True)
    options.update(overrides)
    return TrainingArguments(**options, report_to="none")


def test_preflight_refuses_an_output_dir_that_cannot_be_created(tmp_path):
    from biomamba_hf.reliability import preflight

    blocker = tmp_path / "results.txt"
    blocker.write_text("a file where a folder should go")
    with pytest.raises(ValueError, match=r"--output_dir .*results.txt/run cannot be created: .*results.txt is a file"):
        preflight(_args(blocker / "run"))
    with pytest.raises(ValueError, match=r"--output_dir .*results.txt is a file, not a folder"):
        preflight(_args(blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_preflight_refuses_an_output_dir_that_cannot_be_written(tmp_path, monkeypatch):
    import tempfile

    from biomamba_hf import reliability

    def read_only(*args, **kwargs):  # what a read-only mount answers (chmod cannot show it to root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ValueError, match=r"--output_dir .*out is not writable \(.*: Permission denied\)"):
        reliability.preflight(_args(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_preflight_counts_the_checkpoints_kept_and_refuses_a_too_small_disk(tmp_path, monkeypatch, tokenizer):
    import shutil

    from helpers import tiny_config
    from transformers import MambaForCausalLM

    from biomamba_hf.reliability import expected_output_bytes, preflight

    model = MambaForCausalLM(tiny_config(vocab_size=len(tokenizer)))
    n = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
    expected = expected_output_bytes(model, _args(tmp_path, save_total_limit=2))
    # weights (float32) + two Adam moments + 1 MB of state files; 3 checkpoints on disk while rotating; final model
    assert expected == {
        "checkpoint": 12 * n + (1 << 20),
        "checkpoints_kept": 3,
        "total": 3 * (12 * n + (1 << 20)) + 4 * n,
    }
    only_model = expected_output_bytes(model, _args(tmp_path, save_only_model=True))
    assert only_model == {"checkpoint": 4 * n, "checkpoints_kept": 10, "total": 11 * 4 * n}
    assert expected_output_bytes(model, _args(tmp_path, save_strategy="no"))["total"] == 4 * n

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=expected["total"]))
    with pytest.raises(ValueError, match=r"Not enough disk space for --output_dir .*out: .* free .* but the run will "
                       r"write about .*3 checkpoint\(s\) of .* kept at once and the final model.*--save_total_limit"):  # fmt: skip
        preflight(_args(tmp_path / "out", save_total_limit=2), model)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2 * expected["total"]))
    report = preflight(_args(tmp_path / "out", save_total_limit=2), model)
    assert report["required"] == expected["total"] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- run_qa.py killed and rerun
#
# The same fork server runs examples/run_qa.py on test_run_qa.py's tiny BioASQ files: 11 training windows, 3 steps
# per epoch at batch 4, so the 8 steps cross two epoch boundaries and checkpoint-8 lies inside an epoch. Tolerance:
# as for run_clm (two uninterrupted runs and every resumed run measured bit-identical here), 1e-6 on weights and step
# losses against a change of ~2e-3 in the weights over two steps. The BioASQ scores and the prediction and submission
# files are compared exactly: they only depend on the ranking of the candidates, whose neighbours differ by at least
# 0.2 % in probability in these fixtures (measured), far above what a 1e-6 change in the weights can move.

RUN_QA = ROOT / "examples" / "run_qa.py"
QA_MAX_STEPS = 8


def qa_args(bioasq_files, clm_dir, output_dir) -> list[str]:
    from test_run_qa import common_args

    return [
        "--model_name_or_path", clm_dir, "--train_golden_files", bioasq_files["train_golden"],
        "--train_file", bioasq_files["train_squad"], "--test_dirs", bioasq_files["test_dir"],
        "--do_train", "--do_eval",
        *common_args(output_dir, **{"--per_device_train_batch_size": 4, "--learning_rate": 5e-3,
                                    "--max_steps": QA_MAX_STEPS, "--logging_steps": 1, "--save_strategy": "steps",
                                    "--save_steps": 2, "--seed": 7}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bioasq_files(tmp_path_factory):
    """run_qa's tiny BioASQ fixtures (golden + SQuAD training files, a two-batch test set) from test_run_qa.py."""
    from test_run_qa import bioasq_files as build

    return build.__wrapped__(tmp_path_factory)


def qa_resumed_from(log: str) -> str | None:
    found = re.findall(r"run_qa - Resuming training from checkpoint (\S+)", log)
    return found[-1] if found else None


def assert_same_qa_run(resumed: Path, straight: Path, resumed_at: int = 0, exact: bool = False):
    losses_a = assert_same_weights_and_losses(resumed, straight, QA_MAX_STEPS, exact)
    results_a = json.loads((resumed / "all_results.json").read_text())
    results_b = json.loads((straight / "all_results.json").read_text())
    bioasq = [key for key in results_b if key.startswith("bioasq_4b_")]
    assert len(bioasq) >= 8
    for key in bioasq:  # rank-based: equal, not close (see the tolerance above)
        assert results_a[key] == results_b[key], key
    for key in ("epoch", "train_samples", "train_windows"):
        assert results_a[key] == results_b[key], key
    assert results_a["train_start_step"] == resumed_at  # the card labels train_loss with the steps it covers
    # train_loss is transformers' mean over the steps trained by *this* call (5.24: steps after the checkpoint it
    # resumed from), so it differs from the uninterrupted run's; it is exactly that mean of the logged step losses.
    this_call = [losses_a[step] for step in range(resumed_at + 1, QA_MAX_STEPS + 1)]
    expected = sum(this_call) / len(this_call) if this_call else 0.0
    assert results_a["train_loss"] == pytest.approx(expected, rel=1e-6, abs=0)
    for name in ("predictions_4b.json", "submission_4b.json"):
        assert (resumed / name).read_text() == (straight / name).read_text(), name
    nbest_a = json.loads((resumed / "nbest_predictions_4b.json").read_text())
    nbest_b = json.loads((straight / "nbest_predictions_4b.json").read_text())
    assert nbest_a.keys() == nbest_b.keys()
    for row_id, candidates in nbest_b.items():
        assert [(c["text"], c["start"]) for c in nbest_a[row_id]] == [(c["text"], c["start"]) for c in candidates]
        assert [c["probability"] for c in nbest_a[row_id]] == pytest.approx(
            [c["probability"] for c in candidates], rel=1e-5, abs=0
        )


@pytest.fixture(scope="module")
def qa_straight(runner, bioasq_files, clm_dir, tmp_path_factory):
    """The uninterrupted run_qa.py run, done twice: bit-identical (the basis of the tolerance)."""
    folder = tmp_path_factory.mktemp("qa_straight")
    for name in ("a", "b"):
        code, log = runner.run(RUN_QA, qa_args(bioasq_files, clm_dir, folder / name))
        assert code == 0, log[-3000:]
    assert_same_qa_run(folder / "b", folder / "a", exact=True)
    assert sorted(p.name for p in (folder / "a").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4",
                                                                           "checkpoint-6", "checkpoint-8"]  # fmt: skip
    assert all((c / COMPLETE_MARKER).is_file() for c in (folder / "a").glob("checkpoint-*"))
    return folder / "a"


@pytest.mark.slow
def test_run_qa_resumes_after_kill_9_in_a_step_and_in_a_checkpoint_save(
    runner, bioasq_files, clm_dir, qa_straight, tmp_path
):
    out = tmp_path / "interrupted"
    command = qa_args(bioasq_files, clm_dir, out)

    # 1. Killed inside step 3 (gradients computed, update not applied): checkpoint-2 is the one to resume from.
    code, log = runner.run(RUN_QA, command, kill="mid_step:3")
    assert code == -9, log[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")

    # 2. Same command: resumes from checkpoint-2; killed while writing checkpoint-4 (optimizer.pt cut in half).
    code, log = runner.run(RUN_QA, command, kill="torn_save:4")
    assert code == -9, log[-3000:]
    assert qa_resumed_from(log) == str(out / "checkpoint-2")
    assert not (out / "checkpoint-4" / COMPLETE_MARKER).exists()
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")

    # 3. Same command, no kill: skips the torn checkpoint-4, resumes from checkpoint-2, ends where the uninterrupted
    #    run ends: same weights, step losses, BioASQ scores and prediction files.
    code, log = runner.run(RUN_QA, command)
    assert code == 0, log[-3000:]
    assert qa_resumed_from(log) == str(out / "checkpoint-2")
    assert re.search(r"Skipping incomplete checkpoint \S+checkpoint-4: it has no checkpoint_complete.json", log)
    assert_same_qa_run(out, qa_straight, resumed_at=2)
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == [f"checkpoint-{s}" for s in (2, 4, 6, 8)]
    assert all((c / COMPLETE_MARKER).is_file() for c in checkpoints)
    for checkpoint in checkpoints:
        assert_checkpoint_equal(checkpoint, qa_straight / checkpoint.name)


@pytest.mark.slow
def test_run_qa_killed_while_writing_the_final_model_reruns_to_the_same_result(
    runner, bioasq_files, clm_dir, qa_straight, tmp_path
):
    """The rerun resumes from checkpoint-8 = max_steps and trains nothing more (plain transformers 5.24 Trainer
    trained a 9th step here: ``BiomambaTrainer`` stops it)."""
    out = tmp_path / "final"
    command = qa_args(bioasq_files, clm_dir, out)
    code, log = runner.run(RUN_QA, command, kill="final_save")
    assert code == -9, log[-3000:]
    assert last_complete_checkpoint(out) == str(out / f"checkpoint-{QA_MAX_STEPS}")
    code, log = runner.run(RUN_QA, command)
    assert code == 0, log[-3000:]
    assert qa_resumed_from(log) == str(out / f"checkpoint-{QA_MAX_STEPS}")
    assert_same_qa_run(out, qa_straight, resumed_at=QA_MAX_STEPS)
