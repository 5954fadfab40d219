"""Every runtime patch of transformers, one function each, with the versions it was checked on.

``tests/test_patches.py`` fails loudly when upstream changes the shape a patch relies on.
"""

from __future__ import annotations

#: Set on the base weight of an ``x_proj`` that carries a LoRA adapter (by :func:`biomamba_hf.lora.add_lora`).
ADAPTED_X_PROJ = "_biomamba_x_proj_has_adapter"


def skip_fused_path_for_adapted_x_proj() -> None:
    """Make transformers' Mamba training step skip the fused ``mamba_inner_fn`` for mixers whose ``x_proj`` carries a
    LoRA adapter (marked by :func:`biomamba_hf.lora.add_lora`); idempotent.

    The fused function receives ``x_proj.weight`` and multiplies by it itself, bypassing the adapter. When it returns
    ``None``, transformers' ``MambaMixer`` goes on with its unfused path (as it does without mamba-ssm), which calls
    the ``x_proj`` module and still uses the CUDA kernels for the convolution and the scan. Other mixers keep the fused
    path. The hook point is the module-level ``mamba_inner_fn`` that ``MambaMixer.forward`` looks up at call time in
    transformers 5.x.
    """
    from transformers.models.mamba import modeling_mamba

    fused = modeling_mamba.mamba_inner_fn
    if getattr(fused, "_biomamba_lora_aware", False):
        return

    def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs):
        if getattr(x_proj_weight, ADAPTED_X_PROJ, False):
            return None
        return fused(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs)

    mamba_inner_fn._biomamba_lora_aware = True
    mamba_inner_fn.__wrapped__ = fused
    modeling_mamba.mamba_inner_fn = mamba_inner_fn
