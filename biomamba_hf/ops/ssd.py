"""A portable Mamba-2 path: chunked SSD (state-space duality) in plain PyTorch with memory linear in the length.

Without mamba-ssm's kernels (CPU users, Macs, GPUs without a kernel build) transformers runs Mamba-2 through a
reference SSD that mixes every chunk's state into every later one through a ``(chunks x chunks)`` product (time and
memory grow faster than the length) and leaves all its ``(batch, chunks, chunk, chunk, heads)`` intermediates to
autograd. :func:`ssd_scan` computes the same function (``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``,
``y_t = C_t h_t + D x_t``, per head) as

* within each chunk, the quadratic "attention-like" form (``chunk x chunk`` per chunk and head);
* between chunks, a recurrence over the ``(batch, heads, head_dim, state)`` states, one chunk at a time;
* ``B``/``C`` stay per group (never repeated to all heads);
* with a hand-written backward (:class:`_ChunkedSSD`): the forward saves its inputs (in their own dtype) and the
  states entering each chunk (``length / chunk x heads x head_dim x state``, float32); the backward recomputes the
  cheap per-chunk terms and runs the chunk recurrence in reverse. No forward is run twice, and nothing of size
  ``length x chunk`` outlives a layer's forward or backward.

The depthwise causal conv (:func:`causal_conv1d`) and the gated RMSNorm (:func:`gated_rms_norm`) also have
hand-written backwards that keep only their inputs (autograd would keep the conv's padded input and pre-activation and
four float32 copies of the norm's input). Everything accumulates in float32 and the SSD's output is float32, as in
transformers' reference.

Hooking in (:func:`install_mamba2_fast_path`), by what the installed transformers has:

* ``modeling_mamba2.mamba2_chunk_scan`` (newer releases: the mixer calls this module-level function, which
  transformers binds to mamba-ssm's ``mamba_chunk_scan_combined`` when that imports, else to its reference): the name
  is rebound to a dispatcher that keeps the original for CUDA tensors when it is mamba-ssm's kernel and calls
  :func:`mamba2_chunk_scan` otherwise; ``causal_conv1d_fn`` likewise goes to :func:`causal_conv1d` (on CPU,
  ``F.conv1d``'s depthwise backward alone took seconds per layer). This covers training, scoring and a prompt's
  prefill with a cache (initial and final states); single-token decoding steps keep transformers' recurrent update.
* ``Mamba2Mixer.torch_forward`` (older releases: ``forward`` picks ``cuda_kernels_forward`` for CUDA with the kernels,
  else ``torch_forward``): the method is replaced at class level by :func:`mamba2_forward`, which runs the full-sequence
  forward (in_proj, conv, SSD, gated RMSNorm, out_proj) and hands calls with a cache to the original ``torch_forward``.
* both: ``MambaRMSNormGated.forward`` becomes :func:`gated_rms_norm` (the same function; on CUDA with the kernels the
  fused training path never calls it).

Opt out with ``BIOMAMBA_FAST_SCAN=0`` (the same switch as Mamba-1's fast scan) or :func:`uninstall_mamba2_fast_path`.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F

from . import FAST_SCAN_ENV, fast_scan_opted_out  # the same switch as Mamba-1's fast scan

__all__ = [
    "MAMBA2_FAST_PATH_NAME",
    "causal_conv1d",
    "gated_rms_norm",
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
_NORM_ATTRIBUTE = "MambaRMSNormGated.forward"

logger = logging.getLogger(__name__)

# What install_mamba2_fast_path replaced: attribute name -> the original (module-level function or the mixer method).
_installed: dict[str, object] = {}
_logged = False


# ----------------------------------------------------------------------------------------------------------------------
# the SSD
#
# Layout inside: sequences cut into chunks of q positions, "natural" tensors as (b, c, q, h, ...) (a view of the
# (b, l, h, ...) input), per-head (q x q) matrices as (b, c, h, q, q). Heads share B/C within a group of r = h / g
# heads, so the state matmuls run per (b, c, g) on (q, r * p) blocks, which for g = 1 are views without a copy.


def default_chunk_size(device: torch.device | str, configured: int) -> int:
    """Chunk length used by the portable path. The result does not depend on it (up to rounding); speed does: on CPU
    64 keeps the ``chunk x chunk`` blocks cache-resident and the quadratic work small, on accelerators the configured
    size (256 for the released checkpoints) means fewer, larger matmuls."""
    device_type = getattr(device, "type", str(device)).split(":")[0]
    return min(int(configured), 64) if device_type == "cpu" else int(configured)


def ssd_scan(x, dt, A, B, C, chunk_size: int, D=None, initial_states=None):
    """The SSD ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t`` (per head) of ``x (b, l, h, p)``,
    ``dt (b, l, h)`` (already softplus'ed and clamped), ``A (h,)``, ``B``/``C (b, l, g, n)``, ``D (h,)`` or ``None``,
    ``initial_states (b, h, p, n)`` or ``None``. Returns ``(y (b, l, h, p), final_state (b, h, p, n))`` in float32;
    the backward is :class:`_ChunkedSSD`'s (memory linear in the length)."""
    return _ChunkedSSD.apply(x, dt, A, B, C, D, initial_states, chunk_size)


class _ChunkedSSD(torch.autograd.Function):
    """The chunked SSD with a hand-written backward. Saves only its inputs (in their own dtype); the backward
    recomputes the per-chunk terms and the states entering each chunk (all cheaper than the forward: no within-chunk
    product), one layer at a time, so nothing of size ``length x chunk`` outlives the forward."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_states, chunk_size):
        y, final_state = _ssd_forward(*_as_float(x, dt, A, B, C, D, initial_states), chunk_size)
        ctx.save_for_backward(x, dt, A, B, C, D, initial_states)
        ctx.chunk_size = chunk_size
        return y, final_state

    @staticmethod
    def backward(ctx, dy, d_final_state):
        inputs = ctx.saved_tensors
        grads = _ssd_backward(*_as_float(*inputs), dy, d_final_state, ctx.chunk_size)
        return (*(g.to(t.dtype) if t is not None else None for g, t in zip(grads, inputs)), None)


def _float(t):
    """Half precisions to float32 (float64 stays, for gradcheck)."""
    return t if t is None or t.dtype == torch.float64 else t.float()


def _as_float(*tensors):
    return [_float(t) for t in tensors]


def _chunked(t, q):
    """``(b, l, ...) -> (b, c, q, ...)``, zero-padded to whole chunks (zero dt at padded positions: decay 1 and no
    input, so the final state is the state after the last real position)."""
    pad = -t.shape[1] % q
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], -1, q, *t.shape[2:])


def _grouped(t, groups):
    """Natural ``(b, c, q, h, p)`` -> ``(b, c, g, q, r * p)``: per (chunk, group) the ``q x (r * p)`` block."""
    b, c, q = t.shape[:3]
    return t.reshape(b, c, q, groups, -1).transpose(2, 3)


def _ungrouped(t, heads):
    """Inverse of :func:`_grouped`: ``(b, c, g, q, r * p) -> (b, c, q, h, p)``."""
    b, c, _, q, _ = t.shape
    return t.transpose(2, 3).reshape(b, c, q, heads, -1)


class _Chunks:
    """What forward and backward share (the backward recomputes it): for chunk c, head h, positions l, s in it,

    ``a``: ``(b, c, h, q)`` log-decay from the chunk start, ``a_l = sum_{k <= l} dt_k A``;
    ``xdt``: ``x dt``, natural layout; ``decay``: ``exp(a)``; ``to_end``: ``exp(a_end - a)``, both ``(b, c, h, q)``;
    ``L``: ``exp(a_l - a_s)`` for ``s <= l``, else 0, ``(b, c, h, q, q)``; ``CB``: ``C_l . B_s`` per group.
    ``M = CB * L`` is the within-chunk "attention" matrix of each head. (Large temporaries are updated in place:
    on CPU a fresh allocation of this size costs as much as the arithmetic.)
    """

    def __init__(self, x, dt, A, B, C, q):
        self.length, self.heads = x.shape[1], x.shape[2]
        self.groups = B.shape[2]
        self.x, dt, self.B, self.C = (_chunked(t, q) for t in (x, dt, B, C))
        self.dt = dt.transpose(2, 3)  # (b, c, h, q)
        self.a = (self.dt * A[:, None]).cumsum(-1)
        self.xdt = self.x * dt[..., None]
        self.Bg, self.Cg = self.B.transpose(2, 3), self.C.transpose(2, 3)  # (b, c, g, q, n)
        self.decay = torch.exp(self.a)
        self.to_end = torch.exp(self.a[..., -1:] - self.a)
        causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
        self.L = (self.a[..., :, None] - self.a[..., None, :]).masked_fill_(~causal, -float("inf")).exp_()
        self.CB = self.Cg @ self.Bg.transpose(-1, -2)  # (b, c, g, q, q)

    def scale_by_CB(self, t):  # (b, c, h, q, q) *= CB of each head's group, in place
        self._per_head(t).mul_(self.CB[:, :, :, None])
        return t

    def _per_head(self, t):  # (b, c, h, ...) -> (b, c, g, r, ...)
        return t.view(t.shape[0], t.shape[1], self.groups, -1, *t.shape[3:])

    def natural(self, t):  # (b, c, h, q) -> (b, c, q, h, 1), to scale natural-layout tensors
        return t.transpose(2, 3)[..., None]

    def unchunked(self, t):  # (b, c, q, ...) -> (b, l, ...)
        return t.reshape(t.shape[0], -1, *t.shape[3:])[:, : self.length]


def _ssd_forward(x, dt, A, B, C, D, initial_states, chunk_size: int):
    """float32 inputs as in :func:`ssd_scan`; returns ``(y, final_state)``."""
    s = _Chunks(x, dt, A, B, C, chunk_size)

    # 1. within each chunk: y_l = sum_{s <= l} M_ls x_s dt_s (per head)
    y_diag = s.scale_by_CB(s.L) @ s.xdt.transpose(2, 3)  # M xdt, (b, c, h, q, p)

    # 2.-3. the state entering each chunk
    entering, final_state = _entering_states(s, _grouped(s.xdt * s.natural(s.to_end), s.groups), initial_states)

    # 4. the entering state seen from each position: exp(a_l) C_l S_c
    y = _ungrouped(s.Cg @ _grouped_states(entering, s.groups).transpose(-1, -2), s.heads)  # (b, c, q, h, p)
    y.mul_(s.natural(s.decay)).add_(y_diag.transpose(2, 3))
    if D is not None:
        y.addcmul_(s.x, D[:, None])
    return s.unchunked(y), final_state


def _entering_states(s, x_to_end, initial_states):
    """The states entering each chunk ``(b, c, h, p, n)`` and the final state, from ``x_to_end = xdt exp(a_end - a)``
    (grouped): each chunk adds ``sum_s x_to_end_s B_s^T`` at its end, ``S_{c+1} = exp(a_end,c) S_c + that``."""
    batch, chunks, _, heads, head_dim = s.x.shape
    chunk_states = (x_to_end.transpose(-1, -2) @ s.Bg).view(batch, chunks, heads, head_dim, -1)
    if initial_states is None:
        initial_states = chunk_states.new_zeros(batch, heads, head_dim, chunk_states.shape[-1])
    return _chunk_recurrence(s.decay[..., -1], chunk_states, initial_states)


def _grouped_states(states, groups):  # (b, c, h, p, n) -> (b, c, g, r * p, n)
    return states.view(states.shape[0], states.shape[1], groups, -1, states.shape[-1])


def _chunk_recurrence(decay, inputs, state, reverse=False):
    """``S_{c+1} = decay_c S_c + inputs_c`` from ``S_0 = state`` for ``decay (b, c, h)``, ``inputs (b, c, h, p, n)``,
    ``state (b, h, p, n)``: returns ``(S_0 .. S_{c-1}, S_c)``. With ``reverse``, the same from the last chunk back
    (``G_c = decay_c G_{c+1} + inputs_c`` from ``G_chunks = state``; returns ``(G_1 .. G_chunks, G_0)``), which is
    the backward of the forward recurrence. A loop over chunks: each step is one elementwise update of the states."""
    out = torch.empty_like(inputs)
    chunks = inputs.shape[1]
    for c in reversed(range(chunks)) if reverse else range(chunks):
        out[:, c] = state
        state = torch.addcmul(inputs[:, c], state, decay[:, c, :, None, None])
    return out, state


def _ssd_backward(x, dt, A, B, C, D, initial_states, dy, d_final_state, chunk_size: int):
    """Gradients of :func:`_ssd_forward` (float32 inputs) for ``dy`` and ``d_final_state``:
    ``(dx, ddt, dA, dB, dC, dD, d_initial_states)``. ``da`` collects the gradient of the log-decay ``a``; ``a`` is a
    cumulative sum of ``dt A``, so ``d(dt A)`` is its reverse cumulative sum."""
    s = _Chunks(x, dt, A, B, C, chunk_size)
    batch, chunks, q, heads, head_dim = s.x.shape
    state = B.shape[-1]
    dy = _chunked(dy.to(s.x.dtype), q)  # (b, c, q, h, p)
    x_to_end = _grouped(s.xdt * s.natural(s.to_end), s.groups)  # (b, c, g, q, r*p)
    entering, _ = _entering_states(s, x_to_end, initial_states)
    dD = None if D is None else (dy * s.x).sum((0, 1, 2, 4))
    dx = dy * D[:, None] if D is not None else torch.zeros_like(s.x)

    # 4. y_l += exp(a_l) C_l S_c: gradients of C, of the entering states, and of a (through exp(a_l))
    dy_decayed = _grouped(dy * s.natural(s.decay), s.groups)  # (b, c, g, q, r*p)
    S = _grouped_states(entering, s.groups)  # (b, c, g, r*p, n)
    dC = dy_decayed @ S
    d_entering = (dy_decayed.transpose(-1, -2) @ s.Cg).view_as(entering)
    y_state = _ungrouped(s.Cg @ S.transpose(-1, -2), heads)  # recomputed: da_l = sum_p dy exp(a_l) C_l S_c
    da = (_ungrouped(dy_decayed, heads) * y_state).sum(-1).transpose(2, 3).contiguous()  # (b, c, h, q)

    # 3. the recurrence in reverse: d chunk_states_c = G_{c+1}; d initial = G_0; d a_end,c = exp(a_end,c) <S_c, G_{c+1}>
    end_decay = s.decay[..., -1]
    d_chunk_states, d_initial = _chunk_recurrence(
        end_decay, d_entering, d_final_state.to(entering.dtype), reverse=True
    )
    dot = entering.view(-1, 1, head_dim * state) @ d_chunk_states.view(-1, head_dim * state, 1)
    da[..., -1] += end_decay * dot.view_as(end_decay)

    # 2. chunk_states = sum_s (xdt_s exp(a_end - a_s)) B_s^T
    d_chunk_states = _grouped_states(d_chunk_states, s.groups)
    dB = x_to_end @ d_chunk_states  # (b, c, g, q, n)
    d_x_to_end = _ungrouped(s.Bg @ d_chunk_states.transpose(-1, -2), heads)  # (b, c, q, h, p)
    dxdt = d_x_to_end.mul_(s.natural(s.to_end))
    d_log_to_end = (dxdt * s.xdt).sum(-1).transpose(2, 3)  # (b, c, h, q): d(a_end - a_s)
    da -= d_log_to_end
    da[..., -1] += d_log_to_end.sum(-1)

    # 1. y_diag = M xdt with M = CB * L, L = exp(a_l - a_s): dM = dy xdt^T, d log L = dM * M (row minus column sums)
    dy_heads = dy.transpose(2, 3).contiguous()  # (b, c, h, q, p)
    dM = dy_heads @ s.xdt.transpose(2, 3).contiguous().transpose(-1, -2)
    dM.mul_(s.L)  # dM * L = d CB (summed over the group's heads)
    dCB = s._per_head(dM).sum(3)  # (b, c, g, q, q)
    M = s.scale_by_CB(s.L)
    dxdt += (M.transpose(-1, -2) @ dy_heads).transpose(2, 3)
    d_log_L = s.scale_by_CB(dM)  # dM * M
    da += d_log_L.sum(-1) - d_log_L.sum(-2)
    dC += dCB @ s.Bg
    dB += dCB.transpose(-1, -2) @ s.Cg

    # xdt = x dt and a = cumsum(dt A)
    dx.addcmul_(dxdt, s.natural(s.dt))
    d_dtA = da.flip(-1).cumsum(-1).flip(-1)  # (b, c, h, q)
    ddt = (dxdt * s.x).sum(-1).transpose(2, 3) + d_dtA * A[:, None]
    dA = (d_dtA * s.dt).sum((0, 1, 3))
    dB, dC = (t.transpose(2, 3) for t in (dB, dC))  # (b, c, q, g, n)
    return (
        s.unchunked(dx),
        s.unchunked(ddt.transpose(2, 3)),
        dA,
        s.unchunked(dB),
        s.unchunked(dC),
        dD,
        d_initial,
    )


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
    ``hidden_states (b, channels, l)`` with ``weight (channels, kernel)``, as a sum of ``kernel`` shifted products
    (on CPU, ``F.conv1d``'s depthwise backward is about two orders of magnitude slower). Without an activation or with
    SiLU the backward is hand-written and keeps only the input (the pre-activation is recomputed)."""
    if activation in (None, "silu", "swish"):
        out = _CausalConv.apply(hidden_states, weight, bias, activation is not None)
    else:
        from transformers.activations import ACT2FN

        out = ACT2FN[activation](_conv(hidden_states.to(weight.dtype), weight, bias))
    return out.to(hidden_states.dtype)


def _conv(x, weight, bias):
    """``sum_k weight[:, k] x[t - kernel + 1 + k]`` (+ bias), computed along the length in ``(b, l, channels)``."""
    length, kernel = x.shape[-1], weight.shape[-1]
    padded = F.pad(x.transpose(1, 2), (0, 0, kernel - 1, 0))  # (b, l + kernel - 1, channels)
    out = padded[:, kernel - 1 :] * weight[:, kernel - 1]
    for k in range(kernel - 1):
        out.addcmul_(padded[:, k : k + length], weight[:, k])
    if bias is not None:
        out.add_(bias)
    return out.transpose(1, 2)


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu: bool):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu, ctx.x_dtype = silu, x.dtype
        out = _conv(x.to(weight.dtype), weight, bias)
        return F.silu(out) if silu else out

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        x = x.to(weight.dtype)
        d_pre = dy.to(weight.dtype)
        if ctx.silu:
            d_pre = torch.ops.aten.silu_backward(d_pre, _conv(x, weight, bias))
        d_pre = d_pre.transpose(1, 2)  # (b, l, channels), as _conv computes
        length, kernel = d_pre.shape[1], weight.shape[-1]
        xt = x.transpose(1, 2)
        # out_t = sum_k w_k x_{t - kernel + 1 + k}: dx_t = sum_k w_k d_pre_{t + kernel - 1 - k}, dw_k = sum_t d_pre_t x_{...}
        dx = d_pre * weight[:, kernel - 1]
        dw = torch.empty_like(weight)
        dw[:, kernel - 1] = (d_pre * xt).sum((0, 1))
        for k in range(kernel - 1):
            shift = kernel - 1 - k
            if shift < length:
                dx[:, : length - shift].addcmul_(d_pre[:, shift:], weight[:, k])
                dw[:, k] = (d_pre[:, shift:] * xt[:, : length - shift]).sum((0, 1))
            else:
                dw[:, k] = 0
        db = d_pre.sum((0, 1)) if bias is not None else None
        return dx.transpose(1, 2).to(ctx.x_dtype), dw, db, None


def gated_rms_norm(norm, hidden_states, gate=None):
    """``MambaRMSNormGated.forward`` (transformers' Mamba-2 gated RMSNorm, ``norm_before_gate=False``) with the same
    result and a hand-written backward that keeps only its inputs and the per-group inverse RMS: autograd would keep
    four float32 copies of the ``(tokens, intermediate)`` activations per layer."""
    group_size = getattr(norm, "group_size", hidden_states.shape[-1])  # older releases: one group
    if gate is None:
        return _GatedRMSNorm.apply(hidden_states, hidden_states.new_ones(()), norm.weight, norm.variance_epsilon, 0)
    return _GatedRMSNorm.apply(hidden_states, gate, norm.weight, norm.variance_epsilon, group_size)


def _norm_forward(self, hidden_states, gate=None):
    """Installed as ``MambaRMSNormGated.forward``."""
    return gated_rms_norm(self, hidden_states, gate)


def _gated_inputs(hidden_states, gate, group_size):
    """float32 ``u = hidden * silu(gate)`` viewed as ``(..., groups, group_size)`` (gate size 0: no gate)."""
    u = _float(hidden_states)
    if group_size:
        u = u * F.silu(_float(gate))
    return u.view(*u.shape[:-1], -1, group_size or u.shape[-1])


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_states, gate, weight, eps, group_size):
        u = _gated_inputs(hidden_states, gate, group_size)
        rstd = torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(hidden_states, gate, weight, rstd)
        ctx.group_size = group_size
        return weight * (u * rstd).view(hidden_states.shape).to(hidden_states.dtype)

    @staticmethod
    def backward(ctx, d_out):
        hidden_states, gate, weight, rstd = ctx.saved_tensors
        n = _gated_inputs(hidden_states, gate, ctx.group_size) * rstd
        normed = n.view(hidden_states.shape).to(hidden_states.dtype)
        d_weight = (d_out * normed).sum(tuple(range(d_out.dim() - 1))).to(weight.dtype)
        # n = u * rstd, rstd = (mean(u^2) + eps)^-1/2: du = rstd * (dn - n * mean(dn * n)) per group
        dn = _float((d_out * weight).to(hidden_states.dtype)).view_as(n)
        du = dn.sub_(n * (dn * n).mean(-1, keepdim=True)).mul_(rstd).view(hidden_states.shape)
        if not ctx.group_size:
            return du.to(hidden_states.dtype), None, d_weight, None, None
        gate32 = _float(gate)
        d_hidden = du * F.silu(gate32)
        d_gate = torch.ops.aten.silu_backward(du.mul_(_float(hidden_states)), gate32)
        return d_hidden.to(hidden_states.dtype), d_gate.to(gate.dtype), d_weight, None, None


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
    y, _ = ssd_scan(
        x.reshape(batch, seq_len, -1, mixer.head_dim),
        dt,
        -torch.exp(mixer.A_log.float()),
        B.reshape(batch, seq_len, mixer.n_groups, -1),
        C.reshape(batch, seq_len, mixer.n_groups, -1),
        default_chunk_size(projected_states.device, mixer.chunk_size),
        D=mixer.D,
    )
    return gated_rms_norm(mixer.norm, y.reshape(batch, seq_len, -1), gate)


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
    scan_output = _mixer_middle(mixer, mixer.in_proj(hidden_states), attention_mask)
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
    from ..patches import hub_kernel_binding

    kernel_bound, _ = hub_kernel_binding(original)
    if kernel_bound is not None:
        return kernel_bound
    # transformers' bare reference function (no wrapper): not a kernel; an unknown wrapper: keep it where kernels run
    return not getattr(original, "__module__", "").startswith("transformers.")


# What the dispatchers call instead of transformers' function (module-level, so tests can swap an entry).
_PORTABLE = {_CHUNK_SCAN_ATTRIBUTE: mamba2_chunk_scan, _CONV_ATTRIBUTE: causal_conv1d}
# Per replaced attribute: whether its original is the kernel package's (read once, at install).
_kernel_bound: dict[str, bool] = {}


def _dispatcher(attribute: str):
    """A stand-in for transformers' module-level ``attribute``: the original where it is the kernel package's
    function and the tensors are on CUDA, and for packed sequences (``seq_idx``/``cu_seqlens``); else
    ``_PORTABLE[attribute]``."""

    def dispatch(*args, **kwargs):
        hidden_states = args[0] if args else kwargs["hidden_states"]
        packed = kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None
        if packed or (hidden_states.device.type == "cuda" and _kernel_bound[attribute]):
            return _installed[attribute](*args, **kwargs)
        return _PORTABLE[attribute](*args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = f"biomamba_{attribute}"
    return dispatch


_DISPATCHERS = {attribute: _dispatcher(attribute) for attribute in _PORTABLE}


def _log_path_once() -> None:
    # Not while torch.compile traces: a logger call breaks the graph (at every layer); eager calls log it.
    global _logged
    if not _logged and not torch.compiler.is_compiling():
        _logged = True
        logger.info("Mamba-2 code path: %s", MAMBA2_FAST_PATH_NAME)


def install_mamba2_fast_path() -> bool:
    """Route transformers' Mamba-2 reference path through the portable one; returns whether it is active.

    Idempotent. Does nothing (returns whether it is already active) when ``BIOMAMBA_FAST_SCAN`` is
    ``0``/``false``/``no``/``off``. Raises ``RuntimeError`` when transformers has neither hook point
    (``mamba2_chunk_scan`` nor ``Mamba2Mixer.torch_forward``), so an upstream refactor fails loudly instead of
    silently losing the path.
    """
    if fast_scan_opted_out() or _installed:
        return mamba2_fast_path_active()
    from transformers.models.mamba2 import modeling_mamba2

    mixer = modeling_mamba2.Mamba2Mixer
    if callable(getattr(modeling_mamba2, _CHUNK_SCAN_ATTRIBUTE, None)):
        for attribute, dispatch in _DISPATCHERS.items():
            original = getattr(modeling_mamba2, attribute, None)
            if callable(original):
                _installed[attribute] = original
                _kernel_bound[attribute] = _kernel_binding(original)
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
    norm = getattr(modeling_mamba2, "MambaRMSNormGated", None)
    if norm is not None:  # the gated norm with a lean backward (the same function)
        _installed[_NORM_ATTRIBUTE] = norm.forward
        norm.forward = _norm_forward
    return mamba2_fast_path_active()


def uninstall_mamba2_fast_path() -> None:
    """Restore what :func:`install_mamba2_fast_path` replaced (idempotent)."""
    global _logged
    from transformers.models.mamba2 import modeling_mamba2

    for attribute, original in list(_installed.items()):
        if attribute == _TORCH_FORWARD_ATTRIBUTE:
            modeling_mamba2.Mamba2Mixer.torch_forward = original
        elif attribute == _NORM_ATTRIBUTE:
            modeling_mamba2.MambaRMSNormGated.forward = original
        else:
            setattr(modeling_mamba2, attribute, original)
        del _installed[attribute]
    _kernel_bound.clear()
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
