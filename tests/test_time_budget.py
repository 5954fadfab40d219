"""--max_train_seconds (biomamba_hf.trainer.TimeBudgetCallback): a wall-time budget stops training, ends the run as a
finished one (final checkpoint) and is recorded in train()'s metrics; bad values are refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_config

from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments, TimeBudgetCallback

VOCAB = 53


def _rows(count=16, length=12):
    generator = torch.Generator().manual_seed(0)
    return [
        {"input_ids": (ids := torch.randint(2, VOCAB, (length,), generator=generator)), "labels": ids.clone()}
        for _ in range(count)
    ]


def _args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        do_train=True,
        per_device_train_batch_size=2,
        max_steps=50,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="steps",
        save_steps=1000,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        logging_steps=1000,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return CLMTrainingArguments(**kwargs)


class _StepClock:
    """A clock that advances 10 s each time the callback reads it (once per optimizer step)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 10.0
        return self.now


def test_time_budget_stops_training_and_is_recorded(tmp_path):
    from transformers import MambaForCausalLM

    torch.manual_seed(0)
    args = _args(tmp_path, max_train_seconds=25.0)
    trainer = CausalLMTrainer(model=MambaForCausalLM(tiny_config(vocab_size=VOCAB)), args=args, train_dataset=_rows())
    budget = trainer._time_budget
    assert isinstance(budget, TimeBudgetCallback) and budget in trainer.callback_handler.callbacks
    budget.clock = _StepClock()
    metrics = trainer.train().metrics
    # Clock starts at the end of step 1; steps 2, 3, 4 end 10, 20, 30 s later: the budget of 25 s is spent at step 4.
    assert trainer.state.global_step == 4
    assert metrics["train_stopped_by_time_budget"] == 1
    assert metrics["train_steps"] == 4
    assert metrics["train_time_budget_seconds"] == 25.0
    assert metrics["train_time_budget_elapsed_seconds"] == 30.0
    # Ended as a finished run: the final checkpoint of a step-based save strategy is written (save_steps 1000).
    checkpoint = tmp_path / "out" / "checkpoint-4"
    assert (checkpoint / "trainer_state.json").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["max_steps"] == 50  # schedule still for 50


def test_budget_not_spent_records_a_normal_end(tmp_path):
    from transformers import MambaForCausalLM

    args = _args(tmp_path, max_steps=3, max_train_seconds=1e6, save_strategy="no")
    trainer = CausalLMTrainer(model=MambaForCausalLM(tiny_config(vocab_size=VOCAB)), args=args, train_dataset=_rows())
    metrics = trainer.train().metrics
    assert trainer.state.global_step == 3
    assert metrics["train_stopped_by_time_budget"] == 0 and metrics["train_steps"] == 3


def test_no_budget_adds_no_callback(tmp_path):
    from transformers import MambaForCausalLM

    trainer = CausalLMTrainer(model=MambaForCausalLM(tiny_config(vocab_size=VOCAB)), args=_args(tmp_path))
    assert trainer._time_budget is None
    assert not any(isinstance(c, TimeBudgetCallback) for c in trainer.callback_handler.callbacks)


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), float("inf")])
def test_bad_budget_is_refused_when_parsed(tmp_path, value):
    with pytest.raises(ValueError, match=r"nothing was done.*--max_train_seconds .*positive, finite number"):
        _args(tmp_path, max_train_seconds=value)
    assert not (tmp_path / "out").exists()


def test_budget_needs_max_steps(tmp_path):
    with pytest.raises(ValueError, match=r"--max_train_seconds 60.0 needs a positive --max_steps"):
        _args(tmp_path, max_steps=-1, num_train_epochs=1, max_train_seconds=60.0)


def test_run_clm_refuses_a_negative_budget_before_any_work(tmp_path):
    from helpers import example_script

    out = tmp_path / "run"
    text = tmp_path / "train.txt"
    text.write_text("Aspirin inhibits cyclooxygenase.\n")
    with example_script("run_clm") as run_clm, pytest.raises(ValueError, match=r"--max_train_seconds -5.0"):
        run_clm.parse_args(
            [
                "--model_type",
                "mamba",
                "--train_tokenizer_vocab_size",
                "300",
                "--train_file",
                str(text),
                "--do_train",
                "--max_steps",
                "5",
                "--max_train_seconds",
                "-5",
                "--output_dir",
                str(out),
            ]
        )
    assert not out.exists()


def test_throughput_callback_reports_peak_gpu_memory_only_on_a_gpu(monkeypatch):
    import types

    import torch

    from biomamba_hf.trainer import ThroughputCallback

    state = types.SimpleNamespace(global_step=0)
    callback = ThroughputCallback(tokens_per_step=100)
    callback.on_train_begin(None, state, None)
    state.global_step = 3
    callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    assert "train_peak_memory_gib" not in callback.metrics() and callback.metrics()["train_tokens"] == 300

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30 + 2**29)
    callback.on_train_end(None, state, None)
    assert callback.metrics()["train_peak_memory_gib"] == 3.5
