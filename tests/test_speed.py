"""Correctness of the training-speed levers in biomamba_hf.speed (their speed lives in benchmarks/)."""

from __future__ import annotations

import doctest
import os

import pytest
import torch
from helpers import tiny_config

from biomamba_hf import speed
from biomamba_hf.speed import (
    causal_lm_loss,
    check_chunked_loss_model,
    chunked_linear_cross_entropy,
    compile_non_scan_parts,
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


def _batch(seed=0):
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[1, 9:] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _grads(model):
    grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad()
    return grads


@pytest.mark.parametrize("build", [_mamba, _gpt2], ids=["mamba", "gpt2"])
@pytest.mark.parametrize("num_items_in_batch", [None, 25])
def test_causal_lm_loss_and_grads_match_stock(build, num_items_in_batch):
    model = build().train()
    batch = _batch()
    stock = model(**batch, num_items_in_batch=num_items_in_batch).loss
    stock.backward()
    stock_grads = _grads(model)

    head_positions = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_positions.append(out.shape[1]))
    loss = causal_lm_loss(model, batch, num_items_in_batch=num_items_in_batch, chunk_size=5)
    loss.backward()
    assert head_positions == [1]  # the forward made the logits of one position, not of all 12
    torch.testing.assert_close(loss, stock)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, stock_grads[name], rtol=1e-4, atol=1e-6, msg=f"grad of {name}")
    body = getattr(model, model.base_model_prefix)
    assert not body._forward_hooks and "forward" not in vars(model)  # nothing left on the model


def test_causal_lm_loss_runs_the_forward_through_the_wrapper(tmp_path):
    """Through DistributedDataParallel (one gloo process): its forward runs, the gradients equal the stock ones."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, batch = _mamba().train(), _batch(seed=1)
    model(**batch).loss.backward()
    stock_grads = _grads(model)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        calls = []
        wrapped.register_forward_pre_hook(lambda module, args: calls.append(module))
        causal_lm_loss(model, batch, wrapped=wrapped, chunk_size=4).backward()
    finally:
        dist.destroy_process_group()
    assert calls == [wrapped]
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, stock_grads[name], rtol=1e-4, atol=1e-6, msg=f"grad of {name}")


def test_chunked_loss_refuses_models_it_cannot_serve():
    from biomamba_hf import MambaForQuestionAnswering

    model = MambaForQuestionAnswering(tiny_config(vocab_size=VOCAB))
    with pytest.raises(ValueError, match=r"MambaForQuestionAnswering is not a causal LM with a bias-free linear"):
        check_chunked_loss_model(model)
    with pytest.raises(ValueError, match=r"causal_lm_loss needs a batch with labels, got the keys \['input_ids'\]"):
        causal_lm_loss(_mamba(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})


def _clm_rows(count=8, length=16):
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(count):
        ids = torch.randint(2, VOCAB, (length,), generator=generator)
        labels = ids.clone()
        labels[10 + i % 4 :] = -100  # unequal token counts per micro-batch: num_items_in_batch matters
        rows.append({"input_ids": ids, "labels": labels})
    return rows


@pytest.mark.slow
def test_trainer_with_gradient_accumulation_matches_stock(tmp_path, monkeypatch):
    """CausalLMTrainer with --loss_chunk_size: two optimizer steps (accumulation 2, padded labels) give the weights
    of the stock loss, the chunked loss runs in training only, and evaluation gives the same token-level loss."""
    from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments

    rows = _clm_rows()
    calls = []
    original = speed.chunked_linear_cross_entropy
    monkeypatch.setattr(speed, "chunked_linear_cross_entropy", lambda *a, **k: calls.append(1) or original(*a, **k))

    def train(loss_chunk_size: int):
        model = _mamba(seed=1)
        args = CLMTrainingArguments(
            output_dir=str(tmp_path / f"chunk_{loss_chunk_size}"),
            loss_chunk_size=loss_chunk_size,
            do_train=True,
            per_device_train_batch_size=2,
            per_device_eval_batch_size=3,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-2,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
        )
        trainer = CausalLMTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows[:5])
        training_loss = trainer.train().training_loss
        return model, training_loss, trainer.evaluate()["eval_loss"]

    stock_model, stock_loss, stock_eval = train(loss_chunk_size=0)
    assert calls == []
    chunked_model, chunked_loss, chunked_eval = train(loss_chunk_size=6)
    assert len(calls) == 4  # one per micro-batch; none in evaluation
    assert chunked_loss == pytest.approx(stock_loss, rel=1e-5)
    assert chunked_eval == pytest.approx(stock_eval, rel=1e-5)
    initial = _mamba(seed=1).state_dict()
    changed = 0
    for name, value in chunked_model.state_dict().items():
        torch.testing.assert_close(value, stock_model.state_dict()[name], rtol=1e-4, atol=1e-5, msg=name)
        changed += not torch.equal(value, initial[name])
    assert changed > 0


def test_trainer_refuses_a_model_without_a_causal_lm_head(tmp_path):
    from biomamba_hf import MambaForQuestionAnswering
    from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments

    args = CLMTrainingArguments(output_dir=str(tmp_path), loss_chunk_size=8, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match=r"MambaForQuestionAnswering is not a causal LM"):
        CausalLMTrainer(model=MambaForQuestionAnswering(tiny_config(vocab_size=VOCAB)), args=args)


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


def test_trainer_runs_the_chunked_head_under_the_mixed_precision_autocast(tmp_path, monkeypatch):
    """With --bf16 the head's matmul of the chunked loss runs in bfloat16, as nn.Linear does in the model's forward
    (accelerate's autocast wraps the forward only; outside it the products ran in float32)."""
    from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments

    dtypes = []
    original = speed._ChunkedLinearCrossEntropy.apply
    monkeypatch.setattr(speed._ChunkedLinearCrossEntropy, "apply", lambda *a: dtypes.append(a[-1]) or original(*a))

    def train(bf16: bool):
        args = CLMTrainingArguments(
            output_dir=str(tmp_path / f"bf16_{bf16}"),
            loss_chunk_size=8,
            per_device_train_batch_size=2,
            max_steps=1,
            bf16=bf16,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            dataloader_num_workers=0,
        )
        CausalLMTrainer(model=_mamba(seed=0), args=args, train_dataset=_clm_rows()[:2]).train()

    train(bf16=True)
    assert dtypes == [torch.bfloat16]
    train(bf16=False)
    assert dtypes == [torch.bfloat16, torch.float32]


def test_chunked_loss_check_reads_the_forward_signature_once_per_class(monkeypatch):
    """causal_lm_loss checks its model at every step: the costly part (the forward's signature) is read once per
    model class, and a class whose forward has no logits_to_keep is still refused at every call."""
    from transformers import MambaForCausalLM

    class NoLogitsToKeep(MambaForCausalLM):
        def forward(self, input_ids=None, labels=None, **kwargs):
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)

    class Plain(MambaForCausalLM):
        pass

    reads = []
    original = speed.inspect.signature

    def signature(f, *args, **kwargs):
        if f in (NoLogitsToKeep.forward, Plain.forward):
            reads.append(f)
        return original(f, *args, **kwargs)

    monkeypatch.setattr(speed.inspect, "signature", signature)
    model = NoLogitsToKeep(tiny_config(vocab_size=VOCAB))
    for _ in range(3):
        with pytest.raises(ValueError, match=r"NoLogitsToKeep.forward has no logits_to_keep argument"):
            check_chunked_loss_model(model)
    batch = {"input_ids": torch.randint(0, VOCAB, (1, 6)), "labels": torch.randint(0, VOCAB, (1, 6))}
    with pytest.raises(ValueError, match=r"NoLogitsToKeep.forward has no logits_to_keep argument"):
        causal_lm_loss(model, batch)
    assert reads == [NoLogitsToKeep.forward]

    model = Plain(tiny_config(vocab_size=VOCAB))
    for _ in range(3):
        causal_lm_loss(model, batch, chunk_size=4)
    assert reads == [NoLogitsToKeep.forward, Plain.forward]


def test_cache_triton_autotuning_sets_the_default_and_switches_defined_autotuners(monkeypatch):
    """Kernels defined later read TRITON_CACHE_AUTOTUNING=1; mamba-ssm autotuners already defined (a stand-in of
    Triton's Autotuner class, by name) are switched on; an explicit 0 is respected."""
    import sys
    import types

    from biomamba_hf.speed import TRITON_AUTOTUNE_CACHE_ENV, cache_triton_autotuning

    Autotuner = type("Autotuner", (), {})
    defined, other = Autotuner(), Autotuner()
    defined.cache_results = other.cache_results = False
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.triton.ssd_fake", types.SimpleNamespace(kernel=defined))
    monkeypatch.setitem(sys.modules, "some_other_package.kernels", types.SimpleNamespace(kernel=other))

    monkeypatch.setenv(TRITON_AUTOTUNE_CACHE_ENV, "0")
    assert cache_triton_autotuning() == 0 and defined.cache_results is False

    monkeypatch.delenv(TRITON_AUTOTUNE_CACHE_ENV)
    assert cache_triton_autotuning() == 1
    assert os.environ[TRITON_AUTOTUNE_CACHE_ENV] == "1"
    assert defined.cache_results is True and other.cache_results is False
    assert cache_triton_autotuning() == 0  # already on


@pytest.mark.parametrize("script", ["run_clm", "run_qa", "run_pubmedqa"])
def test_every_training_script_caches_triton_autotuning(script, tmp_path, monkeypatch):
    """Each script sets the autotuning cache at start (seen through a run refused right after setup)."""
    from helpers import example_script

    from biomamba_hf.speed import TRITON_AUTOTUNE_CACHE_ENV

    monkeypatch.delenv(TRITON_AUTOTUNE_CACHE_ENV, raising=False)
    args = ["--model_name_or_path", "some/model", "--output_dir", str(tmp_path / "out")]
    if script == "run_clm":
        (tmp_path / "train.txt").write_text("Aspirin inhibits cyclooxygenase.\n")
        args += ["--train_file", str(tmp_path / "train.txt")]
    with example_script(script) as module, pytest.raises(ValueError, match="Nothing to do"):
        module.main(args)
    assert os.environ.get(TRITON_AUTOTUNE_CACHE_ENV) == "1"
