"""The portable selective scan matches transformers' reference scan (outputs and gradients) and hooks in cleanly."""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import tiny_config

import biomamba_hf.ops as ops
from biomamba_hf.ops.selective_scan import selective_scan


@pytest.fixture
def reference_scan():
    """transformers' own torch implementation of ``mamba_selective_scan`` (never the patched dispatcher)."""
    ops.disable_fast_scan()
    from transformers.models.mamba import modeling_mamba

    scan = modeling_mamba.mamba_selective_scan
    yield getattr(scan, "__wrapped__", scan)


@pytest.fixture
def restore_fast_scan():
    """Leave the hook as the test found it."""
    was_active = ops.fast_scan_active()
    yield
    if was_active:
        ops.enable_fast_scan()
    else:
        ops.disable_fast_scan()


def _inputs(batch, dim, state, length, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(dtype).requires_grad_()

    return {
        "hidden_states": randn(batch, dim, length),
        "dt": randn(batch, dim, length, scale=0.5, shift=-1.0),
        # Mamba's A = -exp(A_log): negative, spread over a realistic range (S4D-real init gives -1 .. -state).
        "A": (-torch.rand(dim, state, generator=gen) * state - 0.1).requires_grad_(),
        "B": randn(batch, state, length),
        "C": randn(batch, state, length),
        "D": torch.randn(dim, generator=gen).requires_grad_(),
        "z": randn(batch, dim, length),
        "delta_bias": (torch.randn(dim, generator=gen) * 0.3).requires_grad_(),
    }


def _run(scan, inputs, grad_seed=1, **kwargs):
    """Output, last state and the gradients of a random linear function of both, for every input."""
    for tensor in inputs.values():
        tensor.grad = None
    out, state = scan(**inputs, delta_softplus=True, return_last_state=True, **kwargs)
    gen = torch.Generator().manual_seed(grad_seed)
    weight_out = torch.randn(out.shape, generator=gen).to(device=out.device, dtype=out.dtype)
    weight_state = torch.randn(state.shape, generator=gen).to(device=state.device, dtype=state.dtype)
    ((out * weight_out).float().sum() + (state * weight_state).float().sum()).backward()
    grads = {name: tensor.grad.detach().clone() for name, tensor in inputs.items()}
    return out.detach(), state.detach(), grads


def _assert_close(actual, expected, rtol, name):
    scale = expected.float().abs().max().clamp_min(1e-6)
    error = (actual.float() - expected.float()).abs().max() / scale
    assert error <= rtol, f"{name}: max error {error.item():.2e} of max |value| exceeds {rtol:.0e}"


@pytest.mark.parametrize(
    "batch, dim, state, length, block_size, chunk_size",
    [
        (1, 8, 4, 64, 32, 0),  # length a multiple of the block, per-token steps
        (3, 6, 5, 37, 16, 0),  # batch > 1, length not a multiple of the block
        (2, 5, 3, 50, 64, 8),  # a single block, two-level chunked scan with a partial last chunk
        (2, 4, 2, 23, 10, 4),  # several blocks and chunks, neither dividing the length
        (2, 3, 4, 1, 32, 0),  # one token
    ],
)
def test_matches_reference_fp32(reference_scan, batch, dim, state, length, block_size, chunk_size):
    expected = _run(reference_scan, _inputs(batch, dim, state, length, torch.float32))
    actual = _run(
        selective_scan,
        _inputs(batch, dim, state, length, torch.float32),
        block_size=block_size,
        chunk_size=chunk_size,
    )
    _assert_close(actual[0], expected[0], 1e-5, "output")
    _assert_close(actual[1], expected[1], 1e-5, "last state")
    for name, grad in expected[2].items():
        _assert_close(actual[2][name], grad, 1e-5, f"grad of {name}")
    assert actual[0].dtype == expected[0].dtype and actual[1].dtype == torch.float32


def test_matches_reference_bf16(reference_scan):
    """bf16 inputs: both accumulate in fp32, but the reference rounds dt + delta_bias and its softplus to bf16 and its
    states to bf16 before reading them out (the fast scan keeps fp32 there, as mamba-ssm's kernel does)."""
    expected = _run(reference_scan, _inputs(2, 6, 4, 45, torch.bfloat16))
    actual = _run(selective_scan, _inputs(2, 6, 4, 45, torch.bfloat16), block_size=16)
    _assert_close(actual[0], expected[0], 2e-2, "output")
    _assert_close(actual[1], expected[1], 1e-2, "last state")
    for name, grad in expected[2].items():
        _assert_close(actual[2][name], grad, 3e-2, f"grad of {name}")
        assert actual[2][name].dtype == grad.dtype, name


def test_without_optional_inputs(reference_scan):
    """No D, no z, no delta_bias, no softplus, no last state: still the reference function."""
    inputs = _inputs(2, 4, 3, 19, torch.float32)
    args = [inputs[name] for name in ("hidden_states", "dt", "A", "B", "C")]
    expected = reference_scan(*args)
    actual = selective_scan(*args, block_size=8)
    _assert_close(actual, expected, 1e-5, "output")


@pytest.mark.parametrize("length", [1, 9])
def test_leaves_inputs_untouched(length):
    """Time-major views of (batch, dim, 1) or batch-1 inputs can alias them: nothing may be written in place."""
    inputs = {name: t.detach() for name, t in _inputs(1, 3, 2, length, torch.float32).items()}
    before = {name: t.clone() for name, t in inputs.items()}
    selective_scan(**inputs, delta_softplus=True, return_last_state=True)
    for name, tensor in inputs.items():
        assert torch.equal(tensor, before[name]), name


def test_no_quadratic_or_full_length_state_tensors():
    """Memory stays linear: the saved tensors are the inputs plus one state per block, nothing (L, dim, state)."""
    inputs = _inputs(1, 4, 3, 96, torch.float32)
    out = selective_scan(**inputs, delta_softplus=True, block_size=32)
    saved_numels = [t.numel() for t in out.grad_fn.saved_tensors if t is not None]
    assert max(saved_numels) <= 96 * 4, saved_numels
    block_states = 3 * 1 * 4 * 3
    assert block_states in saved_numels


@pytest.mark.parametrize(
    "override, match",
    [
        ({"A": torch.zeros(5, 3)}, r"A must be a real \(intermediate_size=4, state_size\) tensor, got shape \(5, 3\)"),
        ({"B": torch.zeros(2, 3)}, r"B must be input-dependent with shape \(batch, state_size, seq_len\)"),
        ({"dt": torch.zeros(2, 4, 9)}, r"dt must have the shape of hidden_states \(2, 4, 10\), got \(2, 4, 9\)"),
        ({"D": torch.zeros(3)}, r"D must have shape \(4,\), got \(3,\)"),
    ],
)
def test_rejects_bad_shapes(override, match):
    inputs = {name: t.detach() for name, t in _inputs(2, 4, 3, 10, torch.float32).items()}
    inputs.update(override)
    with pytest.raises(ValueError, match=match):
        selective_scan(**inputs)


def test_rejects_bad_block_size():
    inputs = {name: t.detach() for name, t in _inputs(1, 2, 2, 4, torch.float32).items()}
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        selective_scan(**inputs, block_size=0)


def test_upstream_attribute_is_the_expected_function(restore_fast_scan):
    """Fails loudly when transformers changes what the hook patches (name, signature or the mixer's call)."""
    from transformers.models.mamba import modeling_mamba

    ops.disable_fast_scan()
    original = modeling_mamba.mamba_selective_scan
    assert original.__name__ == "mamba_selective_scan"
    params = inspect.signature(getattr(original, "__wrapped__", original)).parameters
    for name in ("hidden_states", "dt", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus", "return_last_state"):
        assert name in params, name
    assert "mamba_selective_scan(" in inspect.getsource(modeling_mamba.MambaMixer.forward)


def test_enable_disable_and_env_opt_out(restore_fast_scan, monkeypatch):
    from transformers.models.mamba import modeling_mamba

    ops.disable_fast_scan()
    original = modeling_mamba.mamba_selective_scan
    assert not ops.fast_scan_active()
    assert ops.mamba_code_path("cpu").startswith("transformers PyTorch fallback")

    assert ops.enable_fast_scan() is True
    assert ops.enable_fast_scan() is True  # idempotent: the original is kept, not the dispatcher
    assert modeling_mamba.mamba_selective_scan is not original
    assert ops.mamba_code_path("cpu") == "biomamba_hf portable chunked selective scan (PyTorch)"

    ops.disable_fast_scan()
    ops.disable_fast_scan()
    assert modeling_mamba.mamba_selective_scan is original
    assert not ops.fast_scan_active()

    monkeypatch.setenv("BIOMAMBA_FAST_SCAN", "0")
    assert ops.enable_fast_scan() is False
    assert modeling_mamba.mamba_selective_scan is original


def test_kernels_are_not_shadowed(monkeypatch):
    """With mamba-ssm installed, CUDA tensors go to transformers' binding (the kernel); CPU tensors never do."""
    monkeypatch.setattr(ops, "_selective_scan_kernel_available", lambda: True)
    assert ops._defer_to_transformers(torch.device("cuda", 0))
    assert not ops._defer_to_transformers(torch.device("cpu"))
    monkeypatch.setattr(ops, "_selective_scan_kernel_available", lambda: False)
    assert not ops._defer_to_transformers(torch.device("cuda", 0))
    assert not ops._defer_to_transformers(torch.device("cpu"), use_associative_scan=True)  # not compiling


def test_patch_fails_loudly_when_upstream_changes(restore_fast_scan, monkeypatch):
    from transformers.models.mamba import modeling_mamba

    ops.disable_fast_scan()
    monkeypatch.delattr(modeling_mamba, "mamba_selective_scan")
    with pytest.raises(RuntimeError, match="has no callable `mamba_selective_scan`.*BIOMAMBA_FAST_SCAN=0"):
        ops.enable_fast_scan()


def _loss_and_grads(model, input_ids):
    model.zero_grad()
    out = model(input_ids, labels=input_ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("use_mambapy", [False, True])
def test_causal_lm_training_step_matches(restore_fast_scan, use_mambapy):
    """Full tiny MambaForCausalLM forward/backward in training mode: fast path on == off (the unfused path)."""
    from transformers import MambaForCausalLM

    torch.manual_seed(0)
    model = MambaForCausalLM(tiny_config(vocab_size=97, use_mambapy=use_mambapy)).train()
    input_ids = torch.randint(0, 97, (2, 45))
    ops.disable_fast_scan()
    logits_ref, grads_ref = _loss_and_grads(model, input_ids)
    assert ops.enable_fast_scan()
    logits, grads = _loss_and_grads(model, input_ids)
    _assert_close(logits, logits_ref, 1e-5, "logits")
    for name, grad in grads_ref.items():
        _assert_close(grads[name], grad, 1e-4, f"grad of {name}")


def test_generation_with_cache_matches(restore_fast_scan):
    """Prefill goes through the fast scan (returning the last state into the cache), then seq_len == 1 steps."""
    from transformers import MambaForCausalLM

    torch.manual_seed(0)
    model = MambaForCausalLM(tiny_config(vocab_size=97)).eval()
    prompt = torch.randint(2, 97, (2, 11))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=1)
    ops.disable_fast_scan()
    with torch.no_grad():
        expected = model.generate(prompt, output_scores=True, return_dict_in_generate=True, **kwargs)
    assert ops.enable_fast_scan()
    with torch.no_grad():
        actual = model.generate(prompt, output_scores=True, return_dict_in_generate=True, **kwargs)
    assert actual.sequences.shape == (2, 17)
    assert torch.equal(actual.sequences, expected.sequences)
    for step, (a, e) in enumerate(zip(actual.scores, expected.scores)):
        _assert_close(a, e, 1e-5, f"scores of step {step}")


def test_docstring_examples():
    import doctest

    from biomamba_hf.ops import selective_scan as module

    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0, result


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("chunk_size", [None, 0])
def test_matches_reference_on_cuda(reference_scan, chunk_size):
    """On a GPU: the default two-level chunked scan (and per-token steps) against transformers' reference."""

    def on_cuda(inputs):
        return {name: t.detach().cuda().requires_grad_() for name, t in inputs.items()}

    expected = _run(reference_scan, on_cuda(_inputs(2, 64, 16, 300, torch.float32)))
    actual = _run(selective_scan, on_cuda(_inputs(2, 64, 16, 300, torch.float32)), chunk_size=chunk_size)
    _assert_close(actual[0], expected[0], 1e-4, "output")
    _assert_close(actual[1], expected[1], 1e-4, "last state")
    for name, grad in expected[2].items():
        _assert_close(actual[2][name], grad, 1e-4, f"grad of {name}")


def test_transformers_without_the_hook_point(monkeypatch, caplog):
    """Releases older than MIN_TRANSFORMERS_FOR_FAST_SCAN inline the scan: the fast path stays off, with a warning;
    a newer release without the hook point is an upstream change, reported loudly."""
    from transformers.models.mamba import modeling_mamba

    from biomamba_hf import ops

    ops.disable_fast_scan()
    try:
        monkeypatch.delattr(modeling_mamba, ops._PATCHED_ATTRIBUTE)
        monkeypatch.setattr(ops, "_transformers_version", lambda: "5.2.0")
        with caplog.at_level("WARNING", logger="biomamba_hf.ops"):
            assert ops.enable_fast_scan() is False
        assert "predates the scan hook" in caplog.text
        monkeypatch.setattr(ops, "_transformers_version", lambda: "5.99.0")
        with pytest.raises(RuntimeError, match="has no callable `mamba_selective_scan` any more"):
            ops.enable_fast_scan()
    finally:
        monkeypatch.undo()
        ops.enable_fast_scan()
    assert ops.fast_scan_active()


# ---------------------------------------------------------------- the portable paths really run (issue 14 §6)


def _counting(calls: list, name: str, function):
    def wrapper(*args, **kwargs):
        calls.append(name)
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("training", [False, True])
def test_a_mamba_forward_calls_the_portable_scan_once_per_layer(restore_fast_scan, monkeypatch, training):
    """After ``import biomamba_hf`` every mixer of a CPU forward (inference and training) runs the portable scan and
    none runs transformers' own: a dispatcher that handed calls back to transformers would fail here."""
    from transformers import MambaForCausalLM

    from biomamba_hf.ops import selective_scan as module

    assert ops.enable_fast_scan()
    calls: list[str] = []
    monkeypatch.setattr(module, "selective_scan", _counting(calls, "portable", module.selective_scan))
    original = ops.original_mamba_selective_scan()
    monkeypatch.setattr(ops, "original_mamba_selective_scan", lambda: _counting(calls, "transformers", original))
    model = MambaForCausalLM(tiny_config(vocab_size=64, num_hidden_layers=3)).train(training)
    input_ids = torch.randint(0, 64, (2, 12))
    with torch.set_grad_enabled(training):
        loss = model(input_ids, labels=input_ids).loss
    assert calls == ["portable"] * 3
    if training:
        loss.backward()
        assert model.backbone.layers[0].mixer.A_log.grad is not None
    ops.disable_fast_scan()
    calls.clear()
    model(input_ids)
    assert calls == []  # opted out: transformers' own scan, never ours


@pytest.mark.parametrize("training", [False, True])
def test_a_mamba2_forward_calls_the_portable_ssd_once_per_layer(restore_fast_scan, monkeypatch, training):
    from helpers import tiny_mamba2_config
    from transformers import Mamba2ForCausalLM

    from biomamba_hf.ops import ssd

    assert ops.enable_fast_scan() and ssd.mamba2_fast_path_active()
    calls: list[str] = []
    monkeypatch.setattr(ssd, "_ssd_forward", _counting(calls, "portable", ssd._ssd_forward))
    for attribute, original in list(ssd._installed.items()):  # transformers' functions the dispatchers hold back
        monkeypatch.setitem(ssd._installed, attribute, _counting(calls, "transformers", original))
    model = Mamba2ForCausalLM(tiny_mamba2_config(vocab_size=64, num_hidden_layers=3)).train(training)
    input_ids = torch.randint(0, 64, (2, 12))
    with torch.set_grad_enabled(training):
        loss = model(input_ids, labels=input_ids).loss
    if training:
        loss.backward()  # the hand-written backward does not run the forward again
    assert calls == ["portable"] * 3


# ---------------------------------------------------------------- the code path: one true line per family


def test_code_path_is_named_for_the_family_and_absent_for_other_models(restore_fast_scan):
    from transformers import GPT2Config, MambaConfig

    from biomamba_hf.ops.ssd import MAMBA2_FAST_PATH_NAME
    from biomamba_hf.script_utils import configure_mamba_code_path, run_summary_lines

    assert ops.enable_fast_scan()
    assert ops.mamba_code_path("cpu", "mamba") == "biomamba_hf portable chunked selective scan (PyTorch)"
    assert ops.mamba_code_path("cpu", "mamba2") == MAMBA2_FAST_PATH_NAME
    assert ops.mamba_code_path("cpu", "gpt2") is None
    assert ops.code_path_label("mamba2") == "Mamba-2 code path" and ops.code_path_label("gpt2") is None
    assert configure_mamba_code_path(GPT2Config(n_layer=1), "cpu") is None
    assert configure_mamba_code_path(MambaConfig(), "cpu").startswith("biomamba_hf portable chunked selective scan")
    lines = run_summary_lines(
        world_size=1, per_device_batch_size=2, gradient_accumulation_steps=1, block_size=8, code_path=None, dtype="y"
    )
    assert not any("code path" in line for line in lines)  # a GPT-2 run says nothing about Mamba
    ops.disable_fast_scan()
    assert ops.mamba_code_path("cpu", "mamba2") == "transformers PyTorch fallback (reference SSD)"
    assert ops.mamba_code_path("cpu", "mamba").startswith("transformers PyTorch fallback")


FORWARD_BOTH_FAMILIES = """
import logging, sys
import biomamba_hf, torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM
torch.manual_seed(0)
models = [
    MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, state_size=4)),
    Mamba2ForCausalLM(Mamba2Config(vocab_size=64, hidden_size=32, expand=2, head_dim=16, num_heads=4, n_groups=1,
                                   state_size=8, num_hidden_layers=1, chunk_size=4)),
]
for model in models:
    ids = torch.randint(0, 64, (2, 10))
    model.train()
    model(ids, labels=ids).loss.backward()
    model.eval()
    with torch.no_grad():
        model(ids)
print("done")
"""


def _run_python(code: str, **env) -> str:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_cpu_runs_do_not_print_transformers_fallback_warning_where_the_portable_path_runs():
    """transformers warns that its reference implementation is "much slower" for each function without its kernel
    package; while the portable paths run instead (both families, training and inference) it must not say so. With
    the portable paths off the same program prints the warning: the check would see it, and upstream still sends it
    in the form the filter matches."""
    with_portable = _run_python(FORWARD_BOTH_FAMILIES)
    assert "done" in with_portable
    assert ops.FALLBACK_WARNING not in with_portable, with_portable
    without = _run_python(FORWARD_BOTH_FAMILIES, BIOMAMBA_FAST_SCAN="0")
    warned = {line.split("`")[1] for line in without.splitlines() if ops.FALLBACK_WARNING in line}
    assert warned == set().union(*ops.PORTABLE_STAND_INS.values()), warned


def test_importing_mamba2_after_biomamba_hf_activates_the_portable_ssd():
    out = _run_python(
        "import biomamba_hf\n"
        "from transformers import Mamba2ForCausalLM\n"
        "from biomamba_hf.ops.ssd import mamba2_fast_path_active\n"
        "print('active' if mamba2_fast_path_active() else 'inactive')\n"
    )
    assert out.split()[-1] == "active", out


def test_the_import_hook_fires_on_modeling_mamba2_alone():
    """Where importing Mamba-2 pulls in neither the Auto classes nor pipelines, ``modeling_mamba2`` itself must
    trigger registration and the portable SSD (transformers 5.24 happens to import the Auto classes on the way)."""
    out = _run_python(
        "import sys, types\n"
        "import biomamba_hf.import_hook as hook\n"
        "import biomamba_hf.registration, biomamba_hf.ops\n"
        "fired = []\n"
        "biomamba_hf.registration.register = lambda: fired.append('register')\n"
        "biomamba_hf.ops.enable_fast_scan = lambda: fired.append('fast path')\n"
        "assert not any(name in sys.modules for name in hook.TRIGGERS), 'a trigger is already loaded'\n"
        "sys.modules['transformers.models.mamba2.modeling_mamba2'] = types.ModuleType('modeling_mamba2')\n"
        "hook.register_when_ready()\n"
        "print(fired)\n"
    )
    assert out.split("\n")[-2] == "['register', 'fast path']", out
