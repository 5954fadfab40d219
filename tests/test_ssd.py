"""The portable Mamba-2 path (biomamba_hf.ops.ssd) computes what transformers' reference path computes, forward and
gradients, hooks in and out cleanly, and costs linear work and memory in the length.

Tolerance: fp32 everywhere; every compared tensor must satisfy ``max|ours - ref| <= max(RTOL * max|ref|, ATOL)``
with ``RTOL = 1e-4`` and ``ATOL = 1e-5`` (the floor only matters for gradients that are exactly zero in the
reference, e.g. of ``A`` for a one-token sequence, where ours has rounding residue of about 1e-6).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import tiny_mamba2_config
from transformers import Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2
from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

import biomamba_hf.ops.ssd as ssd

RTOL = 1e-4
ATOL = 1e-5
#: Newer transformers call module-level kernel-or-reference functions (hooked by rebinding them); older ones have
#: ``Mamba2Mixer.torch_forward`` (hooked by replacing the method). The reference functions exist only on the former.
FUNCTIONAL_LAYOUT = hasattr(modeling_mamba2, "mamba2_chunk_scan")
needs_functional_layout = pytest.mark.skipif(
    not FUNCTIONAL_LAYOUT, reason="this transformers has no module-level mamba2_chunk_scan / causal_conv1d_fn"
)


def hooked_attributes():
    """What the hook replaces on this transformers, as it is bound now."""
    norm = modeling_mamba2.MambaRMSNormGated.forward
    if FUNCTIONAL_LAYOUT:
        return modeling_mamba2.mamba2_chunk_scan, modeling_mamba2.causal_conv1d_fn, norm
    return Mamba2Mixer.torch_forward, norm


@pytest.fixture(autouse=True)
def restore_hook():
    """Start every test with transformers' own Mamba-2 path and leave the hook as the test found it."""
    was_active = ssd.mamba2_fast_path_active()
    ssd.uninstall_mamba2_fast_path()
    yield
    ssd.uninstall_mamba2_fast_path()
    if was_active:
        ssd.install_mamba2_fast_path()


def assert_close(ours, ref, what=""):
    assert ours.shape == ref.shape, what
    scale = ref.abs().max().item()
    error = (ours - ref).abs().max().item()
    assert error <= max(RTOL * scale, ATOL), f"{what}: max error {error:.3g} vs max |ref| {scale:.3g}"


def config(n_groups=1, chunk_size=16, time_step_limit=(0.0, float("inf")), layers=2):
    """8 heads of 8 channels (expand 2 x hidden 32), state 16, untied embeddings."""
    return tiny_mamba2_config(
        64,
        num_heads=8,
        head_dim=8,
        n_groups=n_groups,
        chunk_size=chunk_size,
        num_hidden_layers=layers,
        time_step_limit=time_step_limit,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def randomize(module, seed=0):
    """Non-trivial values for every parameter (D, dt_bias and the norm weight start at constants)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("A_log"):
                param.copy_(torch.rand(param.shape, generator=gen) * 2 - 1)
            else:
                param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    return module


def padding_mask(batch, length):
    """Row 0 left-padded by 5, row 1 right-padded by 7, the rest unpadded."""
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, :5] = 0
    mask[1, -7:] = 0
    return mask


def grads(outputs, tensors, seed=1):
    """Gradients of a fixed random projection of ``outputs`` (so every output element matters)."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((out * torch.randn(out.shape, generator=gen)).sum() for out in outputs)
    return torch.autograd.grad(loss, tensors, allow_unused=True)


# ----------------------------------------------------------------------------------------------------------------------
# the SSD function against transformers' reference `mamba2_chunk_scan`


def chunk_scan_inputs(batch, length, heads, head_dim, groups, state, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).requires_grad_()

    return dict(
        hidden_states=randn(batch, length, heads, head_dim),
        dt=randn(batch, length, heads),
        A=(-torch.rand(heads, generator=gen) * 2 - 0.1).requires_grad_(),
        B=randn(batch, length, groups, state),
        C=randn(batch, length, groups, state),
        D=randn(heads),
        dt_bias=randn(heads, scale=0.5),
        initial_states=randn(batch, heads, head_dim, state),
    )


@needs_functional_layout
@pytest.mark.parametrize(
    "length,groups,with_initial_states,dt_limit",
    [
        (1, 1, False, (0.0, float("inf"))),
        (37, 1, True, (0.0, float("inf"))),
        (100, 2, False, (0.05, 0.8)),
        (100, 2, True, (0.0, float("inf"))),  # 7 chunks of 16, the last one padded
    ],
)
def test_chunk_scan_matches_reference(length, groups, with_initial_states, dt_limit):
    reference = modeling_mamba2.mamba2_chunk_scan
    inputs = chunk_scan_inputs(batch=2, length=length, heads=4, head_dim=8, groups=groups, state=16)
    if not with_initial_states:
        inputs["initial_states"] = None
    options = dict(chunk_size=16, dt_softplus=True, dt_limit=dt_limit, return_final_states=True)
    tensors = [t for t in inputs.values() if t is not None]
    results = {}
    for name, function in (("ref", reference), ("ours", ssd.mamba2_chunk_scan)):
        y, final_state = function(**inputs, **options)
        results[name] = (y, final_state, *grads([y, final_state], tensors))
    assert results["ours"][0].dtype == results["ref"][0].dtype == torch.float32
    names = ["output", "final state", *(k for k, v in inputs.items() if v is not None)]
    for name, ours, ref in zip(names, results["ours"], results["ref"]):
        assert_close(ours, ref, name)


def float64_ssd_inputs(batch, length, heads, head_dim, groups, state, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    dt = (torch.rand(batch, length, heads, generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    A = (-torch.rand(heads, generator=gen, dtype=torch.float64) - 0.2).requires_grad_()
    x, B, C = (
        randn(batch, length, heads, head_dim),
        randn(batch, length, groups, state),
        randn(batch, length, groups, state),
    )
    return x, dt, A, B, C, randn(heads), randn(batch, heads, head_dim, state)


@pytest.mark.parametrize(
    "length,groups,chunk_size,with_initial_states",
    [
        (8, 1, 4, True),  # whole chunks
        (7, 1, 4, True),  # the last chunk padded
        (9, 2, 4, False),  # 2 groups of 2 heads, padded
        (3, 2, 8, True),  # shorter than one chunk
    ],
)
def test_ssd_backward_gradcheck(length, groups, chunk_size, with_initial_states):
    """The hand-written backward of the chunked SSD against finite differences (float64), output and final state."""
    x, dt, A, B, C, D, initial_states = float64_ssd_inputs(2, length, 4, 3, groups, 5)
    if not with_initial_states:
        initial_states = None

    def scan(x, dt, A, B, C, D, *initial):
        return ssd.ssd_scan(x, dt, A, B, C, chunk_size, D=D, initial_states=initial[0] if initial else None)

    inputs = (x, dt, A, B, C, D) + ((initial_states,) if with_initial_states else ())
    assert torch.autograd.gradcheck(scan, inputs)


@pytest.mark.parametrize("length,activation", [(1, "silu"), (10, "silu"), (10, None)])
def test_causal_conv1d_backward_gradcheck(length, activation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, length, 5, generator=gen, dtype=torch.float64).transpose(1, 2).requires_grad_()
    weight = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ssd.causal_conv1d(*a, activation=activation), (x, weight, bias))


@pytest.mark.parametrize("group_size,with_gate", [(6, True), (3, True), (6, False)])
def test_gated_rms_norm_matches_transformers_and_gradcheck(group_size, with_gate):
    norm = modeling_mamba2.MambaRMSNormGated(6, group_size).double()
    with torch.no_grad():
        norm.weight.add_(torch.randn(6, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True) if with_gate else None
    inputs = (hidden, norm.weight) + ((gate,) if with_gate else ())
    assert torch.allclose(ssd.gated_rms_norm(norm, hidden, gate), norm(hidden, gate))
    assert torch.autograd.gradcheck(lambda h, w, *g: ssd.gated_rms_norm(norm, h, *g), inputs)


@needs_functional_layout
def test_causal_conv1d_matches_reference():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 30, generator=gen, requires_grad=True)
    weight = torch.randn(12, 4, generator=gen, requires_grad=True)
    bias = torch.randn(12, generator=gen, requires_grad=True)
    ours = ssd.causal_conv1d(x, weight, bias, activation="silu")
    ref = modeling_mamba2.causal_conv1d_fn(x, weight, bias, activation="silu")
    for name, a, b in zip(
        ["output", "x", "weight", "bias"],
        [ours, *grads([ours], [x, weight, bias])],
        [ref, *grads([ref], [x, weight, bias])],
    ):
        assert_close(a, b, name)


# ----------------------------------------------------------------------------------------------------------------------
# the mixer and the whole model


def mixer_case(n_groups, time_step_limit=(0.0, float("inf")), batch=3, length=45):
    torch.manual_seed(0)
    mixer = randomize(Mamba2Mixer(config(n_groups, time_step_limit=time_step_limit), layer_idx=0))
    hidden = torch.randn(batch, length, 32, requires_grad=True)
    return mixer, hidden, padding_mask(batch, length)


def mixer_results(mixer, hidden, mask, forward):
    out = forward(mixer, hidden, mask)
    tensors = [hidden, *mixer.parameters()]
    return [out, *grads([out], tensors)], ["output", "input", *(name for name, _ in mixer.named_parameters())]


@pytest.mark.parametrize("n_groups,time_step_limit", [(1, (0.0, float("inf"))), (2, (0.02, 0.6))])
def test_mixer_matches_reference(n_groups, time_step_limit):
    """Both hook styles against transformers' mixer, with left and right padding, batch 3, 45 tokens (chunk 16)."""
    mixer, hidden, mask = mixer_case(n_groups, time_step_limit)
    ref, names = mixer_results(mixer, hidden, mask, lambda m, h, a: m(h, attention_mask=a))
    # the whole-forward replacement used where transformers' mixer has `torch_forward`
    ours_forward, _ = mixer_results(mixer, hidden, mask, lambda m, h, a: ssd.mamba2_forward(m, h, None, a))
    # the module-level functions rebound where it has `mamba2_chunk_scan`
    assert ssd.install_mamba2_fast_path()
    ours_hook, _ = mixer_results(mixer, hidden, mask, lambda m, h, a: m(h, attention_mask=a))
    for name, a, b, ref_value in zip(names, ours_forward, ours_hook, ref):
        assert ref_value is not None, name
        assert_close(a, ref_value, f"mamba2_forward {name}")
        assert_close(b, ref_value, f"hooked mixer {name}")
    # padded positions do not leak into the others: changing them changes nothing where the mask is 1
    noisy = hidden.detach().clone()
    noisy[mask == 0] += 10
    with torch.no_grad():
        out, out_noisy = mixer(hidden, attention_mask=mask), mixer(noisy, attention_mask=mask)
    assert torch.equal(out[mask == 1], out_noisy[mask == 1])


def model_outputs(model, input_ids, mask):
    out = model(input_ids, attention_mask=mask, labels=input_ids)
    params = list(model.parameters())
    return [out.loss, out.logits, *torch.autograd.grad(out.loss, params)]


@pytest.mark.parametrize("n_groups", [1, 2])
def test_causal_lm_matches_reference(n_groups):
    torch.manual_seed(0)
    model = randomize(Mamba2ForCausalLM(config(n_groups, chunk_size=16)))
    input_ids = torch.randint(1, 64, (3, 53), generator=torch.Generator().manual_seed(0))
    mask = padding_mask(3, 53)
    ref = model_outputs(model, input_ids, mask)
    ssd.install_mamba2_fast_path()
    ours = model_outputs(model, input_ids, mask)
    names = ["loss", "logits", *(name for name, _ in model.named_parameters())]
    for name, a, b in zip(names, ours, ref):
        assert_close(a, b, name)


def test_generation_with_cache_matches_reference():
    """Prefill (chunk scan with a final state) on the portable path, decoding steps on transformers' update."""
    torch.manual_seed(0)
    model = randomize(Mamba2ForCausalLM(config(2, chunk_size=16))).eval()
    prompt = torch.randint(1, 64, (2, 37), generator=torch.Generator().manual_seed(0))
    options = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    ref = model.generate(prompt, **options)
    ssd.install_mamba2_fast_path()
    ours = model.generate(prompt, **options)
    assert torch.equal(ours.sequences, ref.sequences)
    for step, (a, b) in enumerate(zip(ours.scores, ref.scores)):
        assert_close(a, b, f"scores at step {step}")


# ----------------------------------------------------------------------------------------------------------------------
# hooking in and out


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(ssd, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssd, name, counted)
    for attribute, portable in ssd._PORTABLE.items():  # what the dispatchers call
        if portable is original:
            monkeypatch.setitem(ssd._PORTABLE, attribute, counted)
    return calls


def test_portable_path_is_taken_once_per_layer(monkeypatch, caplog):
    model = Mamba2ForCausalLM(config(layers=3)).eval()
    input_ids = torch.randint(1, 64, (2, 20))
    scans, convs = count_calls(monkeypatch, "_ssd_forward"), count_calls(monkeypatch, "causal_conv1d")
    with torch.no_grad():
        model(input_ids)
    assert scans == [] and convs == []  # not installed: transformers' own path
    assert ssd.mamba2_code_path("cpu") == "transformers PyTorch fallback (reference SSD)"
    with caplog.at_level("INFO", logger=ssd.__name__):
        assert ssd.install_mamba2_fast_path()
        assert ssd.install_mamba2_fast_path()  # idempotent
        with torch.no_grad():
            model(input_ids)
            model(input_ids)
    assert len(scans) == len(convs) == 6
    logged = [r.getMessage() for r in caplog.records if "Mamba-2 code path" in r.getMessage()]
    assert logged == [f"Mamba-2 code path: {ssd.MAMBA2_FAST_PATH_NAME}"]  # logged once, truthfully
    assert ssd.mamba2_code_path("cpu") == ssd.MAMBA2_FAST_PATH_NAME
    ssd.uninstall_mamba2_fast_path()
    ssd.uninstall_mamba2_fast_path()  # idempotent
    assert not ssd.mamba2_fast_path_active()
    assert not any("biomamba" in getattr(f, "__name__", "") for f in hooked_attributes())
    assert modeling_mamba2.MambaRMSNormGated.forward is not ssd._norm_forward


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_opt_out_env_var(monkeypatch, value):
    monkeypatch.setenv("BIOMAMBA_FAST_SCAN", value)
    before = hooked_attributes()
    assert ssd.install_mamba2_fast_path() is False
    assert hooked_attributes() == before
    assert not ssd.mamba2_fast_path_active()


def test_torch_forward_layout(monkeypatch):
    """Releases whose mixer has ``torch_forward`` (and no ``mamba2_chunk_scan``): the method is replaced at class level;
    calls without a cache run :func:`mamba2_forward` whatever the signature, calls with a cache the original."""
    calls = []

    def torch_forward(self, input_states, cache_params=None, cache_position=None, attention_mask=None):
        calls.append(cache_params)
        return "original"

    monkeypatch.delattr(modeling_mamba2, "mamba2_chunk_scan", raising=False)
    monkeypatch.setattr(Mamba2Mixer, "torch_forward", torch_forward, raising=False)
    mixer, hidden, mask = mixer_case(1)
    expected = ssd.mamba2_forward(mixer, hidden, None, mask)
    assert ssd.install_mamba2_fast_path() and ssd.mamba2_fast_path_active()
    assert inspect.signature(Mamba2Mixer.torch_forward) is not None
    assert_close(mixer.torch_forward(hidden, None, None, mask), expected, "positional, old signature")
    assert_close(mixer.torch_forward(hidden, attention_mask=mask), expected, "keywords")
    assert calls == []
    assert mixer.torch_forward(hidden, "cache", None, mask) == "original" and calls == ["cache"]
    ssd.uninstall_mamba2_fast_path()
    assert Mamba2Mixer.torch_forward is torch_forward


def test_no_hook_point_fails_loudly(monkeypatch):
    monkeypatch.delattr(modeling_mamba2, "mamba2_chunk_scan", raising=False)
    monkeypatch.delattr(Mamba2Mixer, "torch_forward", raising=False)
    with pytest.raises(RuntimeError, match="BIOMAMBA_FAST_SCAN=0"):
        ssd.install_mamba2_fast_path()


# ----------------------------------------------------------------------------------------------------------------------
# linear cost


def saved_bytes_and_flops(function, length):
    """Bytes autograd keeps for the backward, and the matmul FLOPs of forward + backward, of one chunk scan."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = chunk_scan_inputs(batch=1, length=length, heads=4, head_dim=8, groups=1, state=16)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            y = function(**inputs, chunk_size=32, dt_softplus=True)
        y.sum().backward()
    return sum(saved), counter.get_total_flops()


@needs_functional_layout
def test_linear_memory_and_work():
    """4x the length: ours saves (about) 4x the bytes and does 4x the matmul work, and saves no more than a few
    copies of its inputs; transformers' reference saves far more and does superlinear work."""
    ours_short, ours_long = (saved_bytes_and_flops(ssd.mamba2_chunk_scan, n) for n in (512, 2048))
    ref_short, ref_long = (saved_bytes_and_flops(modeling_mamba2.mamba2_chunk_scan, n) for n in (512, 2048))
    input_bytes = 4 * 2048 * (4 * 8 + 4 + 2 * 16)  # x, dt, B, C in fp32
    assert ours_long[0] <= 3 * input_bytes
    assert 3.5 <= ours_long[0] / ours_short[0] <= 4.5
    assert 3.5 <= ours_long[1] / ours_short[1] <= 4.5
    assert ref_long[0] > 10 * ours_long[0]
    assert ref_long[1] / ref_short[1] > 4.5


def test_package_switch_covers_mamba2(monkeypatch):
    """biomamba_hf.ops.enable_fast_scan / disable_fast_scan (what importing the package runs) switch Mamba-2 too,
    and the code-path description for Mamba-2 says which path runs."""
    from biomamba_hf import ops

    mamba1_was_active = ops.fast_scan_active()
    try:
        ops.disable_fast_scan()
        assert not ssd.mamba2_fast_path_active()
        assert ops.mamba_code_path("cpu", model_type="mamba2") == "transformers PyTorch fallback (reference SSD)"
        ops.enable_fast_scan()
        assert ssd.mamba2_fast_path_active()
        assert ops.mamba_code_path("cpu", model_type="mamba2") == ssd.MAMBA2_FAST_PATH_NAME
        ops.disable_fast_scan()
        monkeypatch.setenv("BIOMAMBA_FAST_SCAN", "0")
        ops.enable_fast_scan()
        assert not ssd.mamba2_fast_path_active()
    finally:
        monkeypatch.delenv("BIOMAMBA_FAST_SCAN")
        if mamba1_was_active:
            ops.enable_fast_scan()
        else:
            ops.disable_fast_scan()
