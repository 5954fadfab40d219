#!/usr/bin/env python
# Copyright 2025 The biomamba_hf authors. Adapted from transformers' examples/pytorch/question-answering/run_qa.py
# (Copyright 2020 The HuggingFace Inc. team), licensed under the Apache License, Version 2.0.
"""Fine-tune Mamba for extractive QA on BioASQ factoid questions with ``Trainer``, and score it officially.

* training data: official BioASQ golden/training JSON (``--train_golden_files``, turned into SQuAD examples by
  matching the gold synonyms in the snippets; the conversion report is logged) and/or SQuAD JSON with answers
  (``--train_file``);
* ``--do_eval``: every ``--test_dirs`` folder (``test/BioASQ-test-factoid-*.json`` + ``golden/*_golden.json``) is
  predicted, each question's contexts are merged into a ranked top 5 (rule in ``biomamba_hf.bioasq.evaluation``) and
  scored per batch, averaged over batches (as BioBERT reports) and over questions (micro);
* ``--do_predict``: SQuAD-format ``--predict_files`` without answers get predictions and a BioASQ submission file.

Outputs in ``--output_dir``: the model (merged when ``--use_lora``) with its tokenizer, ``all_results.json``
(``bioasq_<set>_strict_acc`` / ``_lenient_acc`` / ``_mrr`` batch-averaged, ``bioasq_<set>_micro_*``, counts),
``bioasq_<set>_per_batch.json``, ``predictions_<set>.json`` (question id -> top 5), ``nbest_predictions_<set>.json``
(per context), ``submission_<set>.json`` (BioASQ format, every golden question listed) and the model card.

Examples::

    # the documented protocol: evaluate on 4b, trained on golden-derived examples of 5b + 7b
    python examples/run_qa.py examples/configs/bioasq_4b.yaml --data_dir path/to/data \\
        --model_name_or_path state-spaces/mamba-130m-hf --output_dir out/qa-4b

    # LoRA on the family's default modules (Mamba: in_proj, x_proj, embeddings); the QA head trains in full; the
    # adapter is merged before saving
    python examples/run_qa.py examples/configs/bioasq_5b.yaml --data_dir path/to/data --use_lora \\
        --model_name_or_path out/clm --output_dir out/qa-5b-lora

A ``.json``/``.yaml`` file may come first; arguments after it override its values. Relative data paths are read
from ``--data_dir`` (default: the ``BIOMAMBA_DATA_DIR`` environment variable, else the working directory).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from biomamba_hf.script_utils import HubLoadingArguments, releases_output_dir_locks

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(HubLoadingArguments):
    """Which model and tokenizer to start from, its QA layout, and LoRA."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to fine-tune: Hub id (state-spaces/mamba-130m-hf) or folder; a causal-LM checkpoint "
            "gets a new QA head. A QA checkpoint is evaluated or trained further with its own layout."
        },
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Model type for a random init: `mamba` or `mamba2`."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config of a random init, e.g. `hidden_size=768,num_hidden_layers=24` (with --model_type)."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer name or folder if not the one of model_name_or_path."}
    )
    qa_layout: str | None = field(
        default=None,
        metadata={
            "help": "Input layout: question_first or repeat_context (see biomamba_hf.qa). Default: the layout the "
            "checkpoint was trained with, else question_first. Recorded in the saved config."
        },
    )
    compile_inference: bool = field(
        default=False,
        metadata={
            "help": "Predict (--do_eval/--do_predict) through torch.compile(mode='reduce-overhead'): CUDA graphs on a "
            "GPU, any model; windows are padded to length buckets (--inference_pad_to_multiple_of, default 64)."
        },
    )
    cuda_graphs_inference: bool = field(
        default=False,
        metadata={
            "help": "Predict (--do_eval/--do_predict) by replaying one CUDA graph per batch shape "
            "(biomamba_hf.cuda_graphs): captures mamba-ssm's kernels too; CUDA only, not with --compile_inference; "
            "windows are padded to length buckets (--inference_pad_to_multiple_of, default 64)."
        },
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA inputs."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated modules to adapt. Default: the family's own (biomamba_hf.lora."
            "default_lora_targets): in_proj,x_proj,embeddings for Mamba, in_proj,embeddings for Mamba-2. out_proj "
            "and conv1d are refused (peft), dt_proj too (transformers bypasses it); the QA head always trains in full."
        },
    )

    def __post_init__(self):
        if self.config_overrides is not None and self.model_name_or_path is not None:
            raise ValueError(
                f"--config_overrides {self.config_overrides!r} configures a random init (--model_type); it can't be "
                "combined with --model_name_or_path."
            )
        if self.model_name_or_path is None and self.model_type is None:
            raise ValueError(
                "No model: pass --model_name_or_path (e.g. state-spaces/mamba-130m-hf or a run_clm output folder), or "
                "--model_type mamba with --config_overrides and --tokenizer_name for a random init."
            )
        if self.model_name_or_path is None and self.tokenizer_name is None:
            raise ValueError("A random init (--model_type) needs --tokenizer_name (e.g. the GPT-NeoX tokenizer).")
        from biomamba_hf.modeling import check_qa_layout

        if self.qa_layout is not None:
            check_qa_layout(self.qa_layout, "--qa_layout")
        if self.compile_inference and self.cuda_graphs_inference:
            raise ValueError(
                "Pass either --compile_inference or --cuda_graphs_inference, not both (compile's reduce-overhead "
                "mode already replays CUDA graphs)."
            )

    @property
    def lora_targets(self) -> list[str] | None:
        """The modules named by --lora_target_modules; None lets add_lora pick the model family's defaults."""
        if self.lora_target_modules is None:
            return None
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]


@dataclass
class DataArguments:
    """Training, test and prediction files, and how to cut contexts into windows."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder that relative data paths are read from (default: $BIOMAMBA_DATA_DIR, else cwd)."},
    )
    train_golden_files: list[str] | None = field(
        default=None,
        metadata={"help": "Official BioASQ golden/training JSON files; factoid snippets become training contexts."},
    )
    train_file: list[str] | None = field(
        default=None, metadata={"help": "SQuAD-format JSON files with answers (e.g. BioBERT's training files)."}
    )
    keep_unanswerable: bool = field(
        default=False,
        metadata={"help": "Keep golden snippets without a gold synonym as no-answer examples (default: drop them)."},
    )
    test_dirs: list[str] | None = field(
        default=None,
        metadata={"help": "BioASQ test-set folders (test/ + golden/), e.g. bioasq/4b; scored with --do_eval."},
    )
    predict_files: list[str] | None = field(
        default=None, metadata={"help": "SQuAD-format files without answers; predicted with --do_predict."}
    )
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question, separators, context)."})
    doc_stride: int = field(default=128, metadata={"help": "Context tokens shared by consecutive windows."})
    max_question_length: int = field(default=64, metadata={"help": "Questions are cut to this many tokens."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span, in tokens."})
    n_best_size: int = field(default=20, metadata={"help": "Candidates kept per context before merging."})
    inference_pad_to_multiple_of: int | None = field(
        default=None,
        metadata={
            "help": "Pad prediction windows on the right to multiples of this many tokens (at most "
            "--max_seq_length), so that batches come in a few shapes; answers do not change."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training examples (contexts), for quick runs."}
    )

    def __post_init__(self):
        if self.data_dir is None:
            self.data_dir = os.environ.get("BIOMAMBA_DATA_DIR") or None
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir} is not a directory (relative data paths are read from it).")
        for name in ("max_seq_length", "max_question_length", "max_answer_length", "n_best_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        if self.inference_pad_to_multiple_of is not None and self.inference_pad_to_multiple_of < 1:
            raise ValueError(
                f"--inference_pad_to_multiple_of must be a positive integer (e.g. 64), got "
                f"{self.inference_pad_to_multiple_of}"
            )
        if self.doc_stride < 0:
            raise ValueError(f"--doc_stride must be >= 0, got {self.doc_stride}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(
                f"--max_train_samples must be a positive number of examples, got {self.max_train_samples}"
            )
        if self.max_question_length >= self.max_seq_length - 2:
            raise ValueError(
                f"--max_question_length {self.max_question_length} leaves no room for context in --max_seq_length "
                f"{self.max_seq_length}; use a smaller question length or longer windows."
            )

    def paths(self, name: str) -> list[Path]:
        """The paths of ``--<name>`` under --data_dir; a missing one is named with how to set --data_dir."""
        from biomamba_hf.script_utils import existing_data_path

        return [existing_data_path(p, self.data_dir, f"--{name}") for p in (getattr(self, name) or [])]


def parse_args(argv: list[str] | None = None):
    """``(model_args, data_args, training_args)`` from the command line, optionally after a .yaml/.json file."""
    from biomamba_hf.script_utils import parse_arguments
    from biomamba_hf.trainer import BiomambaTrainingArguments

    argv = sys.argv[1:] if argv is None else argv
    return parse_arguments((ModelArguments, DataArguments, BiomambaTrainingArguments), argv)


def load_data(data_args, training_args):
    """Read and validate every input file before any model is loaded: (train rows, test sets, predict sets).

    A test set is ``(rows, references by batch, golden questions of every type)`` (:func:`read_test_set`).
    """
    from biomamba_hf.bioasq.evaluation import check_disjoint, read_test_set, test_set_name
    from biomamba_hf.bioasq.squad import load_training_examples, read_squad_bioasq

    train_rows = None
    if training_args.do_train:
        golden, squad = data_args.paths("train_golden_files"), data_args.paths("train_file")
        if not golden and not squad:
            raise ValueError("--do_train needs training data: pass --train_golden_files and/or --train_file.")
        train_rows, reports = load_training_examples(golden, squad, keep_unanswerable=data_args.keep_unanswerable)
        for report in reports:
            logger.info("BioASQ golden -> SQuAD: %s: %s", ", ".join(Path(f).name for f in report.files), report)
            if report.dropped_question_ids:
                logger.info("questions without a matching snippet: %s", ", ".join(report.dropped_question_ids))
        if not train_rows:
            raise ValueError("The training files gave no example with an answer; check the files passed.")
        if data_args.max_train_samples is not None:
            train_rows = train_rows[: data_args.max_train_samples]

    test_sets = {}
    if training_args.do_eval or training_args.eval_before_train:
        if not data_args.test_dirs:
            raise ValueError("--do_eval (and --eval_before_train) score test sets: pass --test_dirs (e.g. bioasq/4b).")
        for directory in data_args.paths("test_dirs"):
            rows, references, questions = read_test_set(directory)  # each file read once
            name = test_set_name(references)
            if name in test_sets:
                raise ValueError(f"{directory}: test set {name!r} is given twice in --test_dirs")
            test_sets[name] = (rows, references, questions)
    test_question_ids = {
        qid: name for name, (_, refs, _) in test_sets.items() for batch in refs.values() for qid in batch
    }
    if train_rows is not None:
        check_disjoint(train_rows, test_question_ids)

    predict_sets = {}
    if training_args.do_predict:
        files = data_args.paths("predict_files")
        if not files:
            raise ValueError("--do_predict needs --predict_files (SQuAD-format BioASQ test files).")
        rows = read_squad_bioasq(files)
        name = test_set_name(row["batch"] for row in rows)
        if name in test_sets:
            raise ValueError(
                f"--predict_files are test set {name!r}, which --test_dirs already scores (same output files); "
                "pass it to one of them only."
            )
        predict_sets[name] = rows
    return train_rows, test_sets, predict_sets


def load_model_and_tokenizer(model_args, device):
    """The QA model (a causal-LM checkpoint gets a new head) and its tokenizer with pad and separator tokens."""
    from transformers import AutoModelForQuestionAnswering

    from biomamba_hf.qa import resolve_qa_layout
    from biomamba_hf.script_utils import load_task_config_and_tokenizer, load_task_model

    config, tokenizer = load_task_config_and_tokenizer(model_args)
    source = model_args.model_name_or_path or f"a random {model_args.model_type} init"
    layout = resolve_qa_layout(model_args.qa_layout, config, source)
    model, code_path = load_task_model(AutoModelForQuestionAnswering, model_args, config, tokenizer, device)
    return model, tokenizer, layout, code_path


def is_local_clm_run(path: str) -> bool:
    """Whether ``path`` is an examples/run_clm.py output folder (a causal-LM checkpoint with recorded results)."""
    from biomamba_hf.hub import card_kwargs_for_start

    return "pretraining_dir" in card_kwargs_for_start(path)


@releases_output_dir_locks
def main(argv: list[str] | None = None) -> dict:
    """Run; returns the metrics written to ``all_results.json``."""
    from transformers import Trainer, set_seed

    from biomamba_hf.bioasq.evaluation import (
        merge_question_predictions,
        score_test_set,
        write_prediction_files,
    )
    from biomamba_hf.lora import add_lora, default_lora_targets, merge_lora, snapshot_trainable, unchanged_parameters
    from biomamba_hf.qa import predict_nbest, prepare_train_features
    from biomamba_hf.reliability import preflight, reliability_callbacks
    from biomamba_hf.script_utils import describe_dtype, setup_logging, start_run
    from biomamba_hf.speed import cache_triton_autotuning
    from biomamba_hf.trainer import BiomambaTrainer, padding_collator

    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger)
    cache_triton_autotuning()  # mamba-ssm's Mamba-2 kernels: autotune once per machine, not once per run
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    if training_args.push_to_hub and model_args.use_lora:
        raise ValueError(
            "--push_to_hub with --use_lora would upload the adapter, not the merged model this script saves: train "
            "without --push_to_hub, then upload the output folder with examples/push_to_hub.py."
        )
    if model_args.cuda_graphs_inference and (training_args.do_eval or training_args.do_predict):
        from biomamba_hf.cuda_graphs import check_cuda_graphs

        check_cuda_graphs(True, training_args.device, "--cuda_graphs_inference")
    # Before any data is read: model sources, output dir (writable, locked, what to resume, recorded arguments).
    run = start_run(training_args, model_args, data_args)
    checkpoint = run.checkpoint
    if checkpoint is not None:
        logger.info("Resuming training from checkpoint %s", checkpoint)
    set_seed(training_args.seed)

    train_rows, test_sets, predict_sets = load_data(data_args, training_args)
    model, tokenizer, layout, code_path = load_model_and_tokenizer(model_args, training_args.device)
    preflight(training_args, model)  # enough disk for the checkpoints kept
    lora_targets = model_args.lora_targets or list(default_lora_targets(model))
    if model_args.use_lora:
        model = add_lora(
            model,
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=lora_targets,
        )
    feature_kwargs = {
        "layout": layout,
        "max_seq_length": data_args.max_seq_length,
        "doc_stride": data_args.doc_stride,
        "max_question_length": data_args.max_question_length,
    }
    predict_kwargs = {  # inference levers, the same for every model
        "pad_to_multiple_of": data_args.inference_pad_to_multiple_of,
        "compile": model_args.compile_inference,
        "cuda_graphs": model_args.cuda_graphs_inference,
    }
    if training_args.should_log:
        from biomamba_hf.ops import code_path_label

        label = code_path_label(model.config.model_type)
        for line in (
            *([f"{label}: {code_path}"] if code_path is not None else []),
            f"QA layout: {layout}",
            f"dtype: {describe_dtype(model, training_args)}",
            f"LoRA: {lora_targets if model_args.use_lora else 'no (all weights train)'}",
            f"world size: {training_args.world_size}",
        ):
            logger.info("run: %s", line)

    train_dataset = None
    if train_rows is not None:
        import datasets

        from biomamba_hf.bioasq.squad import squad_features

        with training_args.main_process_first(desc="building training windows"):
            examples = datasets.Dataset.from_list(train_rows, features=squad_features())
            train_dataset = examples.map(
                prepare_train_features,
                batched=True,
                remove_columns=examples.column_names,
                fn_kwargs={"tokenizer": tokenizer, **feature_kwargs},
                desc="training windows",
            )
        logger.info("%d training examples -> %d windows", len(examples), len(train_dataset))

    run.save_arguments()  # run_args.json, now that the inputs are valid
    collator = padding_collator(tokenizer)
    trainer = BiomambaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=reliability_callbacks(),
    )

    def evaluate(current_trainer, prefix: str) -> dict:
        metrics = {}
        for name, (rows, references, questions) in test_sets.items():
            nbest = predict_nbest(
                current_trainer,
                rows,
                tokenizer,
                n_best_size=data_args.n_best_size,
                max_answer_length=data_args.max_answer_length,
                **feature_kwargs,
                **predict_kwargs,
            )
            question_ids = [qid for batch in references.values() for qid in batch]
            predictions = merge_question_predictions(nbest, question_ids)
            nested, flat = score_test_set(predictions, references, name)
            if current_trainer.is_world_process_zero():
                write_prediction_files(
                    training_args.output_dir,
                    name,
                    nbest,
                    predictions,
                    question_ids,
                    per_batch=nested,
                    prefix=prefix,
                    questions=questions,
                )
            metrics.update({prefix + key: value for key, value in flat.items()})
            logger.info(
                "%sBioASQ %s (%d questions, %d batches): strict acc %.4f, lenient acc %.4f, MRR %.4f (batch average)",
                prefix,
                name,
                flat[f"bioasq_{name}_num_questions"],
                flat[f"bioasq_{name}_num_batches"],
                flat[f"bioasq_{name}_strict_acc"],
                flat[f"bioasq_{name}_lenient_acc"],
                flat[f"bioasq_{name}_mrr"],
            )
        return metrics

    results: dict = {}
    if training_args.eval_before_train:
        metrics = evaluate(trainer, "initial_")
        trainer.save_metrics("initial", metrics)
        results.update(metrics)

    eval_trainer = trainer
    if training_args.do_train:
        before = snapshot_trainable(model) if model_args.use_lora else None
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = len(train_rows)
        metrics["train_windows"] = len(train_dataset)
        if model_args.use_lora:
            frozen = [name for name in unchanged_parameters(model, before) if "lora_" in name]
            if frozen:
                logger.warning(
                    "%d LoRA weights did not change in training (their modules are bypassed on this code path, %s): "
                    "%s",
                    len(frozen),
                    code_path,
                    ", ".join(sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name in frozen})),
                )
            model = merge_lora(model)
            eval_trainer = Trainer(model=model, args=training_args, processing_class=tokenizer, data_collator=collator)
            if trainer.is_world_process_zero():
                model.save_pretrained(training_args.output_dir)
                tokenizer.save_pretrained(training_args.output_dir)
        else:
            trainer.save_model()  # with the tokenizer
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = evaluate(eval_trainer, "")
        eval_trainer.log_metrics("eval", metrics)
        eval_trainer.save_metrics("eval", metrics)
        results.update(metrics)

    if training_args.do_predict:
        logger.info("*** Predict ***")
        for name, rows in predict_sets.items():
            nbest = predict_nbest(
                eval_trainer,
                rows,
                tokenizer,
                n_best_size=data_args.n_best_size,
                max_answer_length=data_args.max_answer_length,
                metric_key_prefix="predict",
                **feature_kwargs,
                **predict_kwargs,
            )
            question_ids = list(dict.fromkeys(row["question_id"] for row in rows))
            predictions = merge_question_predictions(nbest, question_ids)
            if eval_trainer.is_world_process_zero():
                paths = write_prediction_files(training_args.output_dir, name, nbest, predictions, question_ids)
                logger.info(
                    "Predictions for %d questions written to %s", len(question_ids), ", ".join(map(str, paths))
                )

    if training_args.do_train and trainer.is_world_process_zero():
        from biomamba_hf import hub

        # A local run_clm output start becomes pretraining_dir (its metrics go on the card too), a Hub id base_model.
        card_kwargs = hub.card_kwargs_for_start(model_args.model_name_or_path)
        hub.attach_model_card(trainer, **card_kwargs)  # Trainer's card is the biomamba card, pushed or not
        if training_args.push_to_hub:
            trainer.push_to_hub()
        else:
            trainer.create_model_card()
    return results


if __name__ == "__main__":
    main()
