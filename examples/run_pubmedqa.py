#!/usr/bin/env python
# Copyright 2025 The biomamba_hf authors. Shaped after transformers' examples/pytorch/text-classification/run_glue.py
# (Copyright 2020 The HuggingFace Inc. team), licensed under the Apache License, Version 2.0.
"""PubMedQA (PQA-L) yes/no/maybe classification with ``Mamba(2)ForSequenceClassification`` and ``Trainer``.

Trains on the 500 labelled instances outside the official test split (minus a seeded dev split of ``--dev_size``),
evaluates on the dev split (``--do_eval``) and on the 500 official test questions (``--do_predict``); reports accuracy
and macro-F1 (``pubmedqa_dev_*`` / ``pubmedqa_test_*`` in ``all_results.json``: not ``test_*``, which the model card
reads as PubMed perplexity) and writes ``predictions_pubmedqa_test.json``
(PMID -> answer); before training ``run_args.json`` (with the start checkpoint's lineage), after it the model card.
The input is ``question <sep> contexts`` cut to ``--max_seq_length`` (the question is kept whole); the head reads
the state of the last real token. Example::

    python examples/run_pubmedqa.py examples/configs/pubmedqa.yaml --data_dir path/to/data \\
        --model_name_or_path state-spaces/mamba-130m-hf --output_dir outputs/pubmedqa

A ``.json``/``.yaml`` file may come first; arguments after it override its values.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from biomamba_hf.script_utils import HubLoadingArguments, releases_output_dir_locks

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(HubLoadingArguments):
    """Which model and tokenizer to start from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Checkpoint: Hub id (state-spaces/mamba-130m-hf) or folder; a new classification head."},
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Model type for a random init: `mamba` or `mamba2`."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config of a random init, e.g. `hidden_size=64,num_hidden_layers=2`."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer if not the checkpoint's."})

    def __post_init__(self):
        if self.config_overrides is not None and self.model_name_or_path is not None:
            raise ValueError(
                f"--config_overrides {self.config_overrides!r} configures a random init (--model_type); it can't be "
                "combined with --model_name_or_path."
            )
        if self.model_name_or_path is None and (self.model_type is None or self.tokenizer_name is None):
            raise ValueError(
                "No model: pass --model_name_or_path, or --model_type mamba with --tokenizer_name (and "
                "--config_overrides) for a random init."
            )


@dataclass
class DataArguments:
    """Where PubMedQA is and how inputs are built."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder that relative data paths are read from (default: $BIOMAMBA_DATA_DIR, else cwd)."},
    )
    pubmedqa_dir: str = field(
        default="pubmedqa", metadata={"help": "Folder with ori_pqal.json and test_ground_truth.json."}
    )
    dev_size: int = field(default=50, metadata={"help": "Training instances held out as the dev split (seeded)."})
    max_seq_length: int = field(default=512, metadata={"help": "Tokens per input (question, separator, contexts)."})
    max_question_length: int = field(default=64, metadata={"help": "Questions are cut to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training instances."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N dev and test instances (quick runs only: not official)."}
    )

    def __post_init__(self):
        if self.data_dir is None:
            self.data_dir = os.environ.get("BIOMAMBA_DATA_DIR") or None
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir} is not a directory (relative data paths are read from it).")
        for name in ("max_seq_length", "max_question_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of instances, got {value}")


def parse_args(argv: list[str] | None = None):
    """``(model_args, data_args, training_args)`` from the command line, optionally after a .yaml/.json file."""
    from biomamba_hf.script_utils import parse_arguments
    from biomamba_hf.trainer import BiomambaTrainingArguments

    argv = sys.argv[1:] if argv is None else argv
    return parse_arguments((ModelArguments, DataArguments, BiomambaTrainingArguments), argv)


def load_model_and_tokenizer(model_args, device):
    from transformers import AutoModelForSequenceClassification

    from biomamba_hf.data.pubmedqa import LABELS
    from biomamba_hf.script_utils import load_task_config_and_tokenizer, load_task_model

    config, tokenizer = load_task_config_and_tokenizer(
        model_args,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    model, code_path = load_task_model(AutoModelForSequenceClassification, model_args, config, tokenizer, device)
    return model, tokenizer, code_path


@releases_output_dir_locks
def main(argv: list[str] | None = None) -> dict:
    """Run; returns the metrics written to ``all_results.json``."""
    import datasets
    import numpy as np
    from transformers import set_seed

    from biomamba_hf.data.pubmedqa import LABELS, classification_metrics, encode_pubmedqa, load_pubmedqa
    from biomamba_hf.reliability import reliability_callbacks
    from biomamba_hf.script_utils import existing_data_path, setup_logging, start_run
    from biomamba_hf.speed import cache_triton_autotuning
    from biomamba_hf.trainer import BiomambaTrainer, padding_collator

    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger)
    cache_triton_autotuning()  # mamba-ssm's Mamba-2 kernels: autotune once per machine, not once per run
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    # A missing data folder is named with where relative paths are read from, before the output dir is touched.
    pubmedqa_dir = existing_data_path(data_args.pubmedqa_dir, data_args.data_dir, "--pubmedqa_dir")
    # Before any data is read: model sources, output dir (writable, locked, what to resume, recorded arguments).
    run = start_run(training_args, model_args, data_args)
    checkpoint = run.checkpoint
    if checkpoint is not None:
        logger.info("Resuming training from checkpoint %s", checkpoint)
    set_seed(training_args.seed)

    splits = load_pubmedqa(
        pubmedqa_dir,
        dev_size=data_args.dev_size,
        seed=training_args.seed,
    )
    if data_args.max_train_samples is not None:
        splits["train"] = splits["train"][: data_args.max_train_samples]
    if data_args.max_eval_samples is not None:
        for name in ("validation", "test"):
            splits[name] = splits[name][: data_args.max_eval_samples]
    logger.info("PubMedQA: %s", ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()))
    if training_args.do_eval and not splits["validation"]:
        raise ValueError("--do_eval scores the dev split, which is empty: pass --dev_size > 0.")

    model, tokenizer, code_path = load_model_and_tokenizer(model_args, training_args.device)
    if code_path is not None:
        from biomamba_hf.ops import code_path_label

        logger.info("%s: %s", code_path_label(model.config.model_type), code_path)

    def encode(rows):
        return datasets.Dataset.from_dict(
            {
                "input_ids": [
                    encode_pubmedqa(
                        tokenizer,
                        r["question"],
                        r["contexts"],
                        max_seq_length=data_args.max_seq_length,
                        max_question_length=data_args.max_question_length,
                    )
                    for r in rows
                ],
                "labels": [LABELS.index(r["label"]) for r in rows],
            }
        ).map(lambda example: {"attention_mask": [1] * len(example["input_ids"])})

    encoded = {name: encode(rows) for name, rows in splits.items() if rows}

    def compute_metrics(eval_prediction):
        logits = (
            eval_prediction.predictions[0]
            if isinstance(eval_prediction.predictions, tuple)
            else eval_prediction.predictions
        )
        return classification_metrics(np.argmax(logits, axis=-1), eval_prediction.label_ids, len(LABELS))

    trainer = BiomambaTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"] if training_args.do_train else None,
        eval_dataset=encoded.get("validation"),
        processing_class=tokenizer,
        data_collator=padding_collator(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=reliability_callbacks(),
    )

    run.save_arguments()  # run_args.json, now that the inputs are valid

    results: dict = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = len(splits["train"])
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="pubmedqa_dev")
        metrics["pubmedqa_dev_samples"] = len(splits["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.do_predict:
        output = trainer.predict(encoded["test"], metric_key_prefix="pubmedqa_test")
        metrics = dict(output.metrics)
        metrics["pubmedqa_test_samples"] = len(splits["test"])
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        results.update(metrics)
        if trainer.is_world_process_zero():
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            answers = {r["pubid"]: LABELS[int(i)] for r, i in zip(splits["test"], np.argmax(logits, axis=-1))}
            path = Path(training_args.output_dir) / "predictions_pubmedqa_test.json"
            path.write_text(json.dumps(answers, indent=2) + "\n", encoding="utf-8")

    if training_args.do_train and trainer.is_world_process_zero():
        from biomamba_hf import hub

        # The card is the text-classification card; run_args.json (written before training) holds the lineage.
        hub.attach_model_card(trainer, **hub.card_kwargs_for_start(model_args.model_name_or_path))
        if training_args.push_to_hub:
            trainer.push_to_hub()
        else:
            trainer.create_model_card()
    return results


if __name__ == "__main__":
    main()
