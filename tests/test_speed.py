"""Correctness of the training-speed levers in biomamba_hf.speed (their speed lives in benchmarks/)."""

from __future__ import annotations

import doctest

import pytest
import torch
from helpers import tiny_config

from biomamba_hf import speed
from biomamba_hf.speed import (
    chunked_linear_cross_entropy,
    compile_non_scan_parts,
    disable_chunked_cross_entropy,
    enable_chunked_cross_entropy,
)

VOCAB = 53


def _reference_loss(hidden, weight, labels, shift=True, num_items_in_batch=None):
    logits = (hidden @ weight.t()).float()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction=reduction
    )
    return loss if num_items_in_batch is None else loss / num_items_in_batch


def _inputs(seed=0, batch=3, length=11, hidden_size=16, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, hidden_size, generator=generator, dtype=dtype).requires_grad_()
    weight = (0.3 * torch.randn(VOCAB, hidden_size, generator=generator, dtype=dtype)).requires_grad_()
    labels = torch.randint(0, VOCAB, (batch, length), generator=generator)
    labels[1, 6:] = -100  # right padding
    labels[2, 0] = -100
    return hidden, weight, labels


def _loss_and_grads(fn, hidden, weight, labels, **kwargs):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    loss = fn(hidden, weight, labels, **kwargs)
    (3.0 * loss).backward()  # a non-unit upstream gradient reaches the saved gradients
    return loss.detach(), hidden.grad, weight.grad


def test_doctests():
    assert doctest.testmod(speed).failed == 0


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 33, 1000])
@pytest.mark.parametrize("shift", [True, False])
def test_chunked_loss_and_gradients_match_cross_entropy(chunk_size, shift):
    hidden, weight, labels = _inputs()
    expected = _loss_and_grads(_reference_loss, hidden, weight, labels, shift=shift)
    got = _loss_and_grads(
        chunked_linear_cross_entropy, hidden, weight, labels, shift_labels=shift, chunk_size=chunk_size
    )
    for name, a, b in zip(("loss", "hidden grad", "weight grad"), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs")


def test_num_items_in_batch_divides_the_summed_loss():
    hidden, weight, labels = _inputs(seed=1)
    expected = _loss_and_grads(_reference_loss, hidden, weight, labels, num_items_in_batch=40)
    got = _loss_and_grads(chunked_linear_cross_entropy, hidden, weight, labels, num_items_in_batch=torch.tensor(40))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_only_requested_gradients_are_computed():
    hidden, weight, labels = _inputs(seed=2)
    weight = weight.detach()
    hidden = hidden.detach().requires_grad_()
    chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=5).backward()
    assert hidden.grad is not None and weight.grad is None
    with torch.no_grad():
        loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=5)
    torch.testing.assert_close(loss, _reference_loss(hidden.detach(), weight, labels))


def test_bf16_autocast_matches_linear_then_float():
    hidden, weight, labels = _inputs(seed=3, hidden_size=32)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _loss_and_grads(_reference_loss_autocast, hidden, weight, labels)
        got = _loss_and_grads(chunked_linear_cross_entropy, hidden, weight, labels, chunk_size=8)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-3, atol=1e-3)
    for a, b in zip(got[1:], expected[1:]):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)


def _reference_loss_autocast(hidden, weight, labels):
    logits = torch.nn.functional.linear(hidden, weight).float()  # bf16 matmul under autocast, as nn.Linear
    logits, labels = logits[:, :-1], labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"implementation": "triton"}, r"implementation='triton' is not one of auto, torch, liger"),
        ({"chunk_size": 0}, r"chunk_size must be a positive number of tokens, got 0"),
        ({"implementation": "liger"}, r"implementation='liger' runs liger-kernel's Triton kernel, which needs CUDA"),
    ],
)
def test_chunked_loss_rejects_bad_settings(kwargs, match):
    hidden, weight, labels = _inputs()
    with pytest.raises(ValueError, match=match):
        chunked_linear_cross_entropy(hidden, weight, labels, **kwargs)


def test_chunked_loss_rejects_mismatched_shapes():
    hidden, weight, labels = _inputs()
    with pytest.raises(ValueError, match=r"weight of shape \(53, 8\) does not match hidden states of shape"):
        chunked_linear_cross_entropy(hidden, weight[:, :8], labels)
    with pytest.raises(
        ValueError, match=r"labels of shape \(3, 10\) do not match hidden states of shape \(3, 11, 16\)"
    ):
        chunked_linear_cross_entropy(hidden, weight, labels[:, :10])


def _mamba(seed=0):
    from transformers import MambaForCausalLM

    torch.manual_seed(seed)
    return MambaForCausalLM(tiny_config(vocab_size=VOCAB))


def _gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,  # no dropout: both forward passes must see the same net
    )
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("build", [_mamba, _gpt2], ids=["mamba", "gpt2"])
def test_model_training_loss_and_grads_match_stock(build):
    model = build()
    model.train()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, 9:] = -100
    stock = model(input_ids=ids, labels=labels)
    stock.loss.backward()
    stock_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    assert enable_chunked_cross_entropy(model, chunk_size=5) is model
    chunked = model(input_ids=ids, labels=labels)
    assert chunked.logits is None
    chunked.loss.backward()
    torch.testing.assert_close(chunked.loss, stock.loss)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, stock_grads[name], rtol=1e-4, atol=1e-6, msg=f"grad of {name}")

    model.eval()  # evaluation keeps the stock path and its logits
    with torch.no_grad():
        evaluated = model(input_ids=ids, labels=labels)
    assert evaluated.logits.shape == (2, 12, VOCAB)
    torch.testing.assert_close(evaluated.loss, stock.loss)


def test_enable_is_idempotent_and_disable_restores(tmp_path):
    model = _mamba()
    enable_chunked_cross_entropy(model, chunk_size=4)
    enable_chunked_cross_entropy(model, chunk_size=8, implementation="torch")
    assert model._biomamba_chunked_ce == {"chunk_size": 8, "implementation": "torch"}
    model.save_pretrained(tmp_path)  # checkpoint format unchanged
    from transformers import MambaForCausalLM

    assert type(MambaForCausalLM.from_pretrained(tmp_path)) is MambaForCausalLM
    disable_chunked_cross_entropy(model)
    disable_chunked_cross_entropy(model)
    model.train()
    ids = torch.randint(0, VOCAB, (1, 6))
    assert model(input_ids=ids, labels=ids).logits is not None
    assert not hasattr(model, "_biomamba_chunked_ce")


def test_enable_rejects_models_without_a_linear_head():
    from biomamba_hf import MambaForQuestionAnswering

    model = MambaForQuestionAnswering(tiny_config(vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"MambaForQuestionAnswering is not a causal LM with a bias-free linear"):
        enable_chunked_cross_entropy(model)
    with pytest.raises(ValueError, match=r"chunk_size must be a positive number of tokens, got -1"):
        enable_chunked_cross_entropy(_mamba(), chunk_size=-1)


@pytest.mark.slow
def test_trainer_with_gradient_accumulation_matches_stock(tmp_path):
    """Two optimizer steps of Trainer (accumulation 2, padded labels) give the same weights with and without it."""
    from transformers import Trainer, TrainingArguments

    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(8):
        ids = torch.randint(2, VOCAB, (16,), generator=generator)
        labels = ids.clone()
        labels[10 + i % 4 :] = -100  # unequal token counts per micro-batch: num_items_in_batch matters
        rows.append({"input_ids": ids, "labels": labels})

    def train(chunked: bool):
        model = _mamba(seed=1)
        if chunked:
            enable_chunked_cross_entropy(model, chunk_size=6)
        args = TrainingArguments(
            output_dir=str(tmp_path / f"chunked_{chunked}"),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-2,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
        )
        result = Trainer(model=model, args=args, train_dataset=rows).train()
        return model, result.training_loss

    stock_model, stock_loss = train(chunked=False)
    chunked_model, chunked_loss = train(chunked=True)
    assert chunked_loss == pytest.approx(stock_loss, rel=1e-5)
    initial = _mamba(seed=1).state_dict()
    changed = 0
    for name, value in chunked_model.state_dict().items():
        torch.testing.assert_close(value, stock_model.state_dict()[name], rtol=1e-4, atol=1e-5, msg=name)
        changed += not torch.equal(value, initial[name])
    assert changed > 0


def test_compile_non_scan_parts_keeps_outputs():
    model = _mamba().eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert compile_non_scan_parts(model, backend="eager") is model
    assert all(layer.norm._compiled_call_impl is not None for layer in model.backbone.layers)
    assert model.backbone.norm_f._compiled_call_impl is not None
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel has no Mamba blocks"):
        compile_non_scan_parts(_gpt2())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not speed.liger_available(), reason="needs CUDA + liger-kernel")
def test_liger_matches_torch_on_cuda():
    hidden, weight, labels = (t.detach().cuda() for t in _inputs(seed=4, hidden_size=64))
    for tensor in (hidden, weight):
        tensor.requires_grad_()
    liger = _loss_and_grads(chunked_linear_cross_entropy, hidden, weight, labels, implementation="liger")
    torch_ = _loss_and_grads(chunked_linear_cross_entropy, hidden, weight, labels, implementation="torch")
    for a, b in zip(liger, torch_):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
