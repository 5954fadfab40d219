#!/usr/bin/env python
# Copyright 2025 The biomamba_hf authors. Adapted from transformers' examples/pytorch/language-modeling/run_clm.py
# (Copyright 2020 The HuggingFace Inc. team), licensed under the Apache License, Version 2.0.
"""Continued pretraining (causal language modelling) of Mamba on biomedical text, with ``Trainer``.

The flags are those of transformers' ``run_clm.py``, plus ``--tokens_per_step``, ``--text_column``,
``--train_tokenizer_vocab_size`` and ``--eval_before_train``. Examples::

    # the BioMamba recipe (from state-spaces/mamba-130m-hf, 0.5M tokens per step on any number of GPUs)
    accelerate launch --config_file examples/accelerate/multi_gpu_bf16.yaml \\
        examples/run_clm.py examples/configs/biomamba_recipe.yaml

    # from scratch, tiny, on a CPU
    python examples/run_clm.py --model_type mamba --config_overrides hidden_size=64,num_hidden_layers=2 \\
        --tokenizer_name path/to/tokenizer --train_file train.jsonl.gz --validation_file dev.jsonl.gz \\
        --block_size 256 --do_train --do_eval --max_steps 100 --output_dir out

    # no arguments: the embedded demo (a tiny Mamba trained from scratch on the bundled PubMed sample, with a
    # tokenizer trained on the fly; writes ./demo_output and prints perplexity before and after training)
    python examples/run_clm.py

Perplexity is ``exp(eval_loss)`` where ``eval_loss`` is the mean cross-entropy over real next-token predictions only
(padding is never counted; see ``biomamba_hf.trainer``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from biomamba_hf.script_utils import HubLoadingArguments, releases_output_dir_locks

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
#: Config fields that size the model: each must be a positive integer where the config has it.
CONFIG_SIZE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "state_size",
    "expand",
    "conv_kernel",
    "intermediate_size",
)
#: Files of a saved tokenizer; a local tokenizer folder must hold at least one of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


@dataclass
class ModelArguments(HubLoadingArguments):
    """Which model, config and tokenizer to start from, or to train from scratch."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to continue from (Hub id such as state-spaces/mamba-130m-hf, or a local folder). "
            "Leave unset to train from scratch."
        },
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Model type when training from scratch, e.g. `mamba`."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Config settings when training from scratch, e.g. "
            "`hidden_size=768,num_hidden_layers=24,vocab_size=50280`."
        },
    )
    config_name: str | None = field(
        default=None, metadata={"help": "Pretrained config name or path if not the same as model_name_or_path."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Pretrained tokenizer name or path if not the same as model_name_or_path."}
    )
    train_tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "Train a byte-level BPE tokenizer of this vocabulary size on the training texts instead of "
            "loading one (demos and from-scratch runs without Hub access)."
        },
    )
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (tokenizers-backed) tokenizer."})
    dtype: str | None = field(
        default=None,
        metadata={"help": "Load the model weights in this dtype.", "choices": list(DTYPE_CHOICES)},
    )

    def __post_init__(self):
        if self.config_overrides is not None and (self.config_name is not None or self.model_name_or_path is not None):
            raise ValueError(
                f"--config_overrides {self.config_overrides!r} only applies to a model trained from scratch "
                "(--model_type); it can't be combined with --config_name or --model_name_or_path."
            )
        if self.model_name_or_path is None and self.config_name is None and self.model_type is None:
            raise ValueError(
                "No model: pass --model_name_or_path (e.g. state-spaces/mamba-130m-hf), or --model_type mamba "
                "(with --config_overrides or --config_name) to train from scratch."
            )
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
        if self.train_tokenizer_vocab_size is not None:
            if self.tokenizer_name is not None:
                raise ValueError("Pass either --tokenizer_name or --train_tokenizer_vocab_size, not both.")
            if self.train_tokenizer_vocab_size < 260:
                raise ValueError(
                    f"--train_tokenizer_vocab_size {self.train_tokenizer_vocab_size} is too small: a byte-level "
                    "BPE needs 256 byte tokens plus the special tokens; use at least 260."
                )


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on, and how to cut it into blocks."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A dataset on the Hub (e.g. ncbi/pubmed) or a local dataset folder, for `load_dataset`."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative --train_file/--validation_file paths (and a --tokenizer_name folder found "
            "there) are read from (default: $BIOMAMBA_DATA_DIR, else the working directory)."
        },
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Training text: .txt (one document per line), .json or .jsonl, or .gz of any."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Evaluation text, in the same formats as --train_file."}
    )
    text_column: str | None = field(
        default=None,
        metadata={
            "help": "Field holding each record's text (default `text`; for ncbi/pubmed its title and abstract). "
            "Nested fields as dotted paths; several fields separated by commas are joined ('Title. Abstract')."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many training blocks (debugging or quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only this many evaluation blocks (debugging or quick runs)."}
    )
    streaming: bool = field(default=False, metadata={"help": "Read the data lazily (needs --max_steps)."})
    block_size: int = field(
        default=2048,
        metadata={
            "help": "Tokens per training sequence. Documents are packed, separated by EOS, into blocks of this "
            "size (Mamba has no position limit: always set it explicitly)."
        },
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo tokenization instead of using the cache."})
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Percentage of the training records used for validation when there is no validation data."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes used for tokenization."})
    keep_linebreaks: bool = field(default=True, metadata={"help": "Keep line breaks in .txt files."})

    def __post_init__(self):
        from biomamba_hf.data.clm import file_format

        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("No data: pass --train_file and/or --validation_file, or --dataset_name.")
        if self.dataset_name is not None and (self.train_file is not None or self.validation_file is not None):
            raise ValueError("Pass either --dataset_name or --train_file/--validation_file, not both.")
        if self.train_file is not None:
            file_format(self.train_file, "--train_file")
        if self.validation_file is not None:
            file_format(self.validation_file, "--validation_file")
        if self.block_size < 2:
            raise ValueError(f"--block_size must be at least 2 tokens, got {self.block_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} must be a positive number of blocks, got {value}")
        if not 0 <= self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be in [0, 100), got {self.validation_split_percentage}"
            )
        self.resolve_data_files()  # last: the cheap checks above hold whatever the data folder

    def resolve_data_files(self) -> None:
        """Read relative data files from ``--data_dir`` (default ``$BIOMAMBA_DATA_DIR``), as run_qa and run_pubmedqa
        do; a missing file gets a message that says where it was looked for, with or without a data folder."""
        from biomamba_hf.script_utils import existing_data_path

        if self.data_dir is None:
            self.data_dir = os.environ.get("BIOMAMBA_DATA_DIR") or None
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"--data_dir {self.data_dir} is not a directory (relative data paths are read from it).")
        for name in ("train_file", "validation_file"):
            path = getattr(self, name)
            if path is not None:
                setattr(self, name, str(existing_data_path(path, self.data_dir, f"--{name}")))


def demo_arguments(output_dir: str = "demo_output") -> list[str]:
    """The embedded default run: a tiny Mamba trained from scratch on the bundled PubMed sample, on a CPU.

    The tokenizer is trained on the fly, so nothing is downloaded. ``output_dir`` is the demo's own folder and is
    overwritten, so running the demo twice works.
    """
    from importlib.resources import files

    resources = files("biomamba_hf") / "resources"
    return [
        "--model_type=mamba",
        "--config_overrides=hidden_size=64,num_hidden_layers=2,state_size=8",
        "--train_tokenizer_vocab_size=1000",
        f"--train_file={resources / 'pubmed_demo_train.jsonl.gz'}",
        f"--validation_file={resources / 'pubmed_demo_validation.jsonl.gz'}",
        "--block_size=128",
        "--per_device_train_batch_size=16",
        "--per_device_eval_batch_size=32",
        "--learning_rate=3e-3",
        "--adam_beta2=0.95",
        "--weight_decay=0.1",
        "--lr_scheduler_type=cosine_with_min_lr",
        '--lr_scheduler_kwargs={"min_lr": 1e-4}',
        "--warmup_steps=0.05",
        "--num_train_epochs=2",
        "--logging_steps=10",
        "--save_strategy=no",
        "--eval_before_train",
        "--do_train",
        "--do_eval",
        "--seed=0",
        "--report_to=none",
        "--dataloader_num_workers=0",
        f"--output_dir={output_dir}",
        "--overwrite_output_dir",
    ]


def parse_args(argv: list[str] | None = None):
    """``(model_args, data_args, training_args)`` from the command line (optionally after a .yaml/.json file whose
    values the flags override), or the embedded demo when there are no arguments."""
    from biomamba_hf.script_utils import parse_arguments
    from biomamba_hf.trainer import CLMTrainingArguments

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = demo_arguments()
        print("No arguments: running the embedded demo, i.e. examples/run_clm.py " + " ".join(argv), flush=True)
    model_args, data_args, training_args = parse_arguments(
        (ModelArguments, DataTrainingArguments, CLMTrainingArguments), argv
    )
    if data_args.data_dir and model_args.tokenizer_name:  # a tokenizer folder inside the data folder (the configs')
        candidate = os.path.join(data_args.data_dir, model_args.tokenizer_name)
        if not os.path.isabs(model_args.tokenizer_name) and os.path.isdir(candidate):
            model_args.tokenizer_name = candidate
    return model_args, data_args, training_args


def _config_source(name: str, argument: str) -> str:
    """Where a config loaded from ``name`` comes from, for error messages: the local config.json, or the Hub id."""
    if os.path.isdir(name):
        return f"{argument} {os.path.join(name, 'config.json')}"
    return f"{argument} {name}"


def check_config_sizes(config, source: str) -> None:
    """Refuse a config whose size fields (:data:`CONFIG_SIZE_FIELDS`) are not positive integers, before any model
    is built from it (torch would fail later with a bare 'negative dimension')."""
    for name in CONFIG_SIZE_FIELDS:
        value = getattr(config, name, None)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(
                f"{source}: field {name!r} is {value!r}, but it must be a positive integer (it sizes the model); "
                f"fix {name} there, e.g. {name}={getattr(type(config)(), name, 1)} (the {type(config).__name__} "
                "default)."
            )


def check_tokenizer_folder(name: str, argument: str) -> None:
    """Refuse a local folder that holds no tokenizer files (transformers' own error names neither)."""
    if os.path.isdir(name) and not any(os.path.isfile(os.path.join(name, file)) for file in TOKENIZER_FILES):
        raise ValueError(
            f"{argument} {name}: the folder has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}). Save a "
            "tokenizer there with `tokenizer.save_pretrained(folder)`, pass another folder or Hub id (e.g. "
            "state-spaces/mamba-130m-hf), or pass --train_tokenizer_vocab_size to train one on the training texts."
        )


def load_config_and_tokenizer(model_args, raw_datasets):
    from transformers import AutoConfig, AutoTokenizer

    from biomamba_hf.script_utils import check_model_sources, config_from_overrides, fit_config_to_tokenizer

    check_model_sources(model_args)  # folders with config.json and whole weights; Hub ids cached when offline

    hub_kwargs = model_args.hub_kwargs
    if model_args.config_name:
        config = AutoConfig.from_pretrained(model_args.config_name, **hub_kwargs)
        source = _config_source(model_args.config_name, "--config_name")
    elif model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs)
        source = _config_source(model_args.model_name_or_path, "--model_name_or_path")
    else:
        logger.warning("Instantiating a new %s config from scratch.", model_args.model_type)
        config = config_from_overrides(model_args.model_type, model_args.config_overrides)
        source = f"--config_overrides {model_args.config_overrides!r}"
    check_config_sizes(config, source)

    if model_args.tokenizer_name or model_args.model_name_or_path:
        if model_args.tokenizer_name:
            check_tokenizer_folder(model_args.tokenizer_name, "--tokenizer_name")
        else:
            check_tokenizer_folder(model_args.model_name_or_path, "--model_name_or_path")
        tokenizer = AutoTokenizer.from_pretrained(
            model_args.tokenizer_name or model_args.model_name_or_path,
            use_fast=model_args.use_fast_tokenizer,
            **hub_kwargs,
        )
    elif model_args.train_tokenizer_vocab_size:
        from biomamba_hf.tokenization import train_bpe_tokenizer

        if "train" not in raw_datasets:
            raise ValueError("--train_tokenizer_vocab_size trains on the training texts: pass --train_file too.")
        texts = (record["text"] for record in raw_datasets["train"])
        tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.train_tokenizer_vocab_size)
        logger.info("Trained a byte-level BPE tokenizer of %d tokens on the training texts.", len(tokenizer))
    else:
        raise ValueError(
            "No tokenizer: pass --tokenizer_name (e.g. the GPT-NeoX tokenizer of state-spaces/mamba-130m-hf), "
            "--model_name_or_path, or --train_tokenizer_vocab_size."
        )
    if model_args.model_name_or_path is None:
        # A fresh model needs no more rows than the tokenizer has (default MambaConfig has 50,280).
        fit_config_to_tokenizer(
            config, tokenizer, model_args.config_overrides, resize_vocab=model_args.config_name is None
        )
    return config, tokenizer


def load_model(model_args, config, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from biomamba_hf.reliability import from_pretrained_safely

    if model_args.model_name_or_path:
        dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
        model = from_pretrained_safely(
            AutoModelForCausalLM,
            model_args.model_name_or_path,
            allow_pickle=model_args.allow_pickle_weights,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            token=model_args.token,
            dtype=dtype,
        )
    else:
        model = AutoModelForCausalLM.from_config(config)
        if model_args.dtype not in (None, "auto"):
            model = model.to(getattr(torch, model_args.dtype))
        n_params = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
        logger.info("Training a new model from scratch: %.2fM parameters", n_params / 1e6)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return model


@releases_output_dir_locks
def main(argv: list[str] | None = None) -> dict:
    """Run; returns the metrics written to ``all_results.json``."""
    import torch
    from transformers import default_data_collator, set_seed

    from biomamba_hf.data.clm import load_text_datasets, pack_dataset
    from biomamba_hf.hub import attach_model_card
    from biomamba_hf.ops import code_path_label
    from biomamba_hf.reliability import preflight, reliability_callbacks
    from biomamba_hf.script_utils import (
        check_world_size,
        configure_mamba_code_path,
        describe_dtype,
        gradient_accumulation_for,
        run_summary_lines,
        setup_logging,
        start_run,
        tokens_per_optimizer_step,
    )
    from biomamba_hf.speed import cache_triton_autotuning, check_chunked_loss_model
    from biomamba_hf.trainer import CausalLMTrainer, ThroughputCallback, check_loss_chunking, perplexity

    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args, logger)
    cache_triton_autotuning()  # mamba-ssm's Mamba-2 kernels: autotune once per machine, not once per run
    check_world_size(training_args)
    check_loss_chunking(training_args)  # before any data is read
    if not (training_args.do_train or training_args.do_eval):
        raise ValueError("Nothing to do: pass --do_train and/or --do_eval.")
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("--streaming reads a dataset of unknown length: pass --max_steps (e.g. 4800).")
    if training_args.tokens_per_step is not None:
        accumulation = gradient_accumulation_for(
            training_args.tokens_per_step,
            data_args.block_size,
            training_args.per_device_train_batch_size,
            training_args.world_size,
        )
        if training_args.gradient_accumulation_steps not in (1, accumulation):
            raise ValueError(
                f"--gradient_accumulation_steps {training_args.gradient_accumulation_steps} contradicts "
                f"--tokens_per_step {training_args.tokens_per_step}, which needs {accumulation}: pass only one."
            )
        training_args.gradient_accumulation_steps = accumulation
    # Before any data is processed: model sources, output dir (writable, locked, what to resume, recorded arguments).
    run = start_run(training_args, model_args, data_args)
    checkpoint = run.checkpoint
    if checkpoint is not None:
        logger.info("Resuming training from checkpoint %s", checkpoint)

    logger.warning(
        "Process rank: %s, device: %s, n_gpu: %s, distributed: %s",
        training_args.process_index,
        training_args.device,
        training_args.n_gpu,
        training_args.parallel_mode.value == "distributed",
    )
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="loading the text corpora"):
        raw_datasets = load_text_datasets(
            train_file=data_args.train_file,
            validation_file=data_args.validation_file,
            dataset_name=data_args.dataset_name,
            dataset_config_name=data_args.dataset_config_name,
            text_column=data_args.text_column,
            streaming=data_args.streaming,
            validation_split_percentage=data_args.validation_split_percentage,
            split_validation=training_args.do_eval,  # without evaluation every record trains
            keep_linebreaks=data_args.keep_linebreaks,
            cache_dir=model_args.cache_dir,
            token=model_args.token,
        )
    config, tokenizer = load_config_and_tokenizer(model_args, raw_datasets)
    code_path = configure_mamba_code_path(config, training_args.device)
    model = load_model(model_args, config, tokenizer)
    preflight(training_args, model)  # enough disk for the checkpoints kept
    if training_args.loss_chunk_size:
        check_chunked_loss_model(model)  # before any data is tokenized; CausalLMTrainer computes the chunked loss

    block_size = data_args.block_size
    train_dataset = eval_dataset = None
    with training_args.main_process_first(desc="tokenizing and packing"):
        pack_kwargs = {
            "num_proc": data_args.preprocessing_num_workers,
            "load_from_cache_file": not data_args.overwrite_cache,
        }
        if training_args.do_train:
            if "train" not in raw_datasets:
                raise ValueError("--do_train needs training data: pass --train_file or a --dataset_name with it.")
            train_dataset = pack_dataset(raw_datasets["train"], tokenizer, block_size, **pack_kwargs)
            if data_args.max_train_samples is not None:
                train_dataset = (
                    train_dataset.take(data_args.max_train_samples)
                    if data_args.streaming
                    else train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
                )
            if not data_args.streaming and len(train_dataset) == 0:
                raise ValueError(
                    f"The training text is shorter than one block of --block_size {block_size} tokens: use a "
                    "smaller --block_size or more text."
                )
        if training_args.do_eval:
            if "validation" not in raw_datasets:
                raise ValueError("--do_eval needs validation data: pass --validation_file.")
            eval_dataset = pack_dataset(
                raw_datasets["validation"], tokenizer, block_size, keep_partial_block=True, **pack_kwargs
            )
            if data_args.max_eval_samples is not None:
                eval_dataset = (
                    eval_dataset.take(data_args.max_eval_samples)
                    if data_args.streaming
                    else eval_dataset.select(range(min(len(eval_dataset), data_args.max_eval_samples)))
                )

    step_tokens = tokens_per_optimizer_step(training_args, block_size)
    if training_args.should_log:
        summary = run_summary_lines(
            world_size=training_args.world_size,
            per_device_batch_size=training_args.per_device_train_batch_size,
            gradient_accumulation_steps=training_args.gradient_accumulation_steps,
            block_size=block_size,
            code_path=code_path,
            code_path_label=code_path_label(config.model_type) or "",
            dtype=describe_dtype(model, training_args),
        )
        for line in summary:
            logger.info("run: %s", line)

    run.save_arguments()  # run_args.json, now that the inputs are valid
    throughput = ThroughputCallback(step_tokens)
    trainer = CausalLMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=[throughput, *reliability_callbacks()],
    )
    attach_model_card(trainer)  # Trainer's create_model_card / push_to_hub write the biomamba card

    results: dict = {}
    if training_args.do_eval and training_args.eval_before_train:
        metrics = trainer.evaluate(metric_key_prefix="initial")
        metrics["initial_perplexity"] = perplexity(metrics["initial_loss"])
        trainer.log_metrics("initial", metrics)
        trainer.save_metrics("initial", metrics)
        results.update(metrics)

    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # with the tokenizer
        metrics = dict(train_result.metrics)
        metrics.update(throughput.metrics())
        metrics["train_block_size"] = block_size
        metrics["train_tokens_per_step"] = step_tokens
        metrics["train_model_parameters"] = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())
        if torch.cuda.is_available():
            metrics["train_peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if not data_args.streaming:
            metrics["train_samples"] = len(train_dataset)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    if training_args.do_eval:
        logger.info("*** Evaluate ***")
        metrics = trainer.evaluate()
        if not data_args.streaming:
            metrics["eval_samples"] = len(eval_dataset)
        metrics["perplexity"] = perplexity(metrics["eval_loss"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    if trainer.is_world_process_zero() and "perplexity" in results:
        before = results.get("initial_perplexity")
        line = f"Perplexity on the validation text: {results['perplexity']:.2f}"
        if before is not None:
            line = (
                f"Perplexity on the validation text: {before:.2f} before training, {results['perplexity']:.2f} after"
            )
        print(line, flush=True)

    if training_args.push_to_hub:
        trainer.push_to_hub()
    elif training_args.do_train:
        trainer.create_model_card()
    return results


if __name__ == "__main__":
    main()
