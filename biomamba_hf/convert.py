"""Convert checkpoints saved by mamba_ssm (``MambaLMHeadModel.save_pretrained``) into transformers folders.

mamba_ssm stores a model as a ``config.json`` with its own keys (``d_model``, ``n_layer``, ``ssm_cfg``, ...) and a
pickled ``pytorch_model.bin``; ``AutoModel`` cannot load that. :func:`convert_mamba_ssm_checkpoint` reads such a
folder (or Hub repository), checks that transformers' ``MambaForCausalLM`` (Mamba-1 layers) or ``Mamba2ForCausalLM``
(Mamba-2 layers) computes exactly the same function, and writes a folder that ``AutoModelForCausalLM`` and the
package's task heads load: ``config.json``, ``model.safetensors`` (every tensor bit for bit, in its original dtype
unless ``dtype`` is given) and the tokenizer when one is present or given.

Configurations transformers cannot represent are refused with the field and its value, before anything is written:
attention layers (``attn_layer_idx``), MLP blocks (``d_intermediate > 0``), LayerNorm instead of RMSNorm, and the
Mamba-2 options transformers' mixer does not implement (``rmsnorm=False``, ``norm_before_gate=True``,
``D_has_hdim=True``, ``d_ssm`` smaller than the inner width).

The mamba_ssm sources this mirrors: ``models/config_mamba.py``, ``models/mixer_seq_simple.py``, ``modules/block.py``,
``modules/mamba_simple.py`` and ``modules/mamba2.py`` (mamba_ssm 2.3.2).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bioasq.formats import read_json
from .script_utils import hub_offline

logger = logging.getLogger(__name__)

__all__ = ["ConversionError", "convert_mamba_ssm_checkpoint", "mamba_ssm_config_to_transformers", "main"]

#: Defaults of mamba_ssm's ``MambaConfig`` dataclass (``models/config_mamba.py``): keys a config.json leaves out.
MAMBA_SSM_CONFIG_DEFAULTS: dict[str, Any] = {
    "d_model": 2560,
    "d_intermediate": 0,
    "n_layer": 64,
    "vocab_size": 50277,
    "ssm_cfg": {},
    "attn_layer_idx": [],
    "attn_cfg": {},
    "rms_norm": True,
    "residual_in_fp32": True,
    "fused_add_norm": True,
    "pad_vocab_size_multiple": 8,
    "tie_embeddings": True,
}

#: Keys other tools add to a config.json that carry no architecture (mamba_ssm itself would reject them).
METADATA_KEYS = {"_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype"}

#: ``Mamba(...)`` keyword arguments (``modules/mamba_simple.py``) with their defaults.
MAMBA1_DEFAULTS: dict[str, Any] = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init": "random",
    "dt_scale": 1.0,
    "dt_init_floor": 1e-4,
    "conv_bias": True,
    "bias": False,
    "use_fast_path": True,
}

#: ``Mamba2(...)`` keyword arguments (``modules/mamba2.py``) with their defaults.
MAMBA2_DEFAULTS: dict[str, Any] = {
    "d_state": 128,
    "d_conv": 4,
    "conv_init": None,
    "expand": 2,
    "headdim": 64,
    "d_ssm": None,
    "ngroups": 1,
    "A_init_range": (1, 16),
    "D_has_hdim": False,
    "rmsnorm": True,
    "norm_before_gate": False,
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init_floor": 1e-4,
    "dt_limit": (0.0, math.inf),
    "bias": False,
    "conv_bias": True,
    "chunk_size": 256,
    "use_mem_eff_path": True,
    "sequence_parallel": True,
}

#: Fields that only shape the random initialisation or pick a kernel; they do not change what a trained model computes.
IGNORED_FIELDS = {
    "Mamba1": {"fused_add_norm", "use_fast_path"},
    "Mamba2": {"fused_add_norm", "use_mem_eff_path", "sequence_parallel", "conv_init", "A_init_range"},
}

#: Files in a mamba_ssm folder or Hub repository that the conversion reads.
_SOURCE_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "*.txt", "*.model"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
#: Norm eps in mamba_ssm: ``MambaLMHeadModel`` never passes ``norm_epsilon`` (so 1e-5) and ``Mamba2`` hard-codes 1e-5.
_NORM_EPS = 1e-5


class ConversionError(ValueError):
    """A source that cannot be converted: the message names the file or field, its value, and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


def _as_int(value: Any, field: str, where: str) -> int:
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise ConversionError(f"{where}: {field}={value!r} must be a whole number")
    return int(value)


def _family_and_ssm_cfg(config: dict, where: str) -> tuple[str, dict]:
    ssm_cfg = dict(config.get("ssm_cfg") or {})
    layer = ssm_cfg.pop("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ConversionError(
            f"{where}: ssm_cfg['layer']={layer!r} is not a layer transformers implements; "
            "only 'Mamba1' (MambaForCausalLM) and 'Mamba2' (Mamba2ForCausalLM) can be converted"
        )
    defaults = MAMBA1_DEFAULTS if layer == "Mamba1" else MAMBA2_DEFAULTS
    unknown = sorted(set(ssm_cfg) - set(defaults))
    if unknown:
        raise ConversionError(
            f"{where}: ssm_cfg has keys that mamba_ssm's {layer} layer does not take: {unknown}; "
            f"known keys: {sorted(defaults)}"
        )
    return layer, {**defaults, **ssm_cfg}


def is_mamba_ssm_config(config: Any) -> bool:
    """Whether a ``config.json`` dict is mamba_ssm's own format (``d_model``, ``n_layer``, no ``model_type``).

    >>> is_mamba_ssm_config({"d_model": 768, "n_layer": 24, "ssm_cfg": {"layer": "Mamba2"}})
    True
    >>> is_mamba_ssm_config({"model_type": "mamba2", "hidden_size": 768})
    False
    """
    return isinstance(config, dict) and "model_type" not in config and {"d_model", "n_layer"} <= set(config)


def refuse_mamba_ssm_format(folder: str | os.PathLike, name: str, argument: str | None = None) -> None:
    """Raise a ``ValueError`` naming the ``biomamba-convert`` command when ``folder/config.json`` is in mamba_ssm's
    format (e.g. ``state-spaces/mamba2-130m``), which transformers cannot load. ``argument`` names the flag."""
    from .bioasq.formats import read_json_object

    config_file = Path(folder) / "config.json"
    if is_mamba_ssm_config(read_json_object(config_file)):
        given = f"{argument} {name}" if argument else name
        raise ValueError(
            f"{given} is a checkpoint in mamba_ssm's own format ({config_file} has d_model / n_layer and no "
            f"model_type), which transformers cannot load. Convert it once with `biomamba-convert {name} DESTINATION` "
            "(add `--tokenizer EleutherAI/gpt-neox-20b` when it ships no tokenizer) and load DESTINATION."
        )


def mamba_ssm_config_to_transformers(config: dict, where: str = "config.json") -> tuple[str, dict]:
    """Map a mamba_ssm ``config.json`` dict to ``("mamba" | "mamba2", kwargs for MambaConfig / Mamba2Config)``.

    Raises :class:`ConversionError` naming the field and value for anything transformers cannot represent. No heavy
    imports: the returned kwargs are plain values.

    >>> family, kwargs = mamba_ssm_config_to_transformers(
    ...     {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"},
    ...      "pad_vocab_size_multiple": 16, "tie_embeddings": True})
    >>> family, kwargs["vocab_size"], kwargs["num_heads"], kwargs["head_dim"], kwargs["n_groups"]
    ('mamba2', 50288, 24, 64, 1)
    """
    if not isinstance(config, dict):
        raise ConversionError(f"{where}: expected a JSON object, got {type(config).__name__}")
    if "model_type" in config or "hidden_size" in config:
        raise ConversionError(
            f"{where} is already a transformers config (model_type={config.get('model_type')!r}); "
            "load the folder with AutoModelForCausalLM.from_pretrained instead of converting it"
        )
    unknown = sorted(set(config) - set(MAMBA_SSM_CONFIG_DEFAULTS) - METADATA_KEYS)
    if unknown:
        raise ConversionError(
            f"{where}: keys {unknown} are not fields of mamba_ssm's MambaConfig "
            f"(known: {sorted(MAMBA_SSM_CONFIG_DEFAULTS)}); is this a mamba_ssm checkpoint?"
        )
    cfg = {**MAMBA_SSM_CONFIG_DEFAULTS, **config}

    if cfg["attn_layer_idx"]:
        raise ConversionError(
            f"{where}: attn_layer_idx={cfg['attn_layer_idx']!r} makes a hybrid model with attention layers "
            f"(attn_cfg={cfg['attn_cfg']!r}); transformers' Mamba and Mamba2 models have no attention layers"
        )
    d_intermediate = _as_int(cfg["d_intermediate"], "d_intermediate", where)
    if d_intermediate != 0:
        raise ConversionError(
            f"{where}: d_intermediate={d_intermediate} adds a gated MLP after every mixer; transformers' Mamba and "
            "Mamba2 blocks have none (only d_intermediate=0 converts)"
        )
    if not cfg["rms_norm"]:
        raise ConversionError(
            f"{where}: rms_norm={cfg['rms_norm']!r} means LayerNorm (with a bias) in every block; transformers' "
            "Mamba and Mamba2 models use RMSNorm only"
        )
    if cfg["attn_cfg"]:
        logger.info("%s: attn_cfg is set but attn_layer_idx is empty, so no layer uses it; ignored", where)

    d_model = _as_int(cfg["d_model"], "d_model", where)
    n_layer = _as_int(cfg["n_layer"], "n_layer", where)
    vocab_size = _as_int(cfg["vocab_size"], "vocab_size", where)
    multiple = _as_int(cfg["pad_vocab_size_multiple"], "pad_vocab_size_multiple", where)
    if min(d_model, n_layer, vocab_size, multiple) < 1:
        raise ConversionError(
            f"{where}: d_model={d_model}, n_layer={n_layer}, vocab_size={vocab_size} and "
            f"pad_vocab_size_multiple={multiple} must all be positive"
        )
    # MambaLMHeadModel pads the embedding (and lm_head) to a multiple of pad_vocab_size_multiple.
    padded_vocab = vocab_size + (-vocab_size) % multiple

    layer, ssm = _family_and_ssm_cfg(cfg, where)
    for field in ("d_state", "d_conv"):
        ssm[field] = _as_int(ssm[field], f"ssm_cfg[{field!r}]", where)
    expand = _as_int(ssm["expand"], "ssm_cfg['expand']", where)  # transformers' configs take a whole number
    if expand < 1 or ssm["d_state"] < 1 or ssm["d_conv"] < 1:
        raise ConversionError(
            f"{where}: ssm_cfg expand={expand}, d_state={ssm['d_state']} and d_conv={ssm['d_conv']} must be positive"
        )
    d_inner = expand * d_model
    common = {
        "vocab_size": padded_vocab,
        "hidden_size": d_model,
        "state_size": ssm["d_state"],
        "num_hidden_layers": n_layer,
        "layer_norm_epsilon": _NORM_EPS,
        "expand": expand,
        "conv_kernel": ssm["d_conv"],
        "use_bias": bool(ssm["bias"]),
        "use_conv_bias": bool(ssm["conv_bias"]),
        "hidden_act": "silu",
        "residual_in_fp32": bool(cfg["residual_in_fp32"]),
        "time_step_min": float(ssm["dt_min"]),
        "time_step_max": float(ssm["dt_max"]),
        "time_step_floor": float(ssm["dt_init_floor"]),
        "tie_word_embeddings": bool(cfg["tie_embeddings"]),
    }
    if layer == "Mamba1":
        dt_rank = ssm["dt_rank"]
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        dt_rank = _as_int(dt_rank, "ssm_cfg['dt_rank']", where)
        if ssm["dt_init"] not in ("random", "constant"):
            raise ConversionError(f"{where}: ssm_cfg['dt_init']={ssm['dt_init']!r} must be 'random' or 'constant'")
        return "mamba", {
            **common,
            "time_step_rank": dt_rank,
            "time_step_scale": float(ssm["dt_scale"]),
            "time_step_init_scheme": ssm["dt_init"],
        }

    refusals = {
        "rmsnorm": (
            False,
            "without the gated RMSNorm mamba_ssm gates inside the scan; transformers always applies the gated norm",
        ),
        "norm_before_gate": (True, "transformers' gated norm computes norm(y * silu(z)), i.e. norm_before_gate=False"),
        "D_has_hdim": (True, "transformers keeps one D per head (D_has_hdim=False)"),
    }
    for field, (bad, why) in refusals.items():
        if bool(ssm[field]) == bad:
            raise ConversionError(f"{where}: ssm_cfg[{field!r}]={ssm[field]!r} cannot be converted: {why}")
    if ssm["d_ssm"] is not None and ssm["d_ssm"] != d_inner:
        raise ConversionError(
            f"{where}: ssm_cfg['d_ssm']={ssm['d_ssm']!r} applies the SSM to part of the inner width "
            f"{d_inner} (expand*d_model) and a gated MLP to the rest; transformers applies it to all of it "
            "(d_ssm must be null or equal expand*d_model)"
        )
    headdim = _as_int(ssm["headdim"], "ssm_cfg['headdim']", where)
    ngroups = _as_int(ssm["ngroups"], "ssm_cfg['ngroups']", where)
    if headdim < 1 or d_inner % headdim:
        raise ConversionError(
            f"{where}: ssm_cfg['headdim']={headdim} must divide the inner width expand*d_model={d_inner}"
        )
    num_heads = d_inner // headdim
    if ngroups < 1 or num_heads % ngroups:
        raise ConversionError(
            f"{where}: ssm_cfg['ngroups']={ngroups} must divide the number of heads expand*d_model/headdim={num_heads}"
        )
    dt_limit = [float(v) for v in ssm["dt_limit"]]
    if len(dt_limit) != 2:
        raise ConversionError(f"{where}: ssm_cfg['dt_limit']={ssm['dt_limit']!r} must be a pair (min, max)")
    return "mamba2", {
        **common,
        "num_heads": num_heads,
        "head_dim": headdim,
        "n_groups": ngroups,
        "chunk_size": _as_int(ssm["chunk_size"], "ssm_cfg['chunk_size']", where),
        "time_step_limit": dt_limit,
    }


# --------------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------------


def expected_mamba_ssm_shapes(family: str, kwargs: dict) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes ``MambaLMHeadModel`` has for a converted config (``lm_head.weight`` included)."""
    d, v, n = kwargs["hidden_size"], kwargs["vocab_size"], kwargs["state_size"]
    d_inner, k = kwargs["expand"] * d, kwargs["conv_kernel"]
    shapes: dict[str, tuple[int, ...]] = {"backbone.embedding.weight": (v, d)}
    if family == "mamba":
        r = kwargs["time_step_rank"]
        mixer = {
            "in_proj.weight": (2 * d_inner, d),
            "conv1d.weight": (d_inner, 1, k),
            "x_proj.weight": (r + 2 * n, d_inner),
            "dt_proj.weight": (d_inner, r),
            "dt_proj.bias": (d_inner,),
            "A_log": (d_inner, n),
            "D": (d_inner,),
            "out_proj.weight": (d, d_inner),
        }
        bias = {"in_proj.bias": (2 * d_inner,), "out_proj.bias": (d,)}
        conv_dim = d_inner
    else:
        h, g = kwargs["num_heads"], kwargs["n_groups"]
        conv_dim = d_inner + 2 * g * n
        # in_proj output order: [z, x, B, C, dt]
        mixer = {
            "in_proj.weight": (2 * d_inner + 2 * g * n + h, d),
            "conv1d.weight": (conv_dim, 1, k),
            "dt_bias": (h,),
            "A_log": (h,),
            "D": (h,),
            "norm.weight": (d_inner,),
            "out_proj.weight": (d, d_inner),
        }
        bias = {"in_proj.bias": (2 * d_inner + 2 * g * n + h,), "out_proj.bias": (d,)}
    if kwargs["use_bias"]:
        mixer.update(bias)
    if kwargs["use_conv_bias"]:
        mixer["conv1d.bias"] = (conv_dim,)
    for i in range(kwargs["num_hidden_layers"]):
        shapes[f"backbone.layers.{i}.norm.weight"] = (d,)
        shapes.update({f"backbone.layers.{i}.mixer.{name}": shape for name, shape in mixer.items()})
    shapes["backbone.norm_f.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    return shapes


def mamba_ssm_key_to_transformers(key: str) -> str:
    """mamba_ssm's parameter name in transformers: only the embedding is renamed (``embedding`` -> ``embeddings``)."""
    return "backbone.embeddings.weight" if key == "backbone.embedding.weight" else key


def _weights_file(folder: Path) -> Path:
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            raise ConversionError(
                f"{folder / name}: sharded checkpoints are not supported; mamba_ssm's save_pretrained writes a single "
                "pytorch_model.bin"
            )
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ConversionError(
        f"{folder}: no weights found; expected model.safetensors or pytorch_model.bin "
        "(as written by mamba_ssm's MambaLMHeadModel.save_pretrained)"
    )


def _load_state_dict(path: Path) -> dict:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # Pickle is read here only, and without arbitrary code: weights_only=True admits tensors and containers.
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise a variety of types for damaged files
        raise ConversionError(
            f"{path}: cannot read the weights ({type(err).__name__}: {err}); the file is truncated, damaged or not a "
            "checkpoint: download or save it again"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a flat state dict of tensors (name -> tensor), got {type(state)}")
    return state


def _check_state_dict(state: dict, shapes: dict, tied: bool, path: Path) -> None:
    import torch

    optional = {"lm_head.weight"} if tied else set()
    missing = sorted(set(shapes) - set(state) - optional)
    unexpected = sorted(set(state) - set(shapes))
    wrong = sorted(
        f"{k}: {tuple(state[k].shape)} (config says {shapes[k]})"
        for k in set(state) & set(shapes)
        if tuple(state[k].shape) != shapes[k]
    )
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected}")
    if wrong:
        problems.append(f"shapes that disagree with config.json: {wrong}")
    if problems:
        raise ConversionError(f"{path} does not match its config.json: " + "; ".join(problems))
    if (
        tied
        and "lm_head.weight" in state
        and not torch.equal(state["lm_head.weight"], state["backbone.embedding.weight"])
    ):
        raise ConversionError(
            f"{path}: tie_embeddings is true in config.json but lm_head.weight differs from backbone.embedding.weight; "
            "set tie_embeddings to false if the checkpoint really has a separate output layer"
        )


# --------------------------------------------------------------------------------------------------------------------
# Sources, tokenizer, destination
# --------------------------------------------------------------------------------------------------------------------


def transformers_mamba2_norm_is_grouped() -> bool:
    """Whether the installed transformers' Mamba2 gated RMSNorm normalises per group of ``n_groups``, as mamba_ssm does.

    Older releases (e.g. 5.17) normalise over the whole inner width outside the fused training kernel, which equals
    mamba_ssm only for ``ngroups=1``.
    """
    import inspect

    from transformers.models.mamba2 import modeling_mamba2

    return "group_size" in inspect.signature(modeling_mamba2.MambaRMSNormGated.__init__).parameters


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _resolve_source(source: str | os.PathLike, revision: str | None) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"{path} is a file; pass the folder that holds config.json and the weights")
    text = str(source)
    if not _REPO_ID.match(text) or text.count("/") != 1:
        raise ConversionError(f"{text}: no such folder (and not a Hub id of the form 'owner/name')")
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(
            snapshot_download(text, revision=revision, allow_patterns=_SOURCE_PATTERNS, local_files_only=offline)
        )
    except Exception as err:  # offline, unknown id, gated repo, network: all end the same way for the user
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the local Hub cache"
            if offline
            else "it could not be downloaded (unknown id, private or gated repository, or no network)"
        )
        raise ConversionError(
            f"{text}: not a local folder, and {hint} ({type(err).__name__}: {err}). Pass a local folder holding the "
            "mamba_ssm config.json and weights, or download it first and run with HF_HUB_OFFLINE=1"
        ) from err


def _load_tokenizer(tokenizer: Any, folder: Path):
    """The tokenizer to save: ``tokenizer`` (a tokenizer, a folder or a Hub id), else one found in ``folder``, else None."""
    from transformers import AutoTokenizer

    if tokenizer is None:
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            return None
        tokenizer = folder
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=hub_offline())
    except Exception as err:
        raise ConversionError(
            f"tokenizer {str(tokenizer)!r} cannot be loaded ({type(err).__name__}: {err}); pass a local tokenizer "
            "folder, or a Hub id such as EleutherAI/gpt-neox-20b that is reachable or in the cache"
        ) from err


def _check_destination(destination: Path, overwrite: bool) -> None:
    if destination.exists() and not destination.is_dir():
        raise FileExistsError(f"{destination} exists and is not a folder; choose another destination")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{destination} exists and is not empty; choose a new folder or pass overwrite=True (--overwrite) "
            "to replace it"
        )


def _move_into_place(tmp: Path, destination: Path) -> None:
    old = None
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        destination.rename(old)
    try:
        tmp.rename(destination)
    except OSError:
        if old is not None:
            old.rename(destination)
        raise
    if old is not None:
        shutil.rmtree(old)


# --------------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------------


def convert_mamba_ssm_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    tokenizer: Any = None,
    overwrite: bool = False,
    dtype: str | None = None,
    revision: str | None = None,
) -> Path:
    """Convert a mamba_ssm checkpoint into a folder that ``AutoModelForCausalLM`` loads; returns the folder.

    Args:
        source: a folder with mamba_ssm's ``config.json`` and ``pytorch_model.bin`` (or ``model.safetensors``), or a
            Hub id (``owner/name``) fetched with ``huggingface_hub.snapshot_download`` (the cache only when
            ``HF_HUB_OFFLINE=1``).
        destination: the folder to write. It must not exist or be empty unless ``overwrite``. It is written through a
            temporary sibling folder and renamed at the end, so a failure leaves nothing behind.
        tokenizer: a tokenizer, a tokenizer folder or a Hub id (mamba_ssm releases use ``EleutherAI/gpt-neox-20b``)
            to save alongside; by default the tokenizer in ``source``, if it has one.
        overwrite: replace a non-empty ``destination``.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` to cast every tensor; by default each tensor keeps its
            dtype (mamba_ssm keeps ``A_log`` and ``D`` in float32 even in half-precision models).
        revision: the Hub revision of ``source``.

    Raises:
        ConversionError: the source is missing, damaged, or has a configuration transformers cannot represent.
        FileExistsError: ``destination`` is not empty and ``overwrite`` is false.
    """
    destination = Path(destination).expanduser()
    _check_destination(destination, overwrite)
    folder = _resolve_source(source, revision)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(
            f"{config_path} not found: a mamba_ssm checkpoint folder holds config.json (d_model, n_layer, ssm_cfg, ...) "
            "next to its weights"
        )
    try:
        raw_config = read_json(config_path)
    except ValueError as err:
        raise ConversionError(str(err)) from None
    family, kwargs = mamba_ssm_config_to_transformers(raw_config, where=str(config_path))
    if family == "mamba2" and kwargs["n_groups"] > 1 and not transformers_mamba2_norm_is_grouped():
        import transformers

        raise ConversionError(
            f"{config_path}: ssm_cfg['ngroups']={kwargs['n_groups']} needs a gated RMSNorm per group, and the installed "
            f"transformers {transformers.__version__} normalises Mamba2's gated norm over the whole width at inference "
            "(its MambaRMSNormGated takes no group_size), so the converted model would not match mamba_ssm; upgrade "
            "transformers (5.24 has the grouped norm)"
        )

    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    cast = None
    if dtype is not None:
        cast = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(dtype))
        if cast is None:
            raise ConversionError(f"dtype={dtype!r}: use 'float32', 'bfloat16' or 'float16' (or None to keep dtypes)")

    weights_path = _weights_file(folder)
    state = _load_state_dict(weights_path)
    _check_state_dict(state, expected_mamba_ssm_shapes(family, kwargs), kwargs["tie_word_embeddings"], weights_path)

    tok = _load_tokenizer(tokenizer, folder)
    if tok is not None:
        if len(tok) > kwargs["vocab_size"]:
            raise ConversionError(
                f"the tokenizer has {len(tok)} tokens but the model's embedding has {kwargs['vocab_size']} rows; "
                "pass the tokenizer the checkpoint was trained with (--tokenizer)"
            )
        # GPT-NeoX has no pad token; transformers' Mamba checkpoints then use id 0 (<|endoftext|>) throughout.
        ids = {name: getattr(tok, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
        kwargs["eos_token_id"] = ids["eos_token_id"] if ids["eos_token_id"] is not None else 0
        kwargs["bos_token_id"] = ids["bos_token_id"] if ids["bos_token_id"] is not None else kwargs["eos_token_id"]
        kwargs["pad_token_id"] = ids["pad_token_id"] if ids["pad_token_id"] is not None else kwargs["eos_token_id"]
    else:
        logger.warning(
            "%s has no tokenizer and none was given: the converted folder has none. mamba_ssm releases use "
            "EleutherAI/gpt-neox-20b (pass tokenizer=... / --tokenizer)",
            folder,
        )
        kwargs.update(bos_token_id=0, eos_token_id=0, pad_token_id=0)

    config_cls, model_cls = (MambaConfig, MambaForCausalLM) if family == "mamba" else (Mamba2Config, Mamba2ForCausalLM)
    config = config_cls(**kwargs)
    converted = {mamba_ssm_key_to_transformers(k): (v if cast is None else v.to(cast)) for k, v in state.items()}
    if config.tie_word_embeddings:
        converted.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = model_cls(config)
    # assign=True keeps every tensor as loaded (values and dtype); the meta model never allocates random weights.
    result = model.load_state_dict(converted, strict=False, assign=True)
    allowed_missing = ["lm_head.weight"] if config.tie_word_embeddings else []
    if sorted(result.missing_keys) != allowed_missing or result.unexpected_keys:
        raise ConversionError(
            f"internal name mapping disagrees with transformers {model_cls.__name__}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}; please report this with the config.json"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    left_on_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if left_on_meta:
        raise ConversionError(f"internal error: parameters {left_on_meta} were not filled from {weights_path}")
    model.eval()

    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        model.save_pretrained(tmp)
        if tok is not None:
            tok.save_pretrained(tmp)
        _move_into_place(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "converted %s (%s, %d layers, vocab %d) to %s",
        weights_path,
        model_cls.__name__,
        config.num_hidden_layers,
        config.vocab_size,
        destination,
    )
    return destination


def main(argv: Sequence[str] | None = None) -> int:
    """``biomamba-convert SOURCE DESTINATION [--tokenizer T] [--overwrite] [--dtype D] [--revision R]``."""
    parser = argparse.ArgumentParser(
        prog="biomamba-convert",
        description="Convert a mamba_ssm checkpoint (config.json + pytorch_model.bin, Mamba-1 or Mamba-2 layers) into "
        "a folder that transformers' AutoModelForCausalLM loads.",
    )
    parser.add_argument(
        "source", help="a local mamba_ssm checkpoint folder or a Hub id such as state-spaces/mamba2-130m"
    )
    parser.add_argument("destination", help="the folder to write (must not exist or be empty, unless --overwrite)")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="a tokenizer folder or Hub id to save with the model (mamba_ssm releases use EleutherAI/gpt-neox-20b); "
        "default: the tokenizer in SOURCE, if any",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it is not empty")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="cast all weights (default: keep)"
    )
    parser.add_argument("--revision", default=None, help="Hub revision of SOURCE")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = convert_mamba_ssm_checkpoint(
            args.source,
            args.destination,
            tokenizer=args.tokenizer,
            overwrite=args.overwrite,
            dtype=args.dtype,
            revision=args.revision,
        )
    except (ConversionError, FileExistsError) as err:
        print(f"biomamba-convert: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
