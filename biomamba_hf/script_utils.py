"""Plumbing the example scripts share: argument files, logging, output-dir checks, world size, model loading."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import TrainingArguments


@dataclass
class HubLoadingArguments:
    """How the example scripts load a checkpoint from the Hub or a folder: cache, revision, token, pickle weights."""

    cache_dir: str | None = field(default=None, metadata={"help": "Where to store files downloaded from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Model version: branch, tag or commit id."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the one of `hf auth login`)."})
    allow_pickle_weights: bool = field(
        default=False,
        metadata={
            "help": "Also load pickle weights (pytorch_model.bin) when a checkpoint has no safetensors. Pickle can "
            "run code: only for sources you trust."
        },
    )

    @property
    def hub_kwargs(self) -> dict:
        """``from_pretrained`` keyword arguments for the Hub: cache folder, revision and token."""
        return {"cache_dir": self.cache_dir, "revision": self.model_revision, "token": self.token}


def argv_from_file(path: str | os.PathLike) -> list[str]:
    """The command-line form of a ``.yaml``/``.json`` argument file, so that arguments after it can override it.

    Lists become several values after one flag, mappings JSON strings, ``null`` values are left out.

    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "args.yaml"
    ...     _ = path.write_text("test_dirs: [bioasq/4b, bioasq/5b]\\ndo_train: true\\nlr_scheduler_kwargs: {min_lr: 0.1}\\n")
    ...     argv_from_file(path)
    ['--test_dirs', 'bioasq/4b', 'bioasq/5b', '--do_train', 'True', '--lr_scheduler_kwargs', '{"min_lr": 0.1}']
    """
    import yaml

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_arguments(dataclass_types: tuple, argv: list[str]) -> tuple:
    """``HfArgumentParser(dataclass_types)`` over ``argv``, where a first ``.yaml``/``.json`` file gives the arguments
    and the flags after it override them (see :func:`argv_from_file`)."""
    from transformers import HfArgumentParser

    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = argv_from_file(argv[0]) + argv[1:]
    return HfArgumentParser(dataclass_types).parse_args_into_dataclasses(args=argv)


def setup_logging(training_args: TrainingArguments, script_logger: logging.Logger) -> None:
    """Logging for the example scripts, as transformers' ``run_*.py`` do it.

    transformers and datasets log at ``training_args``' process level (``--log_level``, passive: warnings); the
    script's own summary (data, code path, results) and ``biomamba_hf`` log at INFO on the main process only.
    """
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    own_level = logging.INFO if training_args.should_log else log_level
    script_logger.setLevel(own_level)
    logging.getLogger("biomamba_hf").setLevel(own_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def launched_processes() -> int:
    """The number of processes the launcher (``accelerate launch``, ``torchrun``) started, from its environment."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def check_world_size(args: TrainingArguments) -> None:
    """Fail when the launcher started several processes but training would run in each one alone."""
    launched = launched_processes()
    if launched > 1 and args.world_size != launched:
        raise ValueError(
            f"Launched as {launched} processes (WORLD_SIZE={launched}) but the training arguments set up "
            f"{args.world_size} (distributed type {args.distributed_state.distributed_type if args.distributed_state else None}): "
            "each process would train alone. On a machine without GPUs pass --use_cpu; with GPUs check the "
            "accelerate config."
        )


def gradient_accumulation_for(
    tokens_per_step: int, block_size: int, per_device_batch_size: int, world_size: int = 1
) -> int:
    """Gradient accumulation steps that make one optimizer step exactly ``tokens_per_step`` tokens.

    >>> gradient_accumulation_for(524288, block_size=2048, per_device_batch_size=16, world_size=8)
    2
    >>> gradient_accumulation_for(524288, block_size=2048, per_device_batch_size=16, world_size=1)
    16

    Raises:
        ValueError: when ``tokens_per_step`` is not a multiple of the tokens of one micro-step on all processes;
            the message lists per-device batch sizes that would work.
    """
    for name, value in (
        ("block_size", block_size),
        ("per_device_train_batch_size", per_device_batch_size),
        ("world size", world_size),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be positive to derive gradient accumulation, got {value}")
    micro_step = block_size * per_device_batch_size * world_size
    if tokens_per_step % micro_step:
        hint = ""
        if tokens_per_step % (block_size * world_size) == 0:
            sequences = tokens_per_step // (block_size * world_size)
            working = [b for b in range(1, min(sequences, 64) + 1) if sequences % b == 0]
            hint = f" Per-device batch sizes that divide it: {working}."
        else:
            hint = (
                f" It is not even a multiple of block_size x world size = {block_size * world_size}: change "
                "--tokens_per_step or --block_size."
            )
        raise ValueError(
            f"--tokens_per_step {tokens_per_step} is not a multiple of block_size ({block_size}) x "
            f"per_device_train_batch_size ({per_device_batch_size}) x world size ({world_size}) = {micro_step} "
            f"tokens per micro-step.{hint}"
        )
    return tokens_per_step // micro_step


def tokens_per_optimizer_step(args: TrainingArguments, block_size: int) -> int:
    """Tokens in one optimizer step: block size x per-device batch x gradient accumulation x world size."""
    return block_size * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


#: Files written before the first checkpoint (arguments, evaluation before training); they do not block a restart.
RESTARTABLE_FILES = frozenset({"run_args.json", "initial_results.json", "all_results.json"})


def check_output_dir(args: TrainingArguments) -> str | None:
    """Apply run_clm's rules to ``args.output_dir`` before any training; return the checkpoint to resume from.

    * ``--resume_from_checkpoint`` given: it is returned as is.
    * The directory holds ``checkpoint-*`` folders and ``--overwrite_output_dir`` is not set: the last *complete*
      one (see :func:`biomamba_hf.reliability.last_complete_checkpoint`; a half-written checkpoint is never resumed).
    * The directory is non-empty otherwise, without ``--overwrite_output_dir``: ``ValueError``.
    """
    from .reliability import last_complete_checkpoint

    if args.resume_from_checkpoint is not None:
        return args.resume_from_checkpoint
    output_dir = args.output_dir
    if not args.do_train or args.overwrite_output_dir or not os.path.isdir(output_dir):
        return None
    last_checkpoint = last_complete_checkpoint(output_dir)
    # Files a run writes before its first checkpoint: a run killed that early simply starts again.
    if last_checkpoint is None and set(os.listdir(output_dir)) - RESTARTABLE_FILES:
        raise ValueError(
            f"Output directory {output_dir} already exists and is not empty (it holds "
            f"{sorted(os.listdir(output_dir))[:5]}...) and no checkpoint to resume from. Use --overwrite_output_dir "
            "to write into it anyway, or choose another --output_dir."
        )
    return last_checkpoint


def configure_mamba_code_path(config, device) -> str | None:
    """Pick the fastest portable scan for a Mamba ``config`` on ``device`` and describe the path in use.

    Without the CUDA kernels, transformers' default PyTorch loop has a backward pass that grows quadratically with
    sequence length; when the ``mambapy`` package is importable, ``config.use_mambapy`` is switched on so that its
    parallel scan is used instead. Returns :func:`biomamba_hf.ops.mamba_code_path` for the config's family (log it
    under :func:`biomamba_hf.ops.code_path_label`), ``None`` for a model that is neither Mamba nor Mamba-2.
    """
    import importlib.util

    from .ops import cuda_kernels_available, mamba_code_path

    device_type = getattr(device, "type", str(device)).split(":")[0]
    is_mamba = hasattr(config, "use_mambapy")
    on_kernels = device_type == "cuda" and cuda_kernels_available()
    if is_mamba and not on_kernels and importlib.util.find_spec("mambapy") is not None:
        config.use_mambapy = True
    path = mamba_code_path(device, getattr(config, "model_type", None))
    if path is None:
        return None
    if is_mamba and not on_kernels:
        path += f" (use_mambapy={config.use_mambapy})"
    return path


def load_task_model(auto_class, model_args, config, tokenizer, device):
    """The model of a fine-tuning script: ``model_args.model_name_or_path`` loaded with ``config`` (safetensors only
    unless ``--allow_pickle_weights``, see :func:`biomamba_hf.reliability.from_pretrained_safely`), or a random init
    of ``config``; the portable scan is switched on and the Mamba code path picked for ``device``; the tokenizer gets
    its pad and separator tokens (the embeddings grow when they have no room). Returns ``(model, code path)``."""
    from .ops import enable_fast_scan
    from .reliability import from_pretrained_safely
    from .tokenization import prepare_tokenizer_for_qa

    # The package's portable scan on CPU (idempotent; BIOMAMBA_FAST_SCAN=0 opts out; CUDA kernels keep precedence).
    enable_fast_scan()
    code_path = configure_mamba_code_path(config, device)
    if model_args.model_name_or_path:
        model = from_pretrained_safely(
            auto_class,
            model_args.model_name_or_path,
            allow_pickle=model_args.allow_pickle_weights,
            config=config,
            **model_args.hub_kwargs,
        )
    else:
        model = auto_class.from_config(config)
    prepare_tokenizer_for_qa(tokenizer, model)
    return model, code_path


def run_summary_lines(
    *,
    world_size: int,
    per_device_batch_size: int,
    gradient_accumulation_steps: int,
    block_size: int,
    code_path: str | None,
    dtype: str,
    code_path_label: str = "Mamba code path",
) -> list[str]:
    """The start-of-run summary, one ``name: value`` line each; no code-path line when ``code_path`` is ``None`` (a
    model that is not Mamba). ``code_path_label`` names the family (:func:`biomamba_hf.ops.code_path_label`).

    >>> for line in run_summary_lines(world_size=8, per_device_batch_size=16, gradient_accumulation_steps=2,
    ...                               block_size=2048, code_path="CUDA kernels", dtype="bfloat16 autocast"):
    ...     print(line)
    world size: 8
    per-device train batch: 16 sequences
    gradient accumulation: 2
    block size: 2048 tokens
    tokens per optimizer step: 524,288 (2048 x 16 x 2 x 8)
    Mamba code path: CUDA kernels
    dtype: bfloat16 autocast
    """
    tokens = block_size * per_device_batch_size * gradient_accumulation_steps * world_size
    return [
        f"world size: {world_size}",
        f"per-device train batch: {per_device_batch_size} sequences",
        f"gradient accumulation: {gradient_accumulation_steps}",
        f"block size: {block_size} tokens",
        f"tokens per optimizer step: {tokens:,} ({block_size} x {per_device_batch_size} x "
        f"{gradient_accumulation_steps} x {world_size})",
        *([f"{code_path_label}: {code_path}"] if code_path is not None else []),
        f"dtype: {dtype}",
    ]


def describe_dtype(model, args: TrainingArguments) -> str:
    """``"weights float32, autocast bfloat16"`` and the like."""
    weights = str(getattr(model, "dtype", "unknown")).replace("torch.", "")
    if args.bf16:
        return f"weights {weights}, autocast bfloat16"
    if args.fp16:
        return f"weights {weights}, autocast float16"
    return f"weights {weights}, no autocast"


def config_from_overrides(model_type: str, config_overrides: str | None = None):
    """A fresh config of ``model_type`` built with ``config_overrides`` (``"hidden_size=64,num_hidden_layers=2"``).

    Unlike ``PretrainedConfig.update_from_string`` on a finished config, the overrides are passed to the constructor,
    so that derived attributes follow them (``MambaConfig`` derives ``intermediate_size`` and ``time_step_rank`` from
    ``hidden_size``). Values are typed like the defaults (``true``/``false``, int, float, str).

    >>> config = config_from_overrides("mamba", "hidden_size=64,num_hidden_layers=2")
    >>> config.hidden_size, config.intermediate_size, config.time_step_rank
    (64, 128, 4)
    """
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"--model_type {model_type!r} is not a transformers model type; use e.g. `mamba`.")
    config_class = CONFIG_MAPPING[model_type]
    if not config_overrides:
        return config_class()
    typed = config_class()
    keys = []
    for item in config_overrides.split(","):
        if "=" not in item:
            raise ValueError(
                f"--config_overrides {config_overrides!r}: {item!r} is not of the form key=value "
                "(e.g. hidden_size=64,num_hidden_layers=2)"
            )
        key = item.split("=", 1)[0].strip()
        if not hasattr(typed, key):
            raise ValueError(
                f"--config_overrides {config_overrides!r}: {config_class.__name__} has no attribute {key!r}"
            )
        keys.append(key)
    typed.update_from_string(",".join(item.strip() for item in config_overrides.split(",")))
    return config_class(**{key: getattr(typed, key) for key in keys})


def resolve_data_path(path: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    """``path`` as given when absolute (or when there is no ``data_dir``), else relative to ``data_dir``.

    >>> str(resolve_data_path("bioasq/4b", "data")), str(resolve_data_path("/x/4b", "data"))
    ('data/bioasq/4b', '/x/4b')
    """
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute() or data_dir is None:
        return path
    return Path(data_dir) / path


def _override_keys(config_overrides: str | None) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in (config_overrides or "").split(",") if item.strip()}


def fit_config_to_tokenizer(config, tokenizer, config_overrides: str | None = None, *, resize_vocab: bool = True):
    """Make the config of a model trained from scratch match its tokenizer; the one random-init path of the scripts.

    ``vocab_size`` becomes ``len(tokenizer)`` rounded up to a multiple of 8 (as Mamba checkpoints pad it), unless
    ``config_overrides`` sets it or ``resize_vocab`` is False; the tokenizer's bos/eos/pad ids are recorded. Returns
    ``config``.

    >>> from transformers import MambaConfig
    >>> class Tokenizer:
    ...     bos_token_id, eos_token_id, pad_token_id = 0, 0, None
    ...     def __len__(self):
    ...         return 1001
    >>> config = fit_config_to_tokenizer(MambaConfig(), Tokenizer())
    >>> config.vocab_size, config.bos_token_id
    (1008, 0)
    >>> fit_config_to_tokenizer(MambaConfig(vocab_size=500), Tokenizer(), "vocab_size=500").vocab_size
    500
    """
    if resize_vocab and "vocab_size" not in _override_keys(config_overrides):
        config.vocab_size = -(-len(tokenizer) // 8) * 8
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(config, name, value)
    return config
