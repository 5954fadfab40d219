"""Training-speed levers: chunked linear cross-entropy (no full fp32 logits) and compiled RMS norms.
Details: docs/modules.md.
"""

from __future__ import annotations

import functools
import inspect

import torch

from .data.clm import IGNORE_INDEX

__all__ = [
    "CHUNKED_CE_IMPLEMENTATIONS",
    "cache_triton_autotuning",
    "causal_lm_loss",
    "check_chunked_loss_model",
    "chunked_linear_cross_entropy",
    "compile_non_scan_parts",
    "liger_available",
    "loss_kernel",
]

#: ``implementation`` values of :func:`chunked_linear_cross_entropy`.
CHUNKED_CE_IMPLEMENTATIONS = ("auto", "torch", "liger")


#: Triton's switch for keeping autotuning results on disk (read when a ``@triton.autotune`` kernel is defined).
TRITON_AUTOTUNE_CACHE_ENV = "TRITON_CACHE_AUTOTUNING"


def cache_triton_autotuning() -> int:
    """Let later processes reuse the Triton autotuning of mamba-ssm's Mamba-2 kernels; returns the number of its
    already-defined autotuners switched on (0 when none is imported yet or the user turned the cache off).

    Each process autotunes mamba-ssm's 15 Triton SSD kernels once: 13 s at run_clm's shapes, 65-100 s at run_qa's on
    an H200 (``TRITON_PRINT_AUTOTUNING=1``, BENCHMARKS.md, sixth session), most of a BioASQ fine-tuning run. Triton
    keeps autotuning results on disk (next to its compiled kernels) only with ``TRITON_CACHE_AUTOTUNING=1``, which it
    reads when each kernel is defined, i.e. when mamba-ssm is imported: this sets that default for kernels not yet
    imported and switches the cache on for those already defined. An explicit ``TRITON_CACHE_AUTOTUNING=0`` is
    respected. The example scripts call it at start. Disk results are keyed by the kernel's source, its autotuning
    key and the device, as Triton's own cache is.
    """
    import os
    import sys

    from .ops import OFF_VALUES

    if os.environ.setdefault(TRITON_AUTOTUNE_CACHE_ENV, "1").strip().lower() in OFF_VALUES:
        return 0
    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("mamba_ssm.ops.triton"):
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "Autotuner" and getattr(value, "cache_results", True) is False:
                value.cache_results = True
                switched += 1
    return switched


def liger_available() -> bool:
    """True when liger-kernel (and with it Triton) can be imported."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss  # noqa: F401
    except Exception:  # ImportError, or Triton failing to initialise on a machine without a GPU
        return False
    return True


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: the autocast dtype where autocast is on (as for ``nn.Linear``)."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``labels``, gradients computed chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, chunk_size, compute_dtype):
        need_hidden_grad, need_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        num_tokens = hidden.shape[0]
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden_grad else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight_grad else None
        )
        w = weight.to(compute_dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, num_tokens, chunk_size):
                end = min(start + chunk_size, num_tokens)
                h = hidden[start:end].to(compute_dtype)
                target = labels[start:end]
                valid = target.ne(ignore_index)
                safe_target = target.masked_fill(~valid, 0)
                logits = (h @ w.t()).float()  # (chunk, vocab): the only logits alive at any time
                lse = torch.logsumexp(logits, dim=-1)
                target_logit = logits.gather(1, safe_target.unsqueeze(1)).squeeze(1)
                loss += ((lse - target_logit) * valid).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                # d(loss)/d(logits) = softmax - one_hot(target), zero on ignored rows; computed in place.
                grad_logits = logits.sub_(lse.unsqueeze(1)).exp_()
                grad_logits[torch.arange(end - start, device=hidden.device), safe_target] -= 1.0
                grad_logits.mul_(valid.unsqueeze(1))
                grad_logits = grad_logits.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = (grad_logits @ w).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (grad_logits.t() @ h).float()
        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else torch.empty(0),
            grad_weight.to(weight.dtype) if grad_weight is not None else torch.empty(0),
        )
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        need_hidden_grad, need_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if need_hidden_grad else None,
            grad_weight * grad_output.to(grad_weight.dtype) if need_weight_grad else None,
            None,
            None,
            None,
            None,
        )


def _liger_sum(hidden, weight, labels, ignore_index):
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    compute_dtype = _compute_dtype(hidden)
    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="sum")
    return loss_fn(weight.to(compute_dtype), hidden.to(compute_dtype), labels).float()


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    shift_labels: bool = True,
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int = 1024,
    implementation: str = "auto",
) -> torch.Tensor:
    """Cross-entropy of the logits ``hidden @ weight.T`` against ``labels``, without materialising the logits.

    Equal (up to float rounding) to transformers' causal-LM loss,
    ``ForCausalLMLoss(lm_head(hidden).float(), labels, vocab_size)``:

    * ``shift_labels=True``: position ``t`` predicts ``labels[..., t + 1]`` (pass ``labels = input_ids`` as for a
      causal LM); ``False`` scores position ``t`` against ``labels[..., t]``.
    * Targets equal to ``ignore_index`` do not count.
    * The summed loss is divided by ``num_items_in_batch`` when given (``Trainer`` passes the number of counted
      tokens of the whole gradient-accumulation step), else by the number of counted targets here.
    * Under autocast the head's matmul runs in the autocast dtype and the softmax in float32, as ``nn.Linear``
      followed by ``.float()`` does.

    Args:
        hidden: ``(..., hidden_size)`` final hidden states.
        weight: ``(vocab_size, hidden_size)`` weight of the (bias-free) output layer.
        labels: ``hidden.shape[:-1]`` integer targets.
        chunk_size: tokens per chunk; each chunk holds a ``(chunk_size, vocab_size)`` float32 logits block.
        implementation: ``"torch"`` (this module's chunked PyTorch loop), ``"liger"`` (liger-kernel's Triton kernel;
            CUDA tensors only) or ``"auto"`` (liger-kernel for CUDA tensors where it is installed, else torch).

    >>> import torch
    >>> hidden, weight = torch.randn(2, 5, 8), torch.randn(11, 8)
    >>> labels = torch.tensor([[1, 2, 3, 4, 5], [6, 7, -100, -100, -100]])
    >>> reference = torch.nn.functional.cross_entropy(
    ...     (hidden @ weight.T)[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    >>> bool(torch.allclose(chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=3), reference))
    True
    """
    if implementation not in CHUNKED_CE_IMPLEMENTATIONS:
        raise ValueError(
            f"implementation={implementation!r} is not one of {', '.join(CHUNKED_CE_IMPLEMENTATIONS)}; use 'torch' "
            "for the portable chunked loss or 'liger' for liger-kernel's Triton kernel."
        )
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tokens, got {chunk_size!r}.")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} does not match hidden states of shape {tuple(hidden.shape)}: "
            "pass the output layer's (vocab_size, hidden_size) weight, e.g. model.get_output_embeddings().weight."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match hidden states of shape {tuple(hidden.shape)}: "
            "pass one target per position (labels.shape == hidden.shape[:-1])."
        )
    labels = labels.to(hidden.device)
    if shift_labels:
        # As transformers' ForCausalLMLoss: pad then shift, so hidden keeps its (contiguous) shape.
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)

    if loss_kernel(hidden.device, implementation) == "liger-kernel":
        if hidden.device.type != "cuda":
            raise ValueError(
                f"implementation='liger' runs liger-kernel's Triton kernel, which needs CUDA tensors (got "
                f"{hidden.device.type}); use implementation='torch' or 'auto'."
            )
        if not liger_available():
            raise ValueError("implementation='liger' needs the liger-kernel package: `pip install liger-kernel`.")
        loss_sum = _liger_sum(hidden, weight, labels, ignore_index)
    else:
        loss_sum = _ChunkedLinearCrossEntropy.apply(
            hidden, weight, labels, ignore_index, chunk_size, _compute_dtype(hidden)
        )
    if num_items_in_batch is None:
        denominator = labels.ne(ignore_index).sum()
    elif torch.is_tensor(num_items_in_batch):
        denominator = num_items_in_batch.to(loss_sum.device)
    else:
        denominator = num_items_in_batch
    return loss_sum / denominator


@functools.cache
def _forward_takes_logits_to_keep(model_class: type) -> bool:
    """Whether ``model_class.forward`` takes ``logits_to_keep``: read once per class (``inspect.signature`` is slow,
    and :func:`causal_lm_loss` checks its model at every training step)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def check_chunked_loss_model(model) -> None:
    """Raise ``ValueError`` unless :func:`causal_lm_loss` can compute the training loss of ``model``: a causal LM
    with a bias-free linear output layer, a base model (``base_model_prefix``) and a ``logits_to_keep`` argument."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    prefix = getattr(model, "base_model_prefix", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or not hasattr(model, prefix or ""):
        raise ValueError(
            f"{type(model).__name__} is not a causal LM with a bias-free linear output layer and a base model "
            "(e.g. MambaForCausalLM, GPT2LMHeadModel): the chunked cross-entropy cannot replace its loss."
        )
    if not _forward_takes_logits_to_keep(type(model)):
        raise ValueError(
            f"{type(model).__name__}.forward has no logits_to_keep argument, so its forward would build the full "
            "logits the chunked cross-entropy avoids; train it without --loss_chunk_size."
        )


def causal_lm_loss(
    model,
    inputs: dict,
    *,
    wrapped=None,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int = 1024,
    implementation: str = "auto",
) -> torch.Tensor:
    """Training loss of the causal LM ``model`` on the batch ``inputs`` (with ``labels``), through
    :func:`chunked_linear_cross_entropy`: equal to ``model(**inputs).loss`` without the ``(tokens x vocab)`` logits.

    The forward runs through ``wrapped`` (default ``model``; pass the ``DistributedDataParallel`` wrapper so that it
    synchronises the gradients) with ``logits_to_keep=1``; the base model's last hidden state is read by a forward
    hook held for that call only. ``num_items_in_batch`` divides the summed loss as in transformers' causal-LM loss.

    Raises:
        ValueError: see :func:`check_chunked_loss_model`; for a batch without ``labels``.
    """
    check_chunked_loss_model(model)  # at every step: its forward's signature is read once per model class
    inputs = dict(inputs)
    labels = inputs.pop("labels", None)
    if labels is None:
        raise ValueError(f"causal_lm_loss needs a batch with labels, got the keys {sorted(inputs)}.")
    hidden = []
    body = getattr(model, model.base_model_prefix)
    handle = body.register_forward_hook(lambda module, args, output: hidden.append(output[0]))
    try:
        (wrapped if wrapped is not None else model)(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return chunked_linear_cross_entropy(
        hidden[-1],
        model.get_output_embeddings().weight,
        labels,
        num_items_in_batch=num_items_in_batch,
        chunk_size=chunk_size,
        implementation=implementation,
    )


def loss_kernel(device: torch.device | str, implementation: str = "auto") -> str:
    """The kernel :func:`chunked_linear_cross_entropy` runs on ``device``: ``"liger-kernel"`` or ``"PyTorch"``."""
    on_cuda = torch.device(device).type == "cuda"
    use_liger = implementation == "liger" or (implementation == "auto" and on_cuda and liger_available())
    return "liger-kernel" if use_liger else "PyTorch"


def compile_non_scan_parts(model, **compile_kwargs):
    """``torch.compile`` each RMS norm of a Mamba model in place (the blocks' and the final one); returns ``model``.

    With mamba-ssm's kernels the mixer (input projection, convolution, selective scan, output projection) is one
    fused autograd function that ``torch.compile`` cannot trace; the norms around it, which up-cast to float32 in
    several elementwise kernels, are what is left to fuse. ``compile_kwargs`` go to ``nn.Module.compile``.

    Raises:
        ValueError: for a model that is not a Mamba model (no ``backbone.layers[*].norm``).
    """
    body = getattr(model, "backbone", model)
    layers = getattr(body, "layers", None)
    if layers is None or not all(hasattr(layer, "norm") for layer in layers):
        raise ValueError(
            f"{type(model).__name__} has no Mamba blocks (backbone.layers[*].norm): compile_non_scan_parts only "
            "applies to Mamba models."
        )
    for layer in layers:
        layer.norm.compile(**compile_kwargs)
    if hasattr(body, "norm_f"):
        body.norm_f.compile(**compile_kwargs)
    return model
