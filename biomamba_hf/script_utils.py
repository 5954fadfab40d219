"""Plumbing the example scripts share: argument files, logging, output-dir checks, world size, model loading."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .bioasq.formats import read_json, read_json_object

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
    if not path.is_file():
        raise FileNotFoundError(
            f"The argument file {path} does not exist or is not a file: pass the path of an existing .yaml/.json "
            "file of arguments, or give the arguments as flags."
        )
    fix = "Fix the file (argument names mapped to values, e.g. `output_dir: out`) or give the arguments as flags."
    try:
        values = read_json(path) if path.suffix == ".json" else yaml.safe_load(path.read_bytes())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}\n{fix}") from None
    except ValueError as err:  # read_json's message names the file, and the line and column
        raise ValueError(f"{err}. {fix}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}. {fix}")
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
    """``HfArgumentParser(dataclass_types)`` over ``argv``, where a first ``.yaml``/``.yml``/``.json`` file gives the
    arguments and the flags after it override them (see :func:`argv_from_file`). The example scripts' one reader of
    argument files."""
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
    if last_checkpoint is None and set(os.listdir(output_dir)) - RESTARTABLE_FILES - {LOCK_FILE}:
        raise ValueError(
            f"Output directory {output_dir} already exists and is not empty (it holds "
            f"{sorted(set(os.listdir(output_dir)) - {LOCK_FILE})[:5]}...) and no checkpoint to resume from. Use "
            "--overwrite_output_dir to write into it anyway, or choose another --output_dir."
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


def load_task_config_and_tokenizer(model_args, **config_kwargs):
    """The config and tokenizer of a fine-tuning script, after :func:`check_model_sources`: the tokenizer with pad and
    separator tokens; the config of ``model_args.model_name_or_path``, or of a random ``--model_type`` init with
    ``--config_overrides`` fitted to the tokenizer; ``config_kwargs`` (e.g. ``num_labels``) set on either. Returns
    ``(config, tokenizer)``."""
    from transformers import AutoConfig, AutoTokenizer

    from .tokenization import prepare_tokenizer_for_qa

    check_model_sources(model_args)  # folders with config.json and whole weights; Hub ids cached when offline
    hub_kwargs = model_args.hub_kwargs
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path, **hub_kwargs)
    prepare_tokenizer_for_qa(tokenizer)
    if model_args.model_name_or_path:
        return AutoConfig.from_pretrained(model_args.model_name_or_path, **config_kwargs, **hub_kwargs), tokenizer
    config = config_from_overrides(model_args.model_type, model_args.config_overrides)
    config.update(config_kwargs)
    return fit_config_to_tokenizer(config, tokenizer, model_args.config_overrides), tokenizer


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


def existing_data_path(path: str | os.PathLike, data_dir: str | os.PathLike | None, argument: str) -> Path:
    """:func:`resolve_data_path`, refusing a path that does not exist with a message that names ``argument``, the
    folder relative paths are read from and how to set it (``--data_dir`` or ``BIOMAMBA_DATA_DIR``)."""
    resolved = resolve_data_path(path, data_dir)
    if not resolved.exists():
        if Path(os.path.expanduser(str(path))).is_absolute():
            where = "no such file or folder"
        elif data_dir is None:
            where = (
                f"relative paths are read from --data_dir, and neither --data_dir nor BIOMAMBA_DATA_DIR is set, so "
                f"from the current folder {os.getcwd()}. Pass --data_dir (e.g. --data_dir ../shared/data) or set "
                "BIOMAMBA_DATA_DIR to the folder holding the data"
            )
        else:
            where = f"not found under --data_dir {data_dir} (or BIOMAMBA_DATA_DIR); check the path and --data_dir"
        raise ValueError(f"{argument} {path}: {where}.")
    return resolved


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


# --------------------------------------------------------------------------------------------------------------------
# Training arguments checked before any work
# --------------------------------------------------------------------------------------------------------------------


def check_training_arguments(args: TrainingArguments) -> None:
    """Refuse training settings that would fail (or silently train something else) only after tokenization and a
    first evaluation: a negative learning rate, batch sizes below 1, ``--max_steps 0`` (transformers trains one step),
    no step and no epoch to train (transformers records ``train_loss 0.0``), ... Called by
    :class:`biomamba_hf.trainer.BiomambaTrainingArguments` when the arguments are parsed, so nothing is written yet.

    Raises:
        ValueError: naming the flag, its value and the fix.
    """
    problems = []

    def need(condition: bool, flag: str, fix: str) -> None:
        if not condition:
            problems.append(f"--{flag} {getattr(args, flag)!r}: {fix}")

    need(args.per_device_eval_batch_size >= 1, "per_device_eval_batch_size", "use a batch size of at least 1")
    if args.do_train:
        lr = args.learning_rate
        need(lr == lr and lr >= 0, "learning_rate", "the learning rate must be >= 0 (e.g. 5e-5)")
        need(args.per_device_train_batch_size >= 1, "per_device_train_batch_size", "use a batch size of at least 1")
        need(args.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "use 1 or more")
        need(
            args.max_steps != 0 and args.max_steps >= -1,
            "max_steps",
            "pass a positive number of optimizer steps, or -1 (the default) to train --num_train_epochs epochs",
        )
        need(args.num_train_epochs >= 0, "num_train_epochs", "the number of epochs must be >= 0")
        if args.max_steps == -1:
            need(
                args.num_train_epochs > 0,
                "num_train_epochs",
                "with --max_steps -1 there is nothing to train: pass --num_train_epochs > 0 or a positive --max_steps",
            )
        need(args.weight_decay >= 0, "weight_decay", "use a value >= 0 (e.g. 0.1)")
        need(args.max_grad_norm is None or args.max_grad_norm >= 0, "max_grad_norm", "use a value >= 0 (0: no clip)")
        need(args.warmup_steps >= 0, "warmup_steps", "use a value >= 0 (a fraction < 1 or a number of steps)")
        for flag in ("adam_beta1", "adam_beta2"):
            need(0 <= getattr(args, flag) < 1, flag, "use a value in [0, 1) (e.g. 0.9, 0.999)")
        need(args.adam_epsilon >= 0, "adam_epsilon", "use a small positive value (e.g. 1e-8)")
    if problems:
        raise ValueError("Invalid training arguments (nothing was done): " + "; ".join(problems) + ".")


# --------------------------------------------------------------------------------------------------------------------
# Where the model comes from: checked before any work
# --------------------------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether Hub access is switched off (``HF_HUB_OFFLINE``, read now and as ``huggingface_hub`` read it)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _looks_like_a_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def check_model_source(
    name: str | None, argument: str, hub_args: HubLoadingArguments | None = None, kind: str = "model"
) -> None:
    """Check ``name`` (a folder or a Hub id given as ``argument``) before any work, with messages that name it.

    * A folder of a ``model`` (``--model_name_or_path``) or ``config`` (``--config_name``) needs ``config.json``; a
      model folder's ``.safetensors`` files must be whole (:func:`biomamba_hf.reliability.check_safetensors_file`).
    * A path that does not exist is named as such.
    * A Hub id while offline (``HF_HUB_OFFLINE=1``) must be in the cache: without it transformers would fail only
      after its retries, with a message that names neither the id nor the way out.
    """
    if not name:
        return
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        if kind in ("model", "config") and not (path / "config.json").is_file():
            raise ValueError(
                f"{argument} {name}: the folder has no config.json, so it is not a saved model. Pass the folder "
                "that `model.save_pretrained(folder)` wrote (config.json and model.safetensors), or a Hub id such "
                "as state-spaces/mamba-130m-hf."
            )
        if kind in ("model", "config"):
            from .convert import refuse_mamba_ssm_format

            refuse_mamba_ssm_format(path, name, argument)
        if kind == "model":
            from .reliability import check_safetensors_file

            for weights in sorted(path.glob("*.safetensors")):
                check_safetensors_file(weights)
        return
    if path.exists():
        if kind == "model":
            raise ValueError(f"{argument} {name} is a file; pass the folder of a saved model or a Hub id.")
        return
    if _looks_like_a_path(name):
        raise ValueError(f"{argument} {name}: no such folder. Pass the folder of a saved {kind} or a Hub id.")
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        wanted = "tokenizer_config.json" if kind == "tokenizer" else "config.json"
        kwargs = {"cache_dir": hub_args.cache_dir, "revision": hub_args.model_revision} if hub_args else {}
        try:
            cached = try_to_load_from_cache(name, wanted, **kwargs)
        except ValueError:  # not a valid repository id
            cached = None
        if isinstance(cached, str) and kind in ("model", "config"):
            from .convert import refuse_mamba_ssm_format

            refuse_mamba_ssm_format(Path(cached).parent, name, argument)
        if not isinstance(cached, str):
            raise ValueError(
                f"{argument} {name}: not a local folder, and HF_HUB_OFFLINE is set while the Hub id {name} is not "
                "in the cache. Offline use needs a local folder (e.g. one that `save_pretrained` wrote) or a model "
                "downloaded once before with HF_HUB_OFFLINE unset (then HF_HUB_OFFLINE=1 finds it in the cache)."
            )


def check_model_sources(model_args) -> None:
    """:func:`check_model_source` on the ``model_name_or_path``, ``config_name`` and ``tokenizer_name`` of a
    script's model arguments (those it has)."""
    for attribute, kind in (
        ("model_name_or_path", "model"),
        ("config_name", "config"),
        ("tokenizer_name", "tokenizer"),
    ):
        check_model_source(getattr(model_args, attribute, None), f"--{attribute}", model_args, kind)


# --------------------------------------------------------------------------------------------------------------------
# One run per output folder: the lock
# --------------------------------------------------------------------------------------------------------------------

#: The lock file of a run in its output folder (the leading ``_`` keeps ``Trainer.push_to_hub`` from uploading it).
LOCK_FILE = "_biomamba_run.lock"
#: A lock file that cannot be read (its holder died between creating and writing it) is stale after this long.
_UNREADABLE_LOCK_SECONDS = 60
_HELD_LOCKS: dict[str, tuple[Path, Path | None]] = {}


class OutputDirInUseError(RuntimeError):
    """Another run holds the output folder's lock; the message names it (PID, host, start time, command)."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks (Linux ``/proc``), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _stale_reason(holder: dict | None, path: Path) -> str | None:
    """Why the lock at ``path`` (contents ``holder``) no longer holds, or ``None`` when its run may be alive."""
    import socket
    import time

    if holder is None:
        age = time.time() - path.stat().st_mtime
        return f"it is unreadable and {age:.0f} s old" if age > _UNREADABLE_LOCK_SECONDS else None
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None  # another machine: we cannot tell
    pid = holder["pid"]
    if not _pid_alive(pid):
        return f"process {pid} on this host has ended"
    if holder.get("process_start") and _process_start(pid) not in (None, holder["process_start"]):
        return f"process {pid} has ended (its PID now belongs to another process)"
    return None


def _describe_holder(holder: dict | None) -> str:
    if holder is None:
        return "a run whose lock file is still being written"
    import time

    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return (
        f"process {holder.get('pid')} on host {holder.get('host')} (started {started}: "
        f"{holder.get('command') or 'unknown command'})"
    )


def acquire_output_dir_lock(output_dir: str | os.PathLike) -> Path:
    """Take the lock of ``output_dir`` for this process: :data:`LOCK_FILE`, created atomically (``O_EXCL``) with the
    holder's PID, host, start time and command. A stale lock (its process on this host has ended) is replaced with a
    warning; a live one is an :class:`OutputDirInUseError` naming its holder. Released by
    :func:`release_output_dir_lock` (scripts: :func:`releases_output_dir_locks`, and at exit)."""
    import atexit
    import socket
    import time

    output_dir = Path(output_dir).absolute()
    key = str(output_dir)
    if key in _HELD_LOCKS:
        raise OutputDirInUseError(f"{output_dir} is already locked by another run in this process ({os.getpid()}).")
    created = next((p for p in [output_dir, *output_dir.parents] if p.parent.exists()), None)
    created = created if created is not None and not created.exists() else None
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.time(),
        "process_start": _process_start(os.getpid()),
        "command": " ".join(sys.argv)[:1000],
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_json_object(path)
            try:
                stale = _stale_reason(holder, path)
            except FileNotFoundError:
                continue  # released meanwhile
            if stale is None:
                raise OutputDirInUseError(
                    f"--output_dir {output_dir} is in use by another run: {_describe_holder(holder)}. Two runs in "
                    f"one folder overwrite each other's checkpoints. Wait for it to end or choose another "
                    f"--output_dir; if that run is gone (e.g. on another machine), delete {path}."
                ) from None
            logging.getLogger(__name__).warning(
                "Replacing the stale lock %s of %s: %s.", path, _describe_holder(holder), stale
            )
            aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
            try:
                os.rename(path, aside)  # atomic: of two runs replacing it, one wins
                aside.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        if not _HELD_LOCKS:
            atexit.register(release_all_output_dir_locks)
        _HELD_LOCKS[key] = (path, created)
        return path
    raise OutputDirInUseError(f"--output_dir {output_dir}: its lock {path} keeps changing hands; try again.")


def release_output_dir_lock(output_dir: str | os.PathLike) -> None:
    """Release this process's lock of ``output_dir``; a folder the lock created and nothing else filled goes too."""
    entry = _HELD_LOCKS.pop(str(Path(output_dir).absolute()), None)
    if entry is None:
        return
    path, created = entry
    holder = read_json_object(path)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink()
    if created is not None:  # remove the folders the lock made, when nothing else was written into them
        folder = path.parent
        while True:
            try:
                folder.rmdir()
            except OSError:
                break
            if folder == created:
                break
            folder = folder.parent


def release_all_output_dir_locks() -> None:
    for key in list(_HELD_LOCKS):
        release_output_dir_lock(key)


def releases_output_dir_locks(main):
    """Decorator for a script's ``main``: the output-folder locks it took are released when it returns or raises."""
    import functools

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        before = set(_HELD_LOCKS)
        try:
            return main(*args, **kwargs)
        finally:
            for key in set(_HELD_LOCKS) - before:
                release_output_dir_lock(key)

    return wrapper


# --------------------------------------------------------------------------------------------------------------------
# Reruns: the recorded arguments
# --------------------------------------------------------------------------------------------------------------------

#: The arguments file a training run records in its output folder (read by the model card).
RUN_ARGS_FILE = "run_args.json"
#: Arguments that may differ between the runs of one output folder (a first run and its resumes): where files go,
#: logging, loading and the Hub, data loader workers and caches, evaluation after training. Every other recorded
#: argument must match for a rerun to resume (see :func:`check_recorded_arguments`). ``lineage`` is derived.
RERUN_IGNORED_ARGUMENTS = frozenset(
    {
        # where things go, how the run is called
        "output_dir", "logging_dir", "run_name", "overwrite_output_dir", "allow_changed_arguments",
        "resume_from_checkpoint", "cache_dir", "lineage",
        # secrets and the Hub
        "token", "hub_token", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push",
        "hub_revision", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
        # logging and progress
        "report_to", "disable_tqdm", "log_level", "log_level_replica", "log_on_each_node", "logging_steps",
        "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "skip_memory_metrics",
        # data loading, caches and process plumbing
        "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_pin_memory",
        "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "preprocessing_num_workers",
        "overwrite_cache", "local_rank", "ddp_timeout", "save_total_limit",
        # evaluation and prediction, which do not change what is trained
        "do_eval", "do_predict", "eval_before_train", "per_device_eval_batch_size", "eval_accumulation_steps",
        "max_eval_samples", "test_dirs", "predict_files", "n_best_size", "max_answer_length",
    }
)  # fmt: skip


def run_arguments_dict(*arguments) -> dict:
    """The argument dataclasses merged as ``run_args.json`` records them, in their JSON form: the one copy of that
    rule (:func:`biomamba_hf.hub.save_run_arguments` writes it, :func:`check_recorded_arguments` compares with it).

    ``TrainingArguments`` give ``to_dict()`` plus ``world_size``; other dataclasses ``dataclasses.asdict``. Later
    dataclasses win on repeated names. Anything else is refused with a ``ValueError``.
    """
    import dataclasses

    merged: dict = {}
    for argument in arguments:
        if hasattr(argument, "to_dict"):
            values = argument.to_dict()
            if hasattr(argument, "world_size"):
                values["world_size"] = argument.world_size
        elif dataclasses.is_dataclass(argument):
            values = dataclasses.asdict(argument)
        else:
            raise ValueError(f"save_run_arguments takes argument dataclasses, got {type(argument).__name__}.")
        merged.update(values)
    return json.loads(json.dumps(merged, sort_keys=True, default=str))


def changed_arguments(recorded: dict, current: dict) -> dict[str, tuple]:
    """``{name: (recorded, current)}`` for the arguments both record that differ, leaving out
    :data:`RERUN_IGNORED_ARGUMENTS` and redacted values.

    >>> changed_arguments({"learning_rate": 0.001, "output_dir": "a", "seed": 1}, {"learning_rate": 0.01,
    ...                   "output_dir": "b", "seed": 1})
    {'learning_rate': (0.001, 0.01)}
    """
    return {
        name: (recorded[name], current[name])
        for name in sorted(recorded.keys() & current.keys())
        if name not in RERUN_IGNORED_ARGUMENTS and recorded[name] != "<redacted>" and recorded[name] != current[name]
    }


def check_recorded_arguments(training_args: TrainingArguments, *arguments, resuming: bool = True) -> bool:
    """Compare a run's arguments with those recorded in its output folder's ``run_args.json``, before any work.

    Returns whether the run should record its arguments: yes when nothing is recorded, when the run starts over
    (``--overwrite_output_dir``, or nothing to resume: ``resuming`` False) or when changes were allowed; no when the
    recorded run is resumed or rerun with the same arguments (the record already says what ran).

    Raises:
        ValueError: a resume with changed arguments (listed ``old -> new``) without ``--allow_changed_arguments``.
    """
    path = Path(training_args.output_dir) / RUN_ARGS_FILE
    if training_args.overwrite_output_dir or not resuming or not path.is_file():
        return True
    try:
        recorded = read_json(path)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{err}, so this rerun cannot be compared with the run recorded in {path.parent}. Pass "
            "--overwrite_output_dir to start over in that folder, or choose another --output_dir."
        ) from None
    changes = changed_arguments(recorded, run_arguments_dict(*arguments))
    if not changes:
        return False
    listing = "; ".join(f"--{name} {old!r} -> {new!r}" for name, (old, new) in changes.items())
    if getattr(training_args, "allow_changed_arguments", False):
        logging.getLogger(__name__).warning(
            "Resuming the run of %s with changed arguments (--allow_changed_arguments): %s. run_args.json and the "
            "card record the new values.",
            training_args.output_dir,
            listing,
        )
        return True
    raise ValueError(
        f"--output_dir {training_args.output_dir} holds a run recorded with other arguments ({RUN_ARGS_FILE}), and "
        f"this command would resume it: {listing}. Rerun with the recorded values to resume it, choose another "
        "--output_dir, pass --overwrite_output_dir to start over in that folder, or --allow_changed_arguments to "
        "continue the recorded run with the new values (its optimizer and schedule state come from the checkpoint)."
    )


@dataclass
class RunStart:
    """What :func:`start_run` found: the checkpoint to resume from, and whether to record the run's arguments;
    :meth:`save_arguments` records them."""

    checkpoint: str | None
    record_arguments: bool
    training_args: TrainingArguments = field(repr=False)
    #: Every argument dataclass, ``training_args`` last, in the order ``run_args.json`` merges them.
    arguments: tuple = field(repr=False)

    def save_arguments(self) -> Path | None:
        """Write ``run_args.json`` (:func:`biomamba_hf.hub.save_run_arguments`) of a training run, from the process
        that saves, unless :func:`check_recorded_arguments` found the record already says what runs. Scripts call it
        once their inputs are valid (data read, model loaded), before training; returns the file written, if any."""
        args = self.training_args
        if not (args.do_train and args.should_save and self.record_arguments):
            return None
        from .hub import save_run_arguments

        return save_run_arguments(args.output_dir, *self.arguments)


def start_run(training_args: TrainingArguments, model_args=None, *arguments) -> RunStart:
    """Everything a script checks before any work, in order, writing nothing but its lock:

    the output folder is writable
    (:func:`biomamba_hf.reliability.preflight`); the folder's lock (:func:`acquire_output_dir_lock`, main process
    only); the checkpoint to resume from (:func:`check_output_dir`); the recorded arguments
    (:func:`check_recorded_arguments`). The lock is released when one of these fails, else when ``main`` ends
    (:func:`releases_output_dir_locks`). Training arguments were checked when they were parsed
    (:func:`check_training_arguments`). ``run_args.json`` is written later, by :meth:`RunStart.save_arguments`, with
    the arguments compared here (``model_args``, ``arguments``, ``training_args``, in that order).
    """
    from .reliability import preflight

    preflight(training_args)
    all_arguments = (*(a for a in (model_args, *arguments) if a is not None), training_args)
    locked = training_args.process_index == 0
    if locked:
        acquire_output_dir_lock(training_args.output_dir)
    try:
        checkpoint = check_output_dir(training_args)
        record = True
        if training_args.do_train:
            record = check_recorded_arguments(training_args, *all_arguments, resuming=checkpoint is not None)
    except BaseException:
        if locked:
            release_output_dir_lock(training_args.output_dir)
        raise
    return RunStart(checkpoint, record, training_args, all_arguments)
