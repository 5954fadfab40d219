"""Reruns and concurrent runs (biomamba_hf.script_utils): a rerun is compared with the arguments recorded in its
output folder before anything is read or written; one run at a time holds an output folder's lock; training arguments
that cannot train are refused when parsed, in every script, leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SENTENCES, example_script

from biomamba_hf import script_utils
from biomamba_hf.script_utils import (
    LOCK_FILE,
    OutputDirInUseError,
    acquire_output_dir_lock,
    release_output_dir_lock,
    releases_output_dir_locks,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("rerun_corpus") / "train.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(SENTENCES * 3)))
    return path


def clm_command(corpus, clm_dir, out, **overrides) -> list[str]:
    args = {
        "--model_name_or_path": clm_dir, "--train_file": corpus, "--block_size": 32,
        "--per_device_train_batch_size": 4, "--learning_rate": 5e-3, "--max_steps": 2, "--save_strategy": "steps",
        "--save_steps": 2, "--logging_steps": 1, "--seed": 0, "--report_to": "none", "--output_dir": out,
    }  # fmt: skip
    args.update(overrides)
    return [str(x) for key, value in args.items() if value is not None for x in (key, value)] + ["--do_train"]


@pytest.fixture(scope="module")
def finished(run_clm, corpus, clm_dir, tmp_path_factory):
    """A finished run_clm output folder (checkpoint-2 = max_steps, run_args.json, model card)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    run_clm.main(clm_command(corpus, clm_dir, out))
    assert (out / "checkpoint-2").is_dir() and (out / "run_args.json").is_file()
    assert not (out / LOCK_FILE).exists()  # released at the end of main
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def no_data_read(monkeypatch):
    import biomamba_hf.data.clm

    def refuse(*args, **kwargs):
        raise AssertionError("the data were read before the arguments were compared")

    monkeypatch.setattr(biomamba_hf.data.clm, "load_text_datasets", refuse)


@pytest.mark.parametrize(
    ("overrides", "listed"),
    [
        ({"--learning_rate": 1e-3}, r"--learning_rate 0.005 -> 0.001"),
        ({"--max_steps": 4}, r"--max_steps 2 -> 4"),
        ({"--block_size": 16, "--seed": 1}, r"--block_size 32 -> 16; --seed 0 -> 1"),
    ],
)
def test_a_rerun_with_changed_arguments_is_refused_before_anything_is_read_or_written(
    run_clm, finished, corpus, clm_dir, no_data_read, overrides, listed, tmp_path
):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = snapshot(out)
    with pytest.raises(ValueError, match=rf"holds a run recorded with other arguments \(run_args.json\), and this "
                       rf"command would resume it: {listed}\. .*--allow_changed_arguments"):  # fmt: skip
        run_clm.main(clm_command(corpus, clm_dir, out, **overrides))
    assert snapshot(out) == before  # run_args.json, card, checkpoints untouched; the lock is gone again


def test_allow_changed_arguments_resumes_and_records_the_new_values(run_clm, finished, corpus, clm_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    run_clm.main(clm_command(corpus, clm_dir, out, **{"--max_steps": 4}) + ["--allow_changed_arguments"])
    assert json.loads((out / "run_args.json").read_text())["max_steps"] == 4
    results = json.loads((out / "all_results.json").read_text())
    assert (
        results["train_start_step"] == 2 and json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    )


def test_a_same_arguments_rerun_keeps_the_record_and_ignores_what_may_differ(
    run_clm, finished, corpus, clm_dir, tmp_path
):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    recorded = (out / "run_args.json").read_bytes()
    # Arguments that may differ between runs (RERUN_IGNORED_ARGUMENTS): logging, workers, tqdm, report_to.
    ignored = {"--logging_steps": 2, "--dataloader_num_workers": 0, "--report_to": "none", "--disable_tqdm": "True"}
    run_clm.main(clm_command(corpus, clm_dir, out, **ignored))
    assert (out / "run_args.json").read_bytes() == recorded  # not rewritten with settings that never ran
    assert {
        "logging_steps",
        "dataloader_num_workers",
        "disable_tqdm",
        "report_to",
    } <= script_utils.RERUN_IGNORED_ARGUMENTS


def test_overwrite_output_dir_starts_over_and_records_the_new_arguments(run_clm, finished, corpus, clm_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    run_clm.main(clm_command(corpus, clm_dir, out, **{"--learning_rate": 1e-3}) + ["--overwrite_output_dir"])
    assert json.loads((out / "run_args.json").read_text())["learning_rate"] == 1e-3
    assert json.loads((out / "all_results.json").read_text())["train_start_step"] == 0


# ---------------------------------------------------------------- the lock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    record = {"pid": pid, "host": host or socket.gethostname(), "time": 0, "command": "run_clm.py --output_dir x"}
    path.write_text(json.dumps(record))
    return path


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    out = tmp_path / "new" / "out"
    path = acquire_output_dir_lock(out)
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(OutputDirInUseError, match=r"already locked by another run in this process"):
        acquire_output_dir_lock(out)
    release_output_dir_lock(out)
    assert not (tmp_path / "new").exists()  # the folders the lock created, empty, go with it


@pytest.mark.parametrize("host", [None, "another-machine"])
def test_a_live_lock_fails_fast_naming_the_holder(run_clm, corpus, clm_dir, no_data_read, host, tmp_path):
    out = tmp_path / "out"
    lock = _write_lock(out, os.getppid(), host)  # a live process (this test's parent)
    where = host or socket.gethostname()
    with pytest.raises(OutputDirInUseError, match=rf"is in use by another run: process {os.getppid()} on host "
                       rf"{where} \(started .*: run_clm.py --output_dir x\).*delete .*{LOCK_FILE}"):  # fmt: skip
        run_clm.main(clm_command(corpus, clm_dir, out))
    assert sorted(os.listdir(out)) == [LOCK_FILE] and json.loads(lock.read_text())["pid"] == os.getppid()


def test_a_stale_lock_of_a_dead_process_is_replaced_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    dead = _dead_pid()
    _write_lock(out, dead)
    with caplog.at_level("WARNING", logger="biomamba_hf.script_utils"):
        path = acquire_output_dir_lock(out)
    assert f"Replacing the stale lock {path} of process {dead}" in caplog.text
    assert f"process {dead} on this host has ended" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    release_output_dir_lock(out)
    assert not path.exists() and out.is_dir()  # a folder the lock did not create stays


def test_the_lock_is_released_when_main_raises(tmp_path):
    out = tmp_path / "out"

    @releases_output_dir_locks
    def main():
        acquire_output_dir_lock(out)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        main()
    assert not (out / LOCK_FILE).exists()
    acquire_output_dir_lock(out)  # free again
    release_output_dir_lock(out)


def test_only_the_main_process_takes_the_lock(tmp_path, monkeypatch):
    from biomamba_hf.trainer import CLMTrainingArguments

    args = CLMTrainingArguments(output_dir=str(tmp_path / "out"), do_train=True, report_to="none")
    monkeypatch.setattr(CLMTrainingArguments, "process_index", property(lambda self: 1))
    assert script_utils.start_run(args).checkpoint is None
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(CLMTrainingArguments, "process_index", property(lambda self: 0))
    script_utils.start_run(args)
    assert (tmp_path / "out" / LOCK_FILE).is_file()
    release_output_dir_lock(tmp_path / "out")


def test_start_run_records_the_arguments_it_compared(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from biomamba_hf.trainer import CLMTrainingArguments

    @dataclass
    class Model:
        hidden_size: int = 8

    @dataclass
    class Data:
        block_size: int = 32
        hidden_size: int = 16  # a later dataclass wins, as in the comparison

    out = tmp_path / "out"
    args = CLMTrainingArguments(output_dir=str(out), do_train=True, report_to="none")
    run = script_utils.start_run(args, Model(), Data())
    assert not (out / "run_args.json").exists()  # start_run writes nothing but its lock
    recorded = json.loads(run.save_arguments().read_text())
    assert recorded["hidden_size"] == 16 and recorded["block_size"] == 32 and recorded["output_dir"] == str(out)
    assert script_utils.changed_arguments(recorded, script_utils.run_arguments_dict(*run.arguments)) == {}
    release_output_dir_lock(out)

    rerun = script_utils.start_run(args, Model(), Data())  # nothing to resume: a run that starts over records again
    assert rerun.record_arguments and rerun.save_arguments() is not None
    release_output_dir_lock(out)
    rerun.record_arguments = False  # the record already says what runs (a resume with the same arguments)
    assert rerun.save_arguments() is None
    monkeypatch.setattr(CLMTrainingArguments, "should_save", property(lambda self: False))
    assert script_utils.start_run(args, Model(), Data()).save_arguments() is None  # not the saving process
    release_output_dir_lock(out)
    evaluation = CLMTrainingArguments(output_dir=str(tmp_path / "eval"), do_eval=True, report_to="none")
    assert script_utils.start_run(evaluation).save_arguments() is None  # no training, no record
    assert not (tmp_path / "eval" / "run_args.json").exists()
    release_output_dir_lock(tmp_path / "eval")


# ---------------------------------------------------------------- training arguments refused when parsed

BAD_TRAINING_ARGUMENTS = [
    (["--learning_rate", "-0.001"], r"--learning_rate -0.001: the learning rate must be >= 0"),
    (["--per_device_train_batch_size", "0"], r"--per_device_train_batch_size 0: use a batch size of at least 1"),
    (["--max_steps", "0"], r"--max_steps 0: pass a positive number of optimizer steps, or -1"),
    (["--max_steps", "-5", "--num_train_epochs", "0"], r"--max_steps -5: pass a positive number"),
    (
        ["--max_steps", "-1", "--num_train_epochs", "0"],
        r"--num_train_epochs 0.0: with --max_steps -1 there is nothing",
    ),
    (["--gradient_accumulation_steps", "0"], r"--gradient_accumulation_steps 0: use 1 or more"),
    (["--per_device_eval_batch_size", "0"], r"--per_device_eval_batch_size 0: use a batch size of at least 1"),
]


def _script_command(script: str, clm_dir: Path, out: Path) -> list[str]:
    model = ["--model_name_or_path", str(clm_dir)]
    if script == "run_clm":
        train = out.parent / "train.jsonl"  # an existing file: the error is the training argument's
        train.write_text('{"text": "Aspirin inhibits cyclooxygenase."}\n')
        return [*model, "--train_file", str(train), "--do_train", "--output_dir", str(out)]
    if script == "run_qa":
        return [*model, "--train_file", "train.json", "--do_train", "--output_dir", str(out)]
    return [*model, "--do_train", "--output_dir", str(out)]


@pytest.mark.parametrize("script", ["run_clm", "run_qa", "run_pubmedqa"])
@pytest.mark.parametrize(("bad", "message"), BAD_TRAINING_ARGUMENTS)
def test_training_arguments_that_cannot_train_are_refused_before_any_work(script, bad, message, clm_dir, tmp_path):
    out = tmp_path / "out"
    with example_script(script) as module:
        with pytest.raises(ValueError, match=rf"Invalid training arguments \(nothing was done\): .*{message}"):
            module.main([*_script_command(script, clm_dir, out), *bad])
    assert not out.exists()  # no run_args.json, initial_results.json or all_results.json
