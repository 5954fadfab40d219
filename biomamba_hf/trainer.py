"""The package's training arguments, ``Trainer`` subclasses and callbacks (as transformers' ``trainer_qa.py``)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from .data.clm import IGNORE_INDEX
from .script_utils import check_training_arguments, launched_processes

if TYPE_CHECKING:
    import torch

__all__ = [
    "BiomambaTrainer",
    "BiomambaTrainingArguments",
    "CLMTrainingArguments",
    "CausalLMTrainer",
    "ThroughputCallback",
    "TimeBudgetCallback",
    "check_loss_chunking",
    "check_time_budget",
    "padding_collator",
    "perplexity",
    "token_nll_sums",
]


@dataclass
class BiomambaTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with what every training script of the package shares: ``--overwrite_output_dir`` (gone
    from transformers 5), ``--eval_before_train``, ``--compile_norms``, ``--max_train_seconds``; ``--hub_token`` is
    refused (``Trainer`` pickles its arguments into ``training_args.bin``); CPU-only multi-process launches really
    distribute."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": (
                "Write into a non-empty output_dir. Without it a non-empty output_dir is an error, unless it holds "
                "a checkpoint, which training then resumes from."
            )
        },
    )
    eval_before_train: bool = field(
        default=False,
        metadata={"help": "Also evaluate before training; results are saved with the prefix `initial`."},
    )
    allow_changed_arguments: bool = field(
        default=False,
        metadata={
            "help": (
                "Resume the run recorded in output_dir although arguments that shape training (learning rate, "
                "max_steps, model, data, ...) differ from its run_args.json; without it such a rerun is refused with "
                "the list of differences (biomamba_hf.script_utils.RERUN_IGNORED_ARGUMENTS are never compared)."
            )
        },
    )
    compile_norms: bool = field(
        default=False,
        metadata={
            "help": (
                "torch.compile the RMS norms of a Mamba model (biomamba_hf.speed.compile_non_scan_parts): the parts "
                "the CUDA kernels leave unfused. Measured in BENCHMARKS.md, table 1."
            )
        },
    )

    max_train_seconds: float | None = field(
        default=None,
        metadata={
            "help": (
                "Stop training once this many seconds of wall time have passed since the end of the first optimizer "
                "step (start-up such as CUDA initialisation and torch.compile is not counted), then save and evaluate "
                "as at the end of a run; train_stopped_by_time_budget and train_steps are recorded in the metrics. "
                "A positive --max_steps is required with it: the learning-rate schedule is planned for those steps, so "
                "pick max_steps near budget x steps/s for the schedule to end near the budget "
                "(benchmarks/bench_equal_compute.py measures steps/s per model for that). Counted per train() call: "
                "a resumed run gets the whole budget again."
            )
        },
    )

    def __post_init__(self):
        if self.hub_token:
            raise ValueError(
                "--hub_token would be saved in training_args.bin (Trainer pickles its arguments) and uploaded by "
                "--push_to_hub. Remove --hub_token and give the token with `hf auth login` or the HF_TOKEN variable."
            )
        if not self.use_cpu and launched_processes() > 1:
            import torch

            if not torch.cuda.is_available():
                # Without use_cpu, transformers 5 sets up a non-distributed state on a machine with no GPU even when
                # launched as several processes: each rank would silently train alone on all the data.
                self.use_cpu = True
        check_training_arguments(self)  # before transformers derives anything from them
        check_time_budget(self)
        super().__post_init__()


@dataclass
class CLMTrainingArguments(BiomambaTrainingArguments):
    """The package's training arguments plus what continued pretraining needs: ``--tokens_per_step`` and
    ``--loss_chunk_size``."""

    tokens_per_step: int | None = field(
        default=None,
        metadata={
            "help": (
                "Tokens per optimizer step (e.g. 524288 = 0.5M in the BioMamba recipe). When set, "
                "gradient_accumulation_steps is derived as tokens_per_step / (block_size x "
                "per_device_train_batch_size x world size), so the step size holds on any number of GPUs."
            )
        },
    )
    loss_chunk_size: int = field(
        default=0,
        metadata={
            "help": (
                "Compute the training loss with biomamba_hf.speed's chunked linear cross-entropy, this many tokens "
                "per chunk, so the (tokens x vocab) fp32 logits are never materialised; 0 = transformers' loss."
            )
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.tokens_per_step is not None and self.tokens_per_step <= 0:
            raise ValueError(f"--tokens_per_step must be a positive number of tokens, got {self.tokens_per_step}")


def check_time_budget(args) -> None:
    """Refuse a ``--max_train_seconds`` that is not a positive number, or one without ``--max_steps`` (the learning-rate
    schedule is planned for max_steps: without it the budget would cut a schedule planned for some epochs)."""
    seconds = getattr(args, "max_train_seconds", None)
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 or math.isinf(seconds):
        raise ValueError(
            f"Invalid training arguments (nothing was done): --max_train_seconds {seconds!r}: pass a positive, finite "
            "number of seconds (e.g. 1800), or leave it unset for no time budget."
        )
    if args.do_train and args.max_steps <= 0:
        raise ValueError(
            f"Invalid training arguments (nothing was done): --max_train_seconds {seconds!r} needs a positive "
            "--max_steps: the learning-rate schedule is planned for max_steps, so pick it near the budget x the "
            "measured steps/s (benchmarks/bench_equal_compute.py does this per model)."
        )


def check_loss_chunking(training_args) -> None:
    """Refuse ``--loss_chunk_size`` where it cannot run: several GPUs in one process (``torch.nn.DataParallel``)."""
    if getattr(training_args, "loss_chunk_size", 0) and training_args.n_gpu > 1:
        raise ValueError(
            f"--loss_chunk_size with {training_args.n_gpu} GPUs in one process (torch.nn.DataParallel) is not "
            "supported: launch one process per GPU (`accelerate launch --multi_gpu` or `torchrun`), or restrict the "
            "run to one GPU with CUDA_VISIBLE_DEVICES."
        )


def token_nll_sums(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per sequence: the summed next-token cross-entropy and the number of predictions counted.

    Position ``t`` of ``logits`` predicts ``labels[t + 1]``; targets equal to ``ignore_index`` are not counted.
    Returns a float tensor of shape ``(batch, 2)``: ``[:, 0]`` the summed negative log-likelihood (nats),
    ``[:, 1]`` the count.
    """
    import torch

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    mask = shift_labels.ne(ignore_index)
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(shift_labels.shape)
    nll = nll.masked_fill(~mask, 0.0)
    return torch.stack([nll.sum(dim=1), mask.sum(dim=1).float()], dim=1)


def perplexity(loss: float) -> float:
    """``exp(loss)``, ``inf`` when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def _preprocess_logits_for_metrics(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return token_nll_sums(logits, labels)


def _token_level_metrics(eval_prediction) -> dict[str, float]:
    import numpy as np

    sums = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(-1, 2)
    total_nll, count = sums[:, 0].sum(), sums[:, 1].sum()
    if count == 0:
        raise ValueError("The evaluation set has no next-token prediction to score (every label is -100).")
    return {"token_loss": float(total_nll / count), "num_predictions": int(count)}


class BiomambaTrainer(Trainer):
    """The ``Trainer`` of the package's scripts, for :class:`BiomambaTrainingArguments`.

    * It trains nothing more when it resumes from a checkpoint that already reached ``max_steps``: transformers 5.24
      runs one more optimizer step in that case (a run killed while saving its final model, then rerun), so the
      rerun would not reproduce the uninterrupted run.
    * With ``--compile_norms`` it compiles the model's RMS norms (:func:`biomamba_hf.speed.compile_non_scan_parts`;
      a clear error for a model that is not a Mamba model).
    * ``train()``'s metrics include ``train_start_step``, the step training resumed from (0 for a fresh run): the
      ``train_loss`` of a resumed call covers the steps after it only, and the model card says so.
    * A checkpoint or model save that runs out of disk space stops with :class:`biomamba_hf.reliability.DiskFullError`
      naming the folder, the free space and the complete checkpoint a rerun resumes from.
    * With ``--max_train_seconds`` a :class:`TimeBudgetCallback` stops training once the budget is spent;
      ``train()``'s metrics then include ``train_stopped_by_time_budget`` (1 or 0), ``train_steps`` (optimizer steps of this
      call) and ``train_time_budget_seconds``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._start_step = _StartStep()
        self.add_callback(self._start_step)
        self._time_budget = None
        seconds = getattr(self.args, "max_train_seconds", None)
        if seconds is not None:
            self._time_budget = TimeBudgetCallback(seconds)
            self.add_callback(self._time_budget)
        if getattr(self.args, "compile_norms", False):
            from .speed import compile_non_scan_parts

            compile_non_scan_parts(self.model)
            logging.getLogger(__name__).info("torch.compile: the RMS norms (--compile_norms)")

    #: ``save_model_card`` options, set by :func:`biomamba_hf.hub.attach_model_card`: the card is then biomamba's.
    model_card_kwargs: dict | None = None

    def create_model_card(self, *args, **kwargs) -> None:
        """Write the biomamba card (``biomamba_hf.hub.save_model_card``) once ``attach_model_card`` asked for it, so
        that ``push_to_hub()`` uploads it; else transformers' own card."""
        if self.model_card_kwargs is None:
            return super().create_model_card(*args, **kwargs)
        if not self.is_world_process_zero():
            return None
        from .hub import save_model_card

        options = dict(self.model_card_kwargs)
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        if repo_id and "repo_id" not in options:
            options["repo_id"] = repo_id
        save_model_card(self.args.output_dir, **options)
        return None

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        output.metrics["train_start_step"] = self._start_step.step
        if self._time_budget is not None:
            output.metrics.update(self._time_budget.metrics(self.state.global_step - self._start_step.step))
        return output

    # Overrides the private Trainer._save_checkpoint (tests/test_interrupted_training.py checks it): a full disk is named.
    def _save_checkpoint(self, model, trial):
        from .reliability import disk_full_errors

        with disk_full_errors(self.args.output_dir, f"checkpoint-{self.state.global_step}"):
            return super()._save_checkpoint(model, trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        from .reliability import disk_full_errors

        with disk_full_errors(output_dir or self.args.output_dir, "the model", root=self.args.output_dir):
            return super().save_model(output_dir, _internal_call)

    # Overrides the private Trainer._run_epoch (checked on transformers 5.17 and 5.24; tests/test_patches.py checks
    # that it still exists): needed because a resume at max_steps would otherwise run one more optimizer step.
    def _run_epoch(self, *args, **kwargs):
        if self.state.max_steps > 0 and self.state.global_step >= self.state.max_steps:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


class _StartStep(TrainerCallback):
    """Records the step a ``train()`` call starts from (``state.global_step`` once a checkpoint is loaded)."""

    step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


class TimeBudgetCallback(TrainerCallback):
    """Stops training once ``max_train_seconds`` of wall time have passed since the end of the first optimizer step.

    The clock starts when the first optimizer step of a ``train()`` call ends, so one-time start-up (CUDA context,
    ``torch.compile``, kernel autotuning, the first batch) does not eat into one model's budget more than another's;
    it includes everything after, in-training evaluation and checkpoints too. At the first step end past the budget
    it sets ``should_training_stop`` plus ``should_save`` / ``should_evaluate`` / ``should_log`` as ``Trainer``'s
    flow does at ``max_steps``, so the run ends as a finished one (final checkpoint and evaluation per the
    strategies, model saved by the script). The learning-rate schedule is still planned for ``max_steps``.
    """

    def __init__(self, max_train_seconds: float, clock=time.perf_counter):
        if not max_train_seconds > 0:  # also refuses NaN
            raise ValueError(f"--max_train_seconds must be a positive number of seconds, got {max_train_seconds!r}")
        self.max_train_seconds = float(max_train_seconds)
        self.clock = clock
        self.clock_start = None
        self.stopped = False
        self.stop_step = None
        self.elapsed = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock_start = None
        self.stopped = False
        self.stop_step = None
        self.elapsed = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        if self.clock_start is None:
            self.clock_start = now
            return control
        self.elapsed = now - self.clock_start
        if self.elapsed >= self.max_train_seconds and not control.should_training_stop:
            from transformers.trainer_utils import IntervalStrategy, SaveStrategy

            self.stopped = True
            self.stop_step = state.global_step
            control.should_training_stop = True
            # As DefaultFlowCallback at max_steps; epoch strategies are served by the epoch end that follows the stop.
            control.should_log = control.should_log or args.logging_strategy == IntervalStrategy.STEPS
            if args.eval_strategy == IntervalStrategy.STEPS and args.eval_delay <= state.global_step:
                control.should_evaluate = True
            if args.save_strategy == SaveStrategy.STEPS:
                control.should_save = True
            logging.getLogger(__name__).info(
                "Time budget of %.0f s spent after %.1f s: training stops at step %d of max_steps %d",
                self.max_train_seconds,
                self.elapsed,
                state.global_step,
                state.max_steps,
            )
        return control

    def metrics(self, steps: int) -> dict:
        """``train_stopped_by_time_budget`` (1 or 0), ``train_steps`` and the budget, for ``train()``'s metrics."""
        return {
            "train_stopped_by_time_budget": int(self.stopped),  # 1 or 0: metrics files hold numbers only
            "train_steps": steps,
            "train_time_budget_seconds": self.max_train_seconds,
            "train_time_budget_elapsed_seconds": round(self.elapsed, 3),
        }


class CausalLMTrainer(BiomambaTrainer):
    """``Trainer`` of causal LMs: exact token-level evaluation loss, and the chunked training loss on request.

    The stock evaluation loop averages per-batch losses, which weights a short or padded last batch like a full one.
    Here each batch contributes its summed cross-entropy and its number of counted predictions (gathered across
    processes without duplicates), and ``eval_loss`` is their ratio. ``eval_num_predictions`` gives the count.
    Logits are reduced to two numbers per sequence before they leave the device, so evaluation memory stays small.

    With ``--loss_chunk_size`` (:class:`CLMTrainingArguments`) the training loss goes through
    :func:`biomamba_hf.speed.causal_lm_loss`, which never builds the ``(tokens x vocab)`` logits; evaluation keeps
    the model's own forward and logits.
    """

    #: ``implementation`` of :func:`biomamba_hf.speed.chunked_linear_cross_entropy` under ``--loss_chunk_size``.
    loss_implementation: str = "auto"

    def __init__(self, *args, **kwargs):
        if kwargs.get("compute_metrics") is not None or kwargs.get("preprocess_logits_for_metrics") is not None:
            raise ValueError("CausalLMTrainer computes its own evaluation metrics; use Trainer for custom metrics.")
        kwargs["compute_metrics"] = _token_level_metrics
        kwargs["preprocess_logits_for_metrics"] = _preprocess_logits_for_metrics
        super().__init__(*args, **kwargs)
        self.loss_chunk_size = getattr(self.args, "loss_chunk_size", 0)
        if self.loss_chunk_size:
            from .speed import check_chunked_loss_model, loss_kernel

            check_loss_chunking(self.args)
            check_chunked_loss_model(self.model)
            logging.getLogger(__name__).info(
                "Training loss: chunked linear cross-entropy (%s), %d tokens per chunk",
                loss_kernel(self.args.device, self.loss_implementation),
                self.loss_chunk_size,
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The chunked linear cross-entropy for a training step with ``--loss_chunk_size``, else ``Trainer``'s.

        Normalised as ``Trainer`` normalises a model's own loss: by ``num_items_in_batch`` (the counted targets of
        the whole gradient-accumulation step) where the model takes loss keyword arguments, else by this batch's
        targets (and ``training_step`` divides by the accumulation steps); times the number of processes with
        ``average_tokens_across_devices``.
        """
        if (
            not self.loss_chunk_size
            or return_outputs
            or not model.training
            or "labels" not in inputs
            or self.label_smoother is not None
            or self.compute_loss_func is not None
        ):
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        from .speed import causal_lm_loss

        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        # accelerate applies --bf16/--fp16 autocast to the model's forward only; the head's matmul must run under it
        # too (as nn.Linear does inside the forward), else the (tokens x vocab) products run in float32.
        with self.accelerator.autocast():
            loss = causal_lm_loss(
                self.accelerator.unwrap_model(model),
                inputs,
                wrapped=model,
                num_items_in_batch=num_items_in_batch if scaled else None,
                chunk_size=self.loss_chunk_size,
                implementation=self.loss_implementation,
            )
        if scaled and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss (no tensor parallelism here)
        return loss

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=False,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        token_loss = output.metrics.pop(f"{metric_key_prefix}_token_loss", None)
        if token_loss is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = token_loss
        return output


class ThroughputCallback(TrainerCallback):
    """Measures optimizer steps and wall time of one ``train()`` call; :meth:`metrics` turns them into tokens/s.

    Counting starts at the step training resumes from, so a resumed run reports its own throughput.
    ``train_steady_tokens_per_second`` leaves out the first optimizer step (CUDA start-up, ``torch.compile``), which
    weighs on short runs. On a GPU, ``train_peak_memory_gib`` is this process's peak of allocated device memory
    (``torch.cuda.max_memory_allocated``: rank 0's device in a multi-GPU run).
    """

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.start_step = self.end_step = 0
        self.start_time = self.first_step_time = None
        self.seconds = self.steady_seconds = 0.0
        self.peak_memory_gib = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        self.start_time = time.perf_counter()
        self.first_step_time = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step_time is None:
            self.first_step_time = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.end_step = state.global_step
        now = time.perf_counter()
        self.seconds = now - self.start_time
        self.steady_seconds = now - self.first_step_time if self.first_step_time is not None else 0.0
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.peak_memory_gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def metrics(self) -> dict[str, float]:
        steps = self.end_step - self.start_step
        tokens = steps * self.tokens_per_step
        steady_tokens = max(steps - 1, 0) * self.tokens_per_step
        metrics = {
            "train_start_step": self.start_step,
            "train_tokens": tokens,
            "train_tokens_per_second": round(tokens / self.seconds, 1) if self.seconds else 0.0,
            "train_steady_tokens_per_second": (
                round(steady_tokens / self.steady_seconds, 1) if steady_tokens and self.steady_seconds else 0.0
            ),
        }
        if self.peak_memory_gib is not None:
            metrics["train_peak_memory_gib"] = self.peak_memory_gib
        return metrics


def padding_collator(tokenizer) -> DataCollatorWithPadding:
    """Pads task-model windows (QA spans, classification labels) on the right, to a multiple of 8 tokens.

    Mamba reads left to right: right padding (``prepare_tokenizer_for_qa`` sets it) leaves real positions unchanged.
    """
    if tokenizer.padding_side != "right":
        raise ValueError(
            f"the tokenizer pads on the {tokenizer.padding_side!r}, which shifts every position Mamba reads; "
            "call biomamba_hf.prepare_tokenizer_for_qa(tokenizer, model) first (it pads on the right)"
        )
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
