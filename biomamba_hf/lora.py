"""LoRA through peft on the Mamba modules whose adapters train; the task head trains in full."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .patches import ADAPTED_X_PROJ, skip_fused_path_for_adapted_x_proj

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "DEFAULT_LORA_TARGETS_MAMBA2",
    "add_lora",
    "default_lora_targets",
    "merge_lora",
    "snapshot_trainable",
    "unchanged_parameters",
]

#: Mamba modules LoRA adapts by default: the ones whose adapters train on every code path we know.
DEFAULT_LORA_TARGETS = ("in_proj", "x_proj", "embeddings")
#: Modules LoRA cannot adapt on Mamba, and why.
_LORA_REFUSED = {
    "out_proj": "peft refuses it on Mamba models: the fused CUDA path (mamba_inner_fn) multiplies by "
    "out_proj.weight directly, so an adapter there would be silently skipped",
    "conv1d": "peft refuses it on Mamba models: the convolution runs through causal_conv1d kernels that read "
    "conv1d.weight directly",
    "dt_proj": "transformers' Mamba never calls dt_proj as a module: the fused CUDA path and the PyTorch path both "
    "multiply by dt_proj.weight directly, so an adapter there would never train",
}
#: Mamba-2 modules LoRA adapts by default. transformers' fused Mamba-2 training step
#: (``mamba_split_conv1d_scan_combined``) receives the *output* of ``in_proj``, so its adapter trains there too.
DEFAULT_LORA_TARGETS_MAMBA2 = ("in_proj", "embeddings")
#: Modules LoRA cannot adapt on Mamba-2, and why.
_LORA_REFUSED_MAMBA2 = {
    "out_proj": "peft refuses it on Mamba-2 models: the fused training kernel (mamba_split_conv1d_scan_combined) "
    "multiplies by out_proj.weight directly, so an adapter there would be silently skipped",
    "conv1d": "peft refuses it on Mamba-2 models: the fused training kernel and causal_conv1d read conv1d.weight "
    "directly",
    "x_proj": "Mamba-2 has no x_proj: B, C and dt come out of in_proj",
    "dt_proj": "Mamba-2 has no dt_proj: dt comes out of in_proj (plus the dt_bias parameter)",
}
#: The head of each task model, trained in full next to the adapters.
_HEADS = ("qa_outputs", "score")


def _leaf_names(model) -> set[str]:
    from torch import nn

    kinds = (nn.Linear, nn.Embedding, nn.Conv1d)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, kinds)}


def _is_mamba2(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "mamba2"


def default_lora_targets(model) -> tuple[str, ...]:
    """The modules :func:`add_lora` adapts by default for ``model``: :data:`DEFAULT_LORA_TARGETS` for Mamba,
    :data:`DEFAULT_LORA_TARGETS_MAMBA2` for Mamba-2."""
    return DEFAULT_LORA_TARGETS_MAMBA2 if _is_mamba2(model) else DEFAULT_LORA_TARGETS


def add_lora(
    model,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
):
    """Wrap ``model`` (a Mamba task model) with LoRA adapters on ``target_modules``; its head trains in full.

    ``target_modules`` are module names inside each Mamba block (``in_proj``, ``x_proj``) or of the backbone
    (``embeddings``). Refused with a ``ValueError`` that says why: ``out_proj`` and ``conv1d`` (peft refuses them on
    Mamba), ``dt_proj`` (transformers multiplies by its weight directly, so an adapter would never train), the head
    (``qa_outputs`` / ``score``, always trained in full through ``modules_to_save``) and names the model does not
    have. Returns the ``peft`` model. By default (``target_modules=None``) the modules of
    :func:`default_lora_targets`.

    On Mamba-2 the targets are ``in_proj`` and ``embeddings``: ``out_proj`` and ``conv1d`` are refused (peft refuses
    them, and the fused training kernel reads their weights directly), and ``x_proj``/``dt_proj`` do not exist.

    With mamba-ssm's CUDA kernels, transformers' fused training path (``mamba_inner_fn``) reads ``x_proj.weight``
    itself, so an ``x_proj`` adapter would get no gradient there: mixers whose ``x_proj`` has an adapter are routed to
    transformers' unfused path, which calls the module (see
    :func:`biomamba_hf.patches.skip_fused_path_for_adapted_x_proj`). As a safety net, ``examples/run_qa.py`` logs the
    adapters whose weights did not change after training.
    """
    from peft import LoraConfig, get_peft_model

    defaults = default_lora_targets(model)
    refused, family = (_LORA_REFUSED_MAMBA2, "Mamba-2") if _is_mamba2(model) else (_LORA_REFUSED, "Mamba")
    targets = [t.strip() for t in (defaults if target_modules is None else target_modules) if t.strip()]
    if not targets:
        raise ValueError(f"--lora_target_modules is empty; use e.g. {','.join(defaults)}.")
    if r < 1:
        raise ValueError(f"--lora_r must be a positive rank, got {r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}.")
    available = _leaf_names(model)
    heads = [head for head in _HEADS if hasattr(model, head)]
    for target in targets:
        if target in refused:
            raise ValueError(
                f"--lora_target_modules: {target!r} cannot take a LoRA adapter on {family}: {refused[target]}. "
                f"Use the modules that train: {','.join(defaults)}."
            )
        if target in heads:
            raise ValueError(
                f"--lora_target_modules: {target!r} is the task head, which is always trained in full "
                "(modules_to_save); remove it from the list."
            )
        if target not in available:
            raise ValueError(
                f"--lora_target_modules: the model has no module named {target!r}; its adaptable modules are "
                f"{', '.join(sorted(available - set(refused) - set(heads)))}."
            )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=heads,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    adapted = 0
    for name, module in peft_model.named_modules():
        if name.endswith(".x_proj") and hasattr(module, "base_layer"):
            setattr(module.base_layer.weight, ADAPTED_X_PROJ, True)
            adapted += 1
    if adapted:
        skip_fused_path_for_adapted_x_proj()
        logger.info(
            "%d mixers with an x_proj adapter train on transformers' unfused Mamba path (the fused mamba-ssm kernel "
            "would bypass the adapter)",
            adapted,
        )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA on %s (r=%d, alpha=%d): %d of %d parameters train", targets, r, alpha, trainable, total)
    return peft_model


def merge_lora(model):
    """Fold the adapters into the weights and return the plain model (loads with ``AutoModelFor...`` alone)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for name, parameter in model.named_parameters():
        if name.endswith("x_proj.weight") and hasattr(parameter, ADAPTED_X_PROJ):
            delattr(parameter, ADAPTED_X_PROJ)  # no adapter left: the fused path serves this mixer again
    return model


def snapshot_trainable(model) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable parameter, to find out later which ones training changed."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def unchanged_parameters(model, snapshot: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of parameters of ``snapshot`` whose values are still exactly the same in ``model``."""
    import torch

    current = dict(model.named_parameters())
    return [name for name, before in snapshot.items() if torch.equal(current[name].detach().cpu(), before.cpu())]
