"""Which code path Mamba's selective scan takes, and (later) the package's portable fast path."""

from __future__ import annotations

import importlib.util


def cuda_kernels_available() -> bool:
    """True when the mamba-ssm and causal-conv1d CUDA extensions can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("selective_scan_cuda", "causal_conv1d_cuda"))


def mamba_code_path(device="cpu") -> str:
    """A short human-readable name of the selective-scan implementation used on ``device``."""
    device_type = getattr(device, "type", str(device)).split(":")[0]
    if device_type == "cuda" and cuda_kernels_available():
        return "CUDA kernels (mamba-ssm + causal-conv1d)"
    try:
        mambapy = importlib.util.find_spec("mambapy") is not None
    except ValueError:
        mambapy = False
    suffix = " + mambapy parallel scan when config.use_mambapy" if mambapy else ""
    return f"transformers PyTorch fallback{suffix}"
