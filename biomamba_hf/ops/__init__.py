"""Which code path Mamba's selective scan takes, and the package's portable fast paths (used without mamba-ssm).

Mamba-1: the chunked selective scan of :mod:`.selective_scan`, hooked in by
:func:`biomamba_hf.patches.patch_mamba_selective_scan`. Mamba-2: the chunked SSD of :mod:`.ssd`, hooked in by
:func:`biomamba_hf.patches.patch_mamba2_portable_ssd`. ``BIOMAMBA_FAST_SCAN=0`` or :func:`disable_fast_scan` turn
both off. While a portable path is on, transformers' "falling back to its reference PyTorch implementation" warning
for the functions it stands in for is dropped (:class:`FallbackWarningFilter`): the code path line says what runs.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from ..patches import MAMBA_SCAN_ATTRIBUTE as _PATCHED_ATTRIBUTE
from ..patches import (
    original_mamba_selective_scan,
    patch_mamba2_portable_ssd,
    patch_mamba_selective_scan,
    selective_scan_patched_with,
)

__all__ = [
    "FallbackWarningFilter",
    "code_path_label",
    "cuda_kernels_available",
    "disable_fast_scan",
    "enable_fast_scan",
    "fast_scan_active",
    "mamba_code_path",
]

FAST_SCAN_ENV = "BIOMAMBA_FAST_SCAN"
_FAST_SCAN_NAME = "biomamba_hf portable chunked selective scan (PyTorch)"
#: The log label of each model family with a code path to report; other model types have none.
CODE_PATH_LABELS = {"mamba": "Mamba code path", "mamba2": "Mamba-2 code path"}
_KERNEL_HINT = "; mamba-ssm's CUDA kernels are not installed (the [cuda] extra brings them)"

logger = logging.getLogger(__name__)


def cuda_kernels_available() -> bool:
    """True when the mamba-ssm and causal-conv1d CUDA extensions can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("selective_scan_cuda", "causal_conv1d_cuda"))


def _selective_scan_kernel_available() -> bool:
    return importlib.util.find_spec("selective_scan_cuda") is not None


#: The values (lower-cased) that turn an on-by-default environment switch off.
OFF_VALUES = frozenset({"0", "false", "no", "off"})


def fast_scan_opted_out() -> bool:
    """Whether ``BIOMAMBA_FAST_SCAN`` is ``0``/``false``/``no``/``off`` (both portable paths stay off)."""
    return os.environ.get(FAST_SCAN_ENV, "1").strip().lower() in OFF_VALUES


def fast_scan_active() -> bool:
    """True while transformers' Mamba calls the package's fast selective scan."""
    return selective_scan_patched_with(_dispatch_selective_scan)


def code_path_label(model_type: str | None) -> str | None:
    """``"Mamba code path"`` / ``"Mamba-2 code path"`` for those families, ``None`` for any other model type."""
    return CODE_PATH_LABELS.get(model_type)


def mamba_code_path(device="cpu", model_type: str = "mamba") -> str | None:
    """A short human-readable name of the selective-scan implementation used on ``device`` for ``model_type``
    (``"mamba"``: the scan; ``"mamba2"``: the SSD), ``None`` for a model type that is neither.

    On a CUDA device without mamba-ssm's kernels the name says so and how to get them (transformers' own warning
    about it is dropped while a portable path runs)."""
    if model_type not in CODE_PATH_LABELS:
        return None
    device_type = getattr(device, "type", str(device)).split(":")[0]
    if model_type == "mamba2":
        from .ssd import MAMBA2_FAST_PATH_NAME, mamba2_code_path

        path = mamba2_code_path(device)
        if path == MAMBA2_FAST_PATH_NAME:
            _mark_mamba2_path_logged()
        if device_type == "cuda" and not path.startswith("mamba-ssm"):
            path += _KERNEL_HINT
        return path
    if device_type == "cuda" and cuda_kernels_available():
        return "CUDA kernels (mamba-ssm + causal-conv1d)"
    if fast_scan_active():
        return _FAST_SCAN_NAME + (_KERNEL_HINT if device_type == "cuda" else "")
    try:
        mambapy = importlib.util.find_spec("mambapy") is not None
    except ValueError:
        mambapy = False
    suffix = " + mambapy parallel scan when config.use_mambapy" if mambapy else ""
    return f"transformers PyTorch fallback{suffix}"


def _mark_mamba2_path_logged() -> None:
    """The caller reports the Mamba-2 path: the portable SSD's own first-use line would say it a second time."""
    from . import ssd

    ssd._logged = True


#: transformers' functions (``use_kernel_func_from_hub_with_fallback`` names) that each portable path stands in for
#: in a full-sequence forward; single-token decoding keeps transformers' recurrent update, whose warning stays.
PORTABLE_STAND_INS = {
    "mamba": frozenset({"selective_scan_fn", "mamba_inner_fn", "causal_conv1d_fn"}),
    "mamba2": frozenset({"mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined", "causal_conv1d_fn"}),
}
#: The start of transformers' warning (``integrations/hub_kernels.py``, checked on 5.17 and 5.24), after the name.
FALLBACK_WARNING = "is falling back to its reference PyTorch implementation"
_HUB_KERNELS_LOGGER = "transformers.integrations.hub_kernels"


class FallbackWarningFilter(logging.Filter):
    """Drops transformers' "`<function>` is falling back to its reference PyTorch implementation ... much slower"
    warning for a function that an active portable path stands in for: what runs then is the package's path, not
    the slow reference the warning describes (and on a CPU there is no kernel to install)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if FALLBACK_WARNING not in message or not message.startswith("`"):
            return True
        name = message[1:].split("`", 1)[0]
        from .ssd import mamba2_fast_path_active

        active = {"mamba": fast_scan_active(), "mamba2": mamba2_fast_path_active()}
        return not any(active[family] and name in names for family, names in PORTABLE_STAND_INS.items())


_fallback_filter = FallbackWarningFilter()


def _filter_fallback_warnings() -> None:
    """Attach :class:`FallbackWarningFilter` to transformers' hub-kernels logger (idempotent)."""
    hub_logger = logging.getLogger(_HUB_KERNELS_LOGGER)
    if _fallback_filter not in hub_logger.filters:
        hub_logger.addFilter(_fallback_filter)


def _defer_to_transformers(device, use_associative_scan: bool = False) -> bool:
    """Whether the dispatcher hands a call back to transformers' own binding: mamba-ssm's kernel for CUDA tensors
    where it is installed, and the associative scan under ``torch.compile`` when the config asks for it."""
    import torch

    if getattr(device, "type", str(device)).split(":")[0] == "cuda" and _selective_scan_kernel_available():
        return True
    return bool(use_associative_scan) and torch.compiler.is_compiling()


def _dispatch_selective_scan(
    hidden_states,
    dt,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    use_mambapy=False,
    use_associative_scan=False,
    **kwargs,
):
    """Stands in for transformers' ``mamba_selective_scan``: mamba-ssm's kernel on CUDA where it is installed, the
    associative scan under ``torch.compile`` when the config asks for it, else the portable fast scan."""
    from .selective_scan import selective_scan

    options = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, return_last_state=return_last_state)
    if _defer_to_transformers(hidden_states.device, use_associative_scan):
        return original_mamba_selective_scan()(
            hidden_states,
            dt,
            A,
            B,
            C,
            **options,
            use_mambapy=use_mambapy,
            use_associative_scan=use_associative_scan,
            **kwargs,
        )
    return selective_scan(hidden_states, dt, A, B, C, **options)


def enable_fast_scan() -> bool:
    """Route transformers' Mamba selective scan through the portable fast scan; returns whether it is active.

    Idempotent. Does nothing (and returns ``False``) when the environment variable ``BIOMAMBA_FAST_SCAN`` is ``0``,
    ``false``, ``no`` or ``off``. CUDA tensors still use mamba-ssm's kernels when those are installed. Also routes
    Mamba-2's reference path through the portable SSD (:mod:`.ssd`; a warning where this transformers has no hook
    point for it); the returned value is about Mamba's scan.
    """
    if fast_scan_opted_out():
        return fast_scan_active()
    _filter_fallback_warnings()
    try:
        patch_mamba2_portable_ssd(install=True)
    except RuntimeError as error:
        logger.warning("%s", error)
    if not _hook_point_expected():
        logger.warning(
            "transformers %s predates the scan hook the biomamba_hf fast path uses (checked from %s on): "
            "Mamba keeps transformers' own selective scan.",
            _transformers_version(),
            MIN_TRANSFORMERS_FOR_FAST_SCAN,
        )
        return False
    patch_mamba_selective_scan(_dispatch_selective_scan, install=True)
    return fast_scan_active()


#: Oldest transformers release checked to call ``modeling_mamba.mamba_selective_scan`` (older ones inline the scan).
MIN_TRANSFORMERS_FOR_FAST_SCAN = "5.17"


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _hook_point_expected() -> bool:
    """Whether this transformers should have the hook point; on newer releases its absence is an error."""
    from packaging.version import Version
    from transformers.models.mamba import modeling_mamba

    if hasattr(modeling_mamba, _PATCHED_ATTRIBUTE):
        return True
    return Version(_transformers_version()) >= Version(MIN_TRANSFORMERS_FOR_FAST_SCAN)


def disable_fast_scan() -> None:
    """Restore transformers' own ``mamba_selective_scan`` and Mamba-2 path (idempotent)."""
    patch_mamba_selective_scan(_dispatch_selective_scan, install=False)
    patch_mamba2_portable_ssd(install=False)
