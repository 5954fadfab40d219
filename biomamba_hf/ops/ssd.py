"""A portable Mamba-2 path: chunked SSD (state-space duality) in plain PyTorch with memory linear in the length.

Without mamba-ssm's kernels (CPU users, Macs, GPUs without a kernel build) transformers runs Mamba-2 through a
reference SSD that, besides the within-chunk ``(chunk x chunk)`` products, mixes every chunk's state into every later
one through a ``(chunks x chunks)`` product (so time and memory grow faster than the length), and autograd keeps all
of its ``(batch, chunks, chunk, chunk, heads)`` intermediates for the backward. :func:`ssd_scan` computes the same
function (``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t``, per head) as

* within each chunk, the quadratic "attention-like" form (``chunk x chunk`` per chunk and head);
* between chunks, a recurrence over the ``(batch, heads, head_dim, state)`` states (within blocks of 32 chunks one
  decay-matrix product, blocks in sequence);
* ``B``/``C`` stay per group (never repeated to all heads);
* for training, the whole computation runs under activation checkpointing (``torch.utils.checkpoint``, non-reentrant):
  autograd saves only the inputs, and the backward recomputes the forward once and differentiates it. Nothing of size
  ``length x chunk`` or ``length x heads x state`` outlives the layer's forward; the transient working set of one
  layer is ``O(length x chunk x heads)`` (linear in the length).

Everything accumulates in float32 and the output is float32, as in transformers' reference.

Hooking in (:func:`install_mamba2_fast_path`), by what the installed transformers has:

* ``modeling_mamba2.mamba2_chunk_scan`` (newer releases: the mixer calls this module-level function, which
  transformers binds to mamba-ssm's ``mamba_chunk_scan_combined`` when that imports, else to its reference): the name
  is rebound to a dispatcher that keeps the original for CUDA tensors when it is mamba-ssm's kernel and calls
  :func:`mamba2_chunk_scan` otherwise; ``causal_conv1d_fn`` likewise goes to :func:`causal_conv1d` (on CPU,
  ``F.conv1d``'s depthwise backward alone took seconds per layer). This covers training, scoring and a prompt's
  prefill with a cache (initial and final states); single-token decoding steps keep transformers' recurrent update.
  The gated RMSNorm stays transformers' (its float32 intermediates, linear in the length, stay with autograd).
* ``Mamba2Mixer.torch_forward`` (older releases: ``forward`` picks ``cuda_kernels_forward`` for CUDA with the kernels,
  else ``torch_forward``): the method is replaced at class level by :func:`mamba2_forward`, which runs the full-sequence
  forward (in_proj, conv, SSD, the module's own gated RMSNorm and out_proj, the gated norm included in the recomputed
  region) and hands calls with a cache to the original ``torch_forward``.

Opt out with ``BIOMAMBA_FAST_SCAN=0`` (the same switch as Mamba-1's fast scan) or :func:`uninstall_mamba2_fast_path`.
"""

from __future__ import annotations

import inspect
import logging
import os

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import FAST_SCAN_ENV  # the same switch as Mamba-1's fast scan

__all__ = [
    "MAMBA2_FAST_PATH_NAME",
    "install_mamba2_fast_path",
    "mamba2_chunk_scan",
    "mamba2_code_path",
    "mamba2_fast_path_active",
    "mamba2_forward",
    "ssd_scan",
    "uninstall_mamba2_fast_path",
]

MAMBA2_FAST_PATH_NAME = "biomamba_hf portable chunked SSD (PyTorch)"
_CHUNK_SCAN_ATTRIBUTE = "mamba2_chunk_scan"
_CONV_ATTRIBUTE = "causal_conv1d_fn"
_TORCH_FORWARD_ATTRIBUTE = "torch_forward"

logger = logging.getLogger(__name__)

# What install_mamba2_fast_path replaced: attribute name -> the original (module-level function or the mixer method).
_installed: dict[str, object] = {}
_logged = False


# ----------------------------------------------------------------------------------------------------------------------
# the SSD


def default_chunk_size(device: torch.device | str, configured: int) -> int:
    """Chunk length used by the portable path. The result does not depend on it (up to rounding); speed does: on CPU
    64 keeps the ``chunk x chunk`` blocks cache-resident and the quadratic work small, on accelerators the configured
    size (256 for the released checkpoints) means fewer, larger matmuls."""
    device_type = getattr(device, "type", str(device)).split(":")[0]
    return min(int(configured), 64) if device_type == "cpu" else int(configured)


def _ssd_forward(x, dt, A, B, C, D, initial_states, chunk_size: int):
    """The SSD of float32 inputs ``x (b, l, h, p)``, ``dt (b, l, h)`` (already softplus'ed and clamped), ``A (h,)``,
    ``B``/``C (b, l, g, n)``, ``D (h,)`` or ``None``, ``initial_states (b, h, p, n)`` or ``None``.
    Returns ``(y (b, l, h, p), final_state (b, h, p, n))``."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2], B.shape[3]
    per_group = heads // groups
    q = chunk_size
    chunks = -(-length // q)
    pad = chunks * q - length
    x_in = x
    if pad:  # zero dt at padded positions: decay 1 and no input, so the final state is the state after `length`
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    x = x.view(batch, chunks, q, heads, head_dim)
    dt = dt.view(batch, chunks, q, heads)
    B = B.view(batch, chunks, q, groups, state)
    C = C.view(batch, chunks, q, groups, state)

    a_cumsum = (dt * A).permute(0, 3, 1, 2).cumsum(-1)  # (b, h, c, q): log-decay from the chunk start
    x_dt = x * dt[..., None]  # (b, c, q, h, p)

    # 1. within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(a_l - a_s) x_s dt_s
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    log_decay = (a_cumsum[..., :, None] - a_cumsum[..., None, :]).masked_fill(~causal, -float("inf"))
    scores = torch.einsum("bclgn,bcsgn->bgcls", C, B)  # (b, g, c, q, q)
    weights = scores[:, :, None] * torch.exp(log_decay).view(batch, groups, per_group, chunks, q, q)
    y = torch.einsum("bhcls,bcshp->bclhp", weights.view(batch, heads, chunks, q, q), x_dt)

    # 2. each chunk's contribution to the state at its end
    to_end = torch.exp(a_cumsum[..., -1:] - a_cumsum).permute(0, 2, 3, 1)[..., None]  # (b, c, q, h, 1)
    x_to_end = (x_dt * to_end).view(batch, chunks, q, groups, per_group, head_dim)
    chunk_states = torch.einsum("bclgn,bclgrp->bgrcpn", B, x_to_end).reshape(batch, heads, chunks, head_dim * state)

    # 3. between chunks: the state entering each chunk (linear in the number of chunks, see _states_entering_chunks)
    current = initial_states if initial_states is not None else x.new_zeros(batch, heads, head_dim, state)
    entering, current = _states_entering_chunks(a_cumsum[..., -1], chunk_states, current.reshape(batch, heads, -1))
    entering = entering.view(batch, groups, per_group, chunks, head_dim, state)

    # 4. the entering state's contribution inside each chunk, decayed to each position
    y_state = torch.einsum("bclgn,bgrcpn->bclgrp", C, entering).reshape(batch, chunks, q, heads, head_dim)
    y = y + y_state * torch.exp(a_cumsum).permute(0, 2, 3, 1)[..., None]
    y = y.reshape(batch, chunks * q, heads, head_dim)[:, :length]
    if D is not None:
        y = y + x_in * D[:, None]
    return y, current.view(batch, heads, head_dim, state)


#: Chunks whose entering states one matrix product computes; blocks of this many chunks are then walked in sequence.
CHUNKS_PER_BLOCK = 32


def _states_entering_chunks(log_decay, chunk_states, state, block: int | None = None):
    """``S_{c+1} = exp(log_decay_c) S_c + chunk_states_c`` from ``S_0 = state``, for ``log_decay (b, h, c)``,
    ``chunk_states (b, h, c, d)``, ``state (b, h, d)``: returns ``(S_0 .. S_{c-1} as (b, h, c, d), S_c)``.

    Within a block of ``block`` chunks, one ``(block + 1) x block`` decay matrix times the block's chunk states (plus
    the decayed state entering the block); blocks in sequence. Work and memory are linear in the number of chunks.
    """
    chunks = log_decay.shape[-1]
    block = block or CHUNKS_PER_BLOCK
    causal = torch.ones(block + 1, block, dtype=torch.bool, device=log_decay.device).tril(-1)
    entering = []
    for start in range(0, chunks, block):
        decay = log_decay[..., start : start + block]
        n = decay.shape[-1]
        inclusive = decay.cumsum(-1)  # (b, h, n): log-decay from the block start to the end of chunk z
        exclusive = F.pad(inclusive, (1, 0))  # (b, h, n + 1): ... to the start of chunk k (k = n: the block end)
        weights = (exclusive[..., :, None] - inclusive[..., None, :]).masked_fill(~causal[: n + 1, :n], -float("inf"))
        carried = torch.exp(exclusive)[..., None] * state[:, :, None]  # (b, h, n + 1, d)
        states = torch.exp(weights) @ chunk_states[:, :, start : start + n] + carried
        entering.append(states[:, :, :n])
        state = states[:, :, n]
    return torch.cat(entering, dim=2) if len(entering) > 1 else entering[0], state


def ssd_scan(x, dt, A, B, C, chunk_size: int, D=None, initial_states=None):
    """:func:`_ssd_forward` with a recomputing backward when gradients are needed (see the module docstring).
    Inputs are cast to float32; returns ``(y, final_state)`` in float32."""
    inputs = [t.float() if t is not None else None for t in (x, dt, A, B, C, D, initial_states)]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return checkpoint(_ssd_forward, *inputs, chunk_size, use_reentrant=False)
    return _ssd_forward(*inputs, chunk_size)


def mamba2_chunk_scan(
    hidden_states,
    dt,
    A,
    B,
    C,
    chunk_size,
    D=None,
    z=None,
    dt_bias=None,
    initial_states=None,
    dt_softplus=False,
    dt_limit=(0.0, float("inf")),
    return_final_states=False,
    **kwargs,
):
    """Same arguments and result as transformers' reference ``mamba2_chunk_scan`` (mamba-ssm's
    ``mamba_chunk_scan_combined`` interface, without ``seq_idx``): ``hidden_states (b, l, h, p)``, ``dt (b, l, h)``,
    ``B``/``C (b, l, g, n)``; returns the float32 output, and the final state when ``return_final_states``."""
    _log_path_once()
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
    device = hidden_states.device
    y, final_state = ssd_scan(
        hidden_states, dt, A, B, C, default_chunk_size(device, chunk_size), D=D, initial_states=initial_states
    )
    if z is not None:
        y = y * F.silu(z.float())
    return (y, final_state) if return_final_states else y


def causal_conv1d(hidden_states, weight, bias=None, activation=None, **kwargs):
    """Same arguments and result as transformers' reference ``causal_conv1d_fn``: the depthwise causal convolution of
    ``hidden_states (b, channels, l)`` with ``weight (channels, kernel)``, as a sum of ``kernel`` shifted products.
    (On CPU, ``F.conv1d``'s depthwise backward is about two orders of magnitude slower than this.)"""
    from transformers.activations import ACT2FN

    length = hidden_states.shape[-1]
    kernel = weight.shape[-1]
    padded = F.pad(hidden_states.to(weight.dtype), (kernel - 1, 0))
    out = padded[..., kernel - 1 :] * weight[:, kernel - 1, None]
    for k in range(kernel - 1):
        out = out + padded[..., k : k + length] * weight[:, k, None]
    if bias is not None:
        out = out + bias[:, None]
    if activation is not None:
        out = ACT2FN[activation](out)
    return out.to(hidden_states.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# the mixer's full-sequence forward (for transformers releases whose mixer has `torch_forward`)


def _mixer_middle(mixer, projected_states, attention_mask):
    """in_proj output -> conv -> SSD -> gated RMSNorm, as transformers' ``torch_forward`` without a cache."""
    batch, seq_len, _ = projected_states.shape
    groups_state = mixer.n_groups * mixer.ssm_state_size
    d_mlp = (projected_states.shape[-1] - 2 * mixer.intermediate_size - 2 * groups_state - mixer.num_heads) // 2
    _, _, gate, xBC, dt = projected_states.split(
        [d_mlp, d_mlp, mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1
    )
    xBC = causal_conv1d(xBC.transpose(1, 2), mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, mixer.activation)
    xBC = xBC.transpose(1, 2)
    xBC = _apply_mask_to_padding_states(xBC, attention_mask)
    x, B, C = torch.split(xBC, [mixer.intermediate_size, groups_state, groups_state], dim=-1)
    dt = F.softplus(dt + mixer.dt_bias)
    dt = torch.clamp(dt, mixer.time_step_limit[0], mixer.time_step_limit[1])
    y, _ = _ssd_forward(
        x.reshape(batch, seq_len, -1, mixer.head_dim).float(),
        dt.float(),
        -torch.exp(mixer.A_log.float()),
        B.reshape(batch, seq_len, mixer.n_groups, -1).float(),
        C.reshape(batch, seq_len, mixer.n_groups, -1).float(),
        mixer.D,
        None,
        default_chunk_size(projected_states.device, mixer.chunk_size),
    )
    return mixer.norm(y.reshape(batch, seq_len, -1), gate)


def mamba2_forward(mixer, hidden_states, cache_params=None, attention_mask=None, *args, **kwargs):
    """``Mamba2Mixer.torch_forward`` with the portable SSD: the same result, memory linear in the length.

    Calls with a cache (prefill and decoding) go to transformers' own ``torch_forward`` (to the mixer's ``forward``
    on releases without one); extra positional arguments of older signatures (``cache_position``) are read by name
    from the original's signature by the installed method.
    """
    if cache_params is not None:
        original = _original_torch_forward()
        if original is None:
            return mixer.forward(hidden_states, cache_params, attention_mask)
        return original(mixer, hidden_states, cache_params, attention_mask, *args, **kwargs)
    _log_path_once()
    dtype = hidden_states.dtype
    hidden_states = _apply_mask_to_padding_states(hidden_states, attention_mask)
    projected_states = mixer.in_proj(hidden_states)
    if torch.is_grad_enabled() and projected_states.requires_grad:
        scan_output = checkpoint(_mixer_middle, mixer, projected_states, attention_mask, use_reentrant=False)
    else:
        scan_output = _mixer_middle(mixer, projected_states, attention_mask)
    return mixer.out_proj(scan_output.to(dtype))


def _apply_mask_to_padding_states(hidden_states, attention_mask):
    """transformers' own masking of padded positions (its rules differ between releases)."""
    from transformers.models.mamba2.modeling_mamba2 import apply_mask_to_padding_states

    return apply_mask_to_padding_states(hidden_states, attention_mask)


def _original_torch_forward():
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    return _installed.get(_TORCH_FORWARD_ATTRIBUTE, getattr(Mamba2Mixer, _TORCH_FORWARD_ATTRIBUTE, None))


def _torch_forward_replacement(original):
    """A method with ``original``'s signature that routes calls without a cache to :func:`mamba2_forward`."""
    signature = inspect.signature(original)

    def torch_forward(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        arguments = bound.arguments
        if arguments.get("cache_params") is not None:
            return original(self, *args, **kwargs)
        hidden_states = arguments.get("hidden_states", arguments.get("input_states"))
        return mamba2_forward(self, hidden_states, None, arguments.get("attention_mask"))

    torch_forward.__doc__ = mamba2_forward.__doc__
    torch_forward._biomamba_original = original
    return torch_forward


# ----------------------------------------------------------------------------------------------------------------------
# installing


def _kernel_binding(original) -> bool:
    """Whether transformers bound one of its ``use_kernel_func_from_hub_with_fallback`` functions to the kernel
    package (mamba-ssm, causal-conv1d) rather than to its reference."""
    try:
        bound = inspect.getclosurevars(original).nonlocals
    except (TypeError, ValueError):
        bound = {}
    if "is_new_implementation" in bound:
        return bool(bound["is_new_implementation"])
    # transformers' bare reference function (no wrapper): not a kernel; an unknown wrapper: keep it where kernels run
    return not getattr(original, "__module__", "").startswith("transformers.")


def _dispatcher(attribute: str, portable: str):
    """A stand-in for transformers' module-level ``attribute``: the original where it is the kernel package's
    function and the tensors are on CUDA, and for packed sequences (``seq_idx``/``cu_seqlens``); else the function
    named ``portable`` in this module."""

    def dispatch(*args, **kwargs):
        original = _installed[attribute]
        hidden_states = args[0] if args else kwargs["hidden_states"]
        packed = kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None
        if packed or (hidden_states.device.type == "cuda" and _kernel_binding(original)):
            return original(*args, **kwargs)
        return globals()[portable](*args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = f"biomamba_{attribute}"
    return dispatch


_DISPATCHERS = {
    _CHUNK_SCAN_ATTRIBUTE: _dispatcher(_CHUNK_SCAN_ATTRIBUTE, "mamba2_chunk_scan"),
    _CONV_ATTRIBUTE: _dispatcher(_CONV_ATTRIBUTE, "causal_conv1d"),
}


def _log_path_once() -> None:
    global _logged
    if not _logged:
        _logged = True
        logger.info("Mamba-2 code path: %s", MAMBA2_FAST_PATH_NAME)


def _opted_out() -> bool:
    return os.environ.get(FAST_SCAN_ENV, "1").strip().lower() in {"0", "false", "no", "off"}


def install_mamba2_fast_path() -> bool:
    """Route transformers' Mamba-2 reference path through the portable one; returns whether it is active.

    Idempotent. Does nothing (returns whether it is already active) when ``BIOMAMBA_FAST_SCAN`` is
    ``0``/``false``/``no``/``off``. Raises ``RuntimeError`` when transformers has neither hook point
    (``mamba2_chunk_scan`` nor ``Mamba2Mixer.torch_forward``), so an upstream refactor fails loudly instead of
    silently losing the path.
    """
    if _opted_out() or _installed:
        return mamba2_fast_path_active()
    from transformers.models.mamba2 import modeling_mamba2

    mixer = modeling_mamba2.Mamba2Mixer
    if callable(getattr(modeling_mamba2, _CHUNK_SCAN_ATTRIBUTE, None)):
        for attribute, dispatch in _DISPATCHERS.items():
            original = getattr(modeling_mamba2, attribute, None)
            if callable(original):
                _installed[attribute] = original
                setattr(modeling_mamba2, attribute, dispatch)
    elif callable(getattr(mixer, _TORCH_FORWARD_ATTRIBUTE, None)):
        _installed[_TORCH_FORWARD_ATTRIBUTE] = mixer.torch_forward
        mixer.torch_forward = _torch_forward_replacement(mixer.torch_forward)
    else:
        raise RuntimeError(
            "transformers.models.mamba2.modeling_mamba2 has neither `mamba2_chunk_scan` nor "
            "`Mamba2Mixer.torch_forward`: the biomamba_hf portable Mamba-2 path cannot hook in; "
            f"set {FAST_SCAN_ENV}=0 and report this at the biomamba_hf issue tracker"
        )
    return mamba2_fast_path_active()


def uninstall_mamba2_fast_path() -> None:
    """Restore what :func:`install_mamba2_fast_path` replaced (idempotent)."""
    global _logged
    from transformers.models.mamba2 import modeling_mamba2

    for attribute, original in list(_installed.items()):
        if attribute == _TORCH_FORWARD_ATTRIBUTE:
            modeling_mamba2.Mamba2Mixer.torch_forward = original
        else:
            setattr(modeling_mamba2, attribute, original)
        del _installed[attribute]
    _logged = False


def mamba2_fast_path_active() -> bool:
    """True while transformers' Mamba-2 reference path is routed through the portable SSD."""
    if not _installed:
        return False
    from transformers.models.mamba2 import modeling_mamba2

    if _TORCH_FORWARD_ATTRIBUTE in _installed:
        replaced = modeling_mamba2.Mamba2Mixer.torch_forward
        return getattr(replaced, "_biomamba_original", None) is _installed[_TORCH_FORWARD_ATTRIBUTE]
    return getattr(modeling_mamba2, _CHUNK_SCAN_ATTRIBUTE, None) is _DISPATCHERS[_CHUNK_SCAN_ATTRIBUTE]


def mamba2_code_path(device="cpu") -> str:
    """A short human-readable name of the Mamba-2 implementation used on ``device``."""
    from transformers.models.mamba2 import modeling_mamba2

    device_type = getattr(device, "type", str(device)).split(":")[0]
    if hasattr(modeling_mamba2, _CHUNK_SCAN_ATTRIBUTE):
        kernels = _kernel_binding(_installed.get(_CHUNK_SCAN_ATTRIBUTE, modeling_mamba2.mamba2_chunk_scan))
    else:
        kernels = bool(getattr(modeling_mamba2, "is_fast_path_available", False))
    if device_type == "cuda" and kernels:
        conv = _installed.get(_CONV_ATTRIBUTE, getattr(modeling_mamba2, _CONV_ATTRIBUTE, None))
        if conv is None or _kernel_binding(conv):
            return "mamba-ssm Triton SSD kernels + causal-conv1d"
        return "mamba-ssm Triton SSD kernels + PyTorch conv1d (causal-conv1d not installed)"
    if mamba2_fast_path_active():
        return MAMBA2_FAST_PATH_NAME
    return "transformers PyTorch fallback (reference SSD)"
