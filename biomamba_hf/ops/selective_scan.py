"""A portable selective scan for Mamba-1 in plain PyTorch, fast on CPU and usable on any GPU.

transformers' reference ``mamba_selective_scan`` materialises ``exp(dt * A)`` and ``dt * B * u`` for the whole
sequence and then walks the sequence one token at a time with a matmul per step; autograd then records one graph node
per token, which is what makes CPU training crawl. :func:`selective_scan` computes the same function:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t        y_t = <C_t, h_t> + D * u_t        out_t = y_t * silu(z_t)

with ``dt = softplus(delta + delta_bias)``, but

* walks the sequence in blocks of ``block_size`` tokens, so the ``(block, batch, dim, state)`` working tensors stay in
  cache and memory is linear in the sequence length with a small constant (no ``(L x L)`` tensors, nothing of size
  ``L x dim x state`` is kept);
* within a block the recurrence is an in-place ``addcmul`` per token on a contiguous time-major buffer (CPU), or a
  two-level chunked scan with ``cumprod`` for the carries (GPU, where per-token kernel launches dominate);
* uses ``exp2`` with a pre-scaled ``A`` (several times faster than ``exp`` on x86 CPUs);
* has a hand-written backward (a :class:`torch.autograd.Function`) that recomputes each block's states from the
  block's saved start state and runs the reverse recurrence, as the mamba-ssm CUDA kernel does, so training saves only
  the inputs plus one ``(batch, dim, state)`` state per block.

Everything accumulates in float32 whatever the input dtype; gradients come back in the inputs' dtypes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "default_block_size"]

_LOG2E = 1.0 / math.log(2.0)


def default_block_size(device: torch.device | str) -> int:
    """Tokens processed per block: small on CPU (cache-resident), large on accelerators (fewer launches)."""
    device_type = getattr(device, "type", str(device)).split(":")[0]
    return 32 if device_type == "cpu" else 256


def _scan_inplace(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Overwrite ``x`` (time-major, ``(T, ...)``) with the states of ``h_t = a_t * h_{t-1} + x_t`` from ``h0``."""
    steps = x.shape[0]
    if chunk is None or chunk >= steps:
        x[0].addcmul_(a[0], h0)
        for t in range(1, steps):
            x[t].addcmul_(a[t], x[t - 1])
        return x
    # Two-level scan: every chunk scans locally from a zero state (all chunks in parallel, `chunk` steps), then the
    # true state entering each chunk is carried across chunks (`steps / chunk` steps) and added back through the
    # cumulative product of the decays inside the chunk. All factors are products of decays <= 1: no overflow.
    n_chunks = -(-steps // chunk)
    pad = n_chunks * chunk - steps
    if pad:
        a = torch.cat([a, a.new_ones((pad, *a.shape[1:]))])
        xs = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    else:
        xs = x
    a_c = a.view(n_chunks, chunk, *a.shape[1:])
    x_c = xs.view(n_chunks, chunk, *xs.shape[1:])
    for j in range(1, chunk):
        x_c[:, j].addcmul_(a_c[:, j], x_c[:, j - 1])
    decay = torch.cumprod(a_c, dim=1)
    state = h0
    for k in range(n_chunks):
        x_c[k].addcmul_(decay[k], state.unsqueeze(0))
        state = x_c[k, -1]
    if pad:
        x.copy_(xs[:steps])
    return x


def _reverse_scan_inplace(a: torch.Tensor, g: torch.Tensor, carry: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Overwrite ``g`` with ``G_t = g_t + a_{t+1} * G_{t+1}`` where ``G_T := carry / a_T`` (i.e. ``carry`` is added
    to the last step as is): the adjoint of :func:`_scan_inplace`."""
    steps = g.shape[0]
    if chunk is None or chunk >= steps:
        g[steps - 1].add_(carry)
        for t in range(steps - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        return g
    shifted = torch.cat([a.new_ones((1, *a.shape[1:])), a[1:].flip(0)])
    flipped = g.flip(0)
    _scan_inplace(shifted, flipped, carry, chunk)
    g.copy_(flipped.flip(0))
    return g


def _prepare(u, delta, B, C, delta_bias, delta_softplus):
    """Time-major float32 copies: u, dt (L, batch, dim); B, C (L, batch, state)."""
    dt_t = delta.float().permute(2, 0, 1)
    if delta_bias is not None:
        dt_t = dt_t + delta_bias.float()
    if delta_softplus:
        dt_t = F.softplus(dt_t)
    dt_t = dt_t.contiguous()
    u_t = u.float().permute(2, 0, 1).contiguous()
    b_t = B.float().permute(2, 0, 1).contiguous()
    c_t = C.float().permute(2, 0, 1).contiguous()
    return u_t, dt_t, b_t, c_t


def _block_terms(dt_t, u_t, b_t, a2, s, e, buffers):
    """Decays ``exp(dt * A)`` and inputs ``dt * B * u`` of tokens ``s:e``, each ``(T, batch, dim, state)``, written
    into the first two of ``buffers`` (reused across blocks: fresh multi-MB allocations page-fault on every block)."""
    dt_blk = dt_t[s:e]
    steps = e - s
    decay = torch.mul(dt_blk.unsqueeze(-1), a2, out=buffers[0][:steps]).exp2_()
    inputs = torch.mul((dt_blk * u_t[s:e]).unsqueeze(-1), b_t[s:e].unsqueeze(2), out=buffers[1][:steps])
    return decay, inputs


def _work_buffers(count, block_size, like, batch, dim, state_size):
    steps = min(block_size, like.shape[0])
    return [like.new_empty(steps, batch, dim, state_size) for _ in range(count)]


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_size, chunk):
        batch, dim, length = u.shape
        state_size = A.shape[1]
        u_t, dt_t, b_t, c_t = _prepare(u, delta, B, C, delta_bias, delta_softplus)
        a2 = A.float() * _LOG2E
        y_t = u_t.new_empty(length, batch, dim)
        state = u_t.new_zeros(batch, dim, state_size)
        starts = list(range(0, length, block_size))
        block_states = u_t.new_empty(len(starts), batch, dim, state_size)
        buffers = _work_buffers(2, block_size, u_t, batch, dim, state_size)
        for k, s in enumerate(starts):
            e = min(s + block_size, length)
            block_states[k] = state
            decay, states = _block_terms(dt_t, u_t, b_t, a2, s, e, buffers)
            _scan_inplace(decay, states, state, chunk)
            state = states[-1].clone()
            y_t[s:e] = torch.einsum("tbdn,tbn->tbd", states, c_t[s:e])
        # Finish in time-major layout: inside MambaMixer that is the memory layout of u, z and of the out_proj input.
        if D is not None:
            y_t.addcmul_(u_t, D.float())
        out_t = y_t * F.silu(z.float().permute(2, 0, 1)) if z is not None else y_t

        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, block_states, y_t if z is not None else None)
        ctx.delta_softplus = delta_softplus
        ctx.block_size = block_size
        ctx.chunk = chunk
        out_dtype = u.dtype
        for extra in (D, z):
            if extra is not None:
                out_dtype = torch.promote_types(out_dtype, extra.dtype)
        return out_t.permute(1, 2, 0).to(out_dtype), state

    @staticmethod
    def backward(ctx, grad_out, grad_state):
        u, delta, A, B, C, D, z, delta_bias, block_states, y_t = ctx.saved_tensors
        batch, dim, length = u.shape
        block_size, chunk = ctx.block_size, ctx.chunk
        u_t, dt_t, b_t, c_t = _prepare(u, delta, B, C, delta_bias, ctx.delta_softplus)
        a_f = A.float()
        a2 = a_f * _LOG2E
        go_t = grad_out.float().permute(2, 0, 1)

        grad_z = None
        if z is not None:
            z_t = z.float().permute(2, 0, 1)
            sig = torch.sigmoid(z_t)
            gy_t = (go_t * (z_t * sig)).contiguous()
            if ctx.needs_input_grad[6]:
                grad_z = (go_t * y_t * sig * (1 + z_t * (1 - sig))).permute(1, 2, 0).to(z.dtype)
        else:
            gy_t = go_t.contiguous()
        grad_D = None
        if D is not None:
            grad_D = (gy_t * u_t).sum(dim=(0, 1)).to(D.dtype)
        grad_u_t = torch.zeros_like(u_t)
        grad_dt_t = torch.zeros_like(dt_t)
        grad_b_t = torch.zeros_like(b_t)
        grad_c_t = torch.zeros_like(c_t)
        grad_a = torch.zeros_like(a_f)
        carry = grad_state.float() if grad_state is not None else u_t.new_zeros(block_states.shape[1:])
        starts = list(range(0, length, block_size))
        buffers = _work_buffers(4, block_size, u_t, batch, dim, A.shape[1])
        for k in range(len(starts) - 1, -1, -1):
            s = starts[k]
            e = min(s + block_size, length)
            start_state = block_states[k]
            decay, inputs = _block_terms(dt_t, u_t, b_t, a2, s, e, buffers)
            states = _scan_inplace(decay, buffers[2][: e - s].copy_(inputs), start_state, chunk)
            gy_blk = gy_t[s:e]
            grad_c_t[s:e] = torch.matmul(gy_blk.unsqueeze(2), states).squeeze(2)
            # dL/dh_t from the output, then the reverse recurrence through the decays.
            grad_h = torch.mul(gy_blk.unsqueeze(-1), c_t[s:e].unsqueeze(2), out=buffers[3][: e - s])
            _reverse_scan_inplace(decay, grad_h, carry, chunk)
            carry = decay[0] * grad_h[0]  # a new tensor: the buffers are overwritten by the next block
            # dL/d(decay_t) * decay_t = G_t * decay_t * h_{t-1} = G_t * (h_t - x_t), built in the `inputs` buffer.
            weighted = torch.sub(states, inputs, out=inputs).mul_(grad_h)
            dt_blk = dt_t[s:e]
            grad_dt = torch.mul(weighted, a_f, out=states).sum(-1)
            grad_a += torch.mul(weighted, dt_blk.unsqueeze(-1), out=states).sum(dim=(0, 1))
            g_dot_b = torch.matmul(grad_h, b_t[s:e].unsqueeze(-1)).squeeze(-1)
            grad_dt_t[s:e] = grad_dt.addcmul_(g_dot_b, u_t[s:e])
            grad_u_t[s:e] = g_dot_b * dt_blk
            grad_b_t[s:e] = torch.matmul((dt_blk * u_t[s:e]).unsqueeze(2), grad_h).squeeze(2)

        if D is not None:
            grad_u_t.addcmul_(gy_t, D.float())
        if ctx.delta_softplus:
            pre = delta.float().permute(2, 0, 1)
            if delta_bias is not None:
                pre = pre + delta_bias.float()
            grad_dt_t.mul_(torch.sigmoid(pre))
        grad_bias = grad_dt_t.sum(dim=(0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
        return (
            grad_u_t.permute(1, 2, 0).to(u.dtype),
            grad_dt_t.permute(1, 2, 0).to(delta.dtype),
            grad_a.to(A.dtype),
            grad_b_t.permute(1, 2, 0).to(B.dtype),
            grad_c_t.permute(1, 2, 0).to(C.dtype),
            grad_D,
            grad_z,
            grad_bias,
            None,
            None,
            None,
        )


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(
            f"selective_scan: hidden_states must be (batch, intermediate_size, seq_len), got shape {tuple(u.shape)}"
        )
    batch, dim, length = u.shape
    if tuple(delta.shape) != (batch, dim, length):
        raise ValueError(
            f"selective_scan: dt must have the shape of hidden_states {tuple(u.shape)}, got {tuple(delta.shape)}"
        )
    if A.dim() != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(
            f"selective_scan: A must be a real (intermediate_size={dim}, state_size) tensor, got shape "
            f"{tuple(A.shape)} and dtype {A.dtype}"
        )
    state_size = A.shape[1]
    for name, tensor in (("B", B), ("C", C)):
        if tuple(tensor.shape) != (batch, state_size, length):
            raise ValueError(
                f"selective_scan: {name} must be input-dependent with shape (batch, state_size, seq_len) = "
                f"{(batch, state_size, length)}, got {tuple(tensor.shape)}; grouped or time-invariant {name} is "
                "not supported by the portable scan (use mamba-ssm's selective_scan_fn)"
            )
    for name, tensor in (("D", D), ("delta_bias", delta_bias)):
        if tensor is not None and tuple(tensor.shape) != (dim,):
            raise ValueError(f"selective_scan: {name} must have shape ({dim},), got {tuple(tensor.shape)}")
    if z is not None and tuple(z.shape) != (batch, dim, length):
        raise ValueError(
            f"selective_scan: z must have the shape of hidden_states {tuple(u.shape)}, got {tuple(z.shape)}"
        )


def selective_scan(
    hidden_states: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    block_size: int | None = None,
    chunk_size: int | None = None,
):
    """Mamba-1 selective scan with the signature of transformers' ``mamba_selective_scan`` / mamba-ssm's
    ``selective_scan_fn``.

    Args:
        hidden_states: ``u``, shape ``(batch, intermediate_size, seq_len)``.
        dt: time steps before ``delta_bias``/softplus, same shape as ``hidden_states``.
        A: ``(intermediate_size, state_size)``, real (``-exp(A_log)`` in Mamba).
        B, C: input-dependent, ``(batch, state_size, seq_len)``.
        D: optional skip, ``(intermediate_size,)``.
        z: optional gate, same shape as ``hidden_states``; the output is multiplied by ``silu(z)``.
        delta_bias: optional ``(intermediate_size,)`` added to ``dt`` before the softplus.
        delta_softplus: apply softplus to ``dt + delta_bias``.
        return_last_state: also return the float32 state after the last token, ``(batch, intermediate_size,
            state_size)``.
        block_size: tokens per block (default: :func:`default_block_size` of the device).
        chunk_size: chunk length of the two-level in-block scan; ``None`` picks per-token steps on CPU and 16 on
            other devices; ``0`` forces per-token steps.

    Returns:
        The output ``(batch, intermediate_size, seq_len)`` (in the promoted dtype of ``hidden_states``, ``D`` and
        ``z``, like the reference) and, with ``return_last_state``, the last state.

    Example:
        >>> import torch
        >>> u, dt = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
        >>> A, B, C = -torch.rand(4, 3), torch.randn(2, 3, 10), torch.randn(2, 3, 10)
        >>> out, state = selective_scan(u, dt, A, B, C, delta_softplus=True, return_last_state=True)
        >>> tuple(out.shape), tuple(state.shape)
        ((2, 4, 10), (2, 4, 3))
    """
    _check_shapes(hidden_states, dt, A, B, C, D, z, delta_bias)
    if block_size is None:
        block_size = default_block_size(hidden_states.device)
    if block_size < 1:
        raise ValueError(f"selective_scan: block_size must be >= 1, got {block_size}")
    if chunk_size is None:
        chunk_size = None if hidden_states.device.type == "cpu" else 16
    elif chunk_size <= 0:
        chunk_size = None
    out, state = _SelectiveScanFn.apply(
        hidden_states, dt, A, B, C, D, z, delta_bias, bool(delta_softplus), int(block_size), chunk_size
    )
    if return_last_state:
        return out, state
    return out
