"""Conversion of mamba_ssm checkpoints (Mamba-1 and Mamba-2 layers) into transformers folders.

The sources are built here from mamba_ssm's documented names and shapes (``models/mixer_seq_simple.py``,
``modules/mamba_simple.py``, ``modules/mamba2.py``), not from the converter's own tables, and the converted models are
checked against a small float64 re-implementation of mamba_ssm's forward pass (sequential scan, no transformers code).
The same comparison against mamba_ssm itself, with its CUDA kernels, is ``scripts/gpu_check_convert.py``.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from biomamba_hf.convert import ConversionError, convert_mamba_ssm_checkpoint, main, mamba_ssm_config_to_transformers

D_MODEL, N_LAYER = 32, 2
PAD_MULTIPLE = 16


# --------------------------------------------------------------------------------------------------------------------
# mamba_ssm-format sources
# --------------------------------------------------------------------------------------------------------------------


def ssm_config(layer="Mamba1", vocab_size=99, **overrides):
    """A config.json as mamba_ssm's ``MambaLMHeadModel.save_pretrained`` writes it (``MambaConfig.__dict__``)."""
    ssm_cfg = {"layer": layer, "d_state": 8, "d_conv": 4, "expand": 2}
    if layer == "Mamba2":
        ssm_cfg.update(headdim=16, ngroups=2, chunk_size=4)
    ssm_cfg.update(overrides.pop("ssm_cfg", {}))
    config = {
        "d_model": D_MODEL,
        "d_intermediate": 0,
        "n_layer": N_LAYER,
        "vocab_size": vocab_size,
        "ssm_cfg": ssm_cfg,
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": PAD_MULTIPLE,
        "tie_embeddings": True,
    }
    config.update(overrides)
    return config


def ssm_state_dict(config, seed=0, dtype=torch.float32):
    """Random tensors under mamba_ssm's parameter names, with the shapes its modules create."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(dtype)

    d, ssm = config["d_model"], config["ssm_cfg"]
    vocab = config["vocab_size"] + (-config["vocab_size"]) % config["pad_vocab_size_multiple"]
    d_inner, n, k = ssm["expand"] * d, ssm["d_state"], ssm["d_conv"]
    bias, conv_bias = ssm.get("bias", False), ssm.get("conv_bias", True)
    state = {"backbone.embedding.weight": rand(vocab, d, scale=1.0)}
    for i in range(config["n_layer"]):
        p = f"backbone.layers.{i}."
        state[p + "norm.weight"] = rand(d, scale=0.1, shift=1.0)
        m = p + "mixer."
        if ssm["layer"] == "Mamba1":
            r = math.ceil(d / 16)
            state[m + "in_proj.weight"] = rand(2 * d_inner, d)
            state[m + "conv1d.weight"] = rand(d_inner, 1, k, scale=0.5)
            state[m + "x_proj.weight"] = rand(r + 2 * n, d_inner)
            state[m + "dt_proj.weight"] = rand(d_inner, r, scale=0.5)
            state[m + "dt_proj.bias"] = rand(d_inner, scale=0.5, shift=-3.0)
            # mamba_ssm keeps A_log and D in float32 whatever the model dtype
            state[m + "A_log"] = torch.log(torch.rand(d_inner, n, generator=gen) * 15 + 1)
            state[m + "D"] = torch.randn(d_inner, generator=gen)
            state[m + "out_proj.weight"] = rand(d, d_inner)
            in_width, conv_dim = 2 * d_inner, d_inner
        else:
            h, g = d_inner // ssm["headdim"], ssm["ngroups"]
            in_width, conv_dim = 2 * d_inner + 2 * g * n + h, d_inner + 2 * g * n
            state[m + "in_proj.weight"] = rand(in_width, d)  # [z, x, B, C, dt]
            state[m + "conv1d.weight"] = rand(conv_dim, 1, k, scale=0.5)
            state[m + "dt_bias"] = rand(h, scale=0.5, shift=-3.0)
            state[m + "A_log"] = torch.log(torch.rand(h, generator=gen) * 15 + 1).to(dtype)
            state[m + "D"] = torch.randn(h, generator=gen)
            state[m + "norm.weight"] = rand(d_inner, scale=0.1, shift=1.0)
            state[m + "out_proj.weight"] = rand(d, d_inner)
        if conv_bias:
            state[m + "conv1d.bias"] = rand(conv_dim)
        if bias:
            state[m + "in_proj.bias"] = rand(in_width)
            state[m + "out_proj.bias"] = rand(d)
    state["backbone.norm_f.weight"] = rand(d, scale=0.1, shift=1.0)
    # state_dict() of a tied MambaLMHeadModel lists the shared tensor under both names
    state["lm_head.weight"] = state["backbone.embedding.weight"] if config["tie_embeddings"] else rand(vocab, d)
    return state


def write_source(path, config, state=None, weights="pytorch_model.bin"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=4))
    state = ssm_state_dict(config) if state is None else state
    if weights == "pytorch_model.bin":
        torch.save(state, path / weights)
    elif weights == "model.safetensors":
        save_file(
            {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight" or not config["tie_embeddings"]},
            path / weights,
        )
    return path, state


def read_safetensors(path):
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# --------------------------------------------------------------------------------------------------------------------
# A float64 re-implementation of mamba_ssm's MambaLMHeadModel forward (fused_add_norm=False path, sequential scan)
# --------------------------------------------------------------------------------------------------------------------


def _rms(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _causal_conv(x, weight, bias):  # x: (b, l, c); weight: (c, 1, k) as in nn.Conv1d(groups=c, padding=k-1)
    y = F.conv1d(x.transpose(1, 2), weight, bias, padding=weight.shape[-1] - 1, groups=x.shape[-1])
    return y[..., : x.shape[1]].transpose(1, 2)


def _mamba1_mixer(p, u, ssm):
    d_state, dt_rank = ssm["d_state"], math.ceil(u.shape[-1] / 16)
    x, z = F.linear(u, p["in_proj.weight"], p.get("in_proj.bias")).chunk(2, dim=-1)
    x = F.silu(_causal_conv(x, p["conv1d.weight"], p.get("conv1d.bias")))
    dt, B, C = F.linear(x, p["x_proj.weight"]).split([dt_rank, d_state, d_state], dim=-1)
    dt = F.softplus(F.linear(dt, p["dt_proj.weight"], p["dt_proj.bias"]))  # (b, l, d_inner)
    A = -torch.exp(p["A_log"])  # (d_inner, d_state)
    s = torch.zeros(u.shape[0], x.shape[-1], d_state, dtype=u.dtype)
    ys = []
    for t in range(u.shape[1]):
        s = torch.exp(dt[:, t, :, None] * A) * s + dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((s * C[:, t, None, :]).sum(-1) + p["D"] * x[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return F.linear(y, p["out_proj.weight"], p.get("out_proj.bias"))


def _mamba2_mixer(p, u, ssm):
    b, length, d = u.shape
    d_inner, n, g, hd = ssm["expand"] * d, ssm["d_state"], ssm["ngroups"], ssm["headdim"]
    h = d_inner // hd
    z, xbc, dt = F.linear(u, p["in_proj.weight"], p.get("in_proj.bias")).split([d_inner, d_inner + 2 * g * n, h], -1)
    xbc = F.silu(_causal_conv(xbc, p["conv1d.weight"], p.get("conv1d.bias")))
    x, B, C = xbc.split([d_inner, g * n, g * n], dim=-1)
    x = x.reshape(b, length, h, hd)
    # head j reads group j // (h / g), as mamba_ssm's kernels index B and C
    B = B.reshape(b, length, g, n).repeat_interleave(h // g, dim=2)
    C = C.reshape(b, length, g, n).repeat_interleave(h // g, dim=2)
    dt = F.softplus(dt + p["dt_bias"])  # (b, l, h)
    A = -torch.exp(p["A_log"])  # (h,)
    s = torch.zeros(b, h, hd, n, dtype=u.dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        s = decay * s + dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, :, None, :]
        ys.append((s * C[:, t, :, None, :]).sum(-1) + p["D"][:, None] * x[:, t])
    y = torch.stack(ys, dim=1).reshape(b, length, d_inner)
    # RMSNormGated(norm_before_gate=False, group_size=d_inner // ngroups): norm(y * silu(z)) per group
    y = (y * F.silu(z)).reshape(b, length, g, d_inner // g)
    y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(b, length, d_inner) * p["norm.weight"]
    return F.linear(y, p["out_proj.weight"], p.get("out_proj.bias"))


def reference_logits(config, state, input_ids):
    state = {k: v.double() for k, v in state.items()}
    ssm = config["ssm_cfg"]
    mixer = _mamba2_mixer if ssm["layer"] == "Mamba2" else _mamba1_mixer
    hidden, residual = state["backbone.embedding.weight"][input_ids], None
    for i in range(config["n_layer"]):
        prefix = f"backbone.layers.{i}."
        residual = hidden if residual is None else hidden + residual
        hidden = _rms(residual, state[prefix + "norm.weight"])
        params = {k[len(prefix + "mixer.") :]: v for k, v in state.items() if k.startswith(prefix + "mixer.")}
        hidden = mixer(params, hidden, ssm)
    hidden = _rms(hidden + residual, state["backbone.norm_f.weight"])
    return F.linear(hidden, state["lm_head.weight"])


# --------------------------------------------------------------------------------------------------------------------
# Tensors land where they should, and the model computes mamba_ssm's function
# --------------------------------------------------------------------------------------------------------------------

CASES = {
    "mamba1-tied": ("Mamba1", {}),
    "mamba1-untied-bias": ("Mamba1", {"tie_embeddings": False, "ssm_cfg": {"bias": True, "conv_bias": False}}),
    "mamba2-tied": ("Mamba2", {}),
    "mamba2-untied-bias": (
        "Mamba2",
        {"tie_embeddings": False, "residual_in_fp32": False, "ssm_cfg": {"bias": True, "ngroups": 1}},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_tensor_lands_under_its_transformers_name(tmp_path, case):
    layer, overrides = CASES[case]
    config = ssm_config(layer, **overrides)
    source, state = write_source(tmp_path / "ssm", config)
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "hf")

    converted = read_safetensors(out)
    tied = config["tie_embeddings"]
    expected_names = {("backbone.embeddings.weight" if k == "backbone.embedding.weight" else k) for k in state}
    if tied:  # save_pretrained stores a tied lm_head once, under the embedding
        expected_names.discard("lm_head.weight")
    assert set(converted) == expected_names
    for key, value in state.items():
        if key == "lm_head.weight" and tied:
            continue
        new_key = "backbone.embeddings.weight" if key == "backbone.embedding.weight" else key
        assert converted[new_key].dtype == value.dtype, key
        assert torch.equal(converted[new_key], value), key


@pytest.mark.parametrize("case", list(CASES))
def test_converted_model_matches_mamba_ssm_reference_forward(tmp_path, case):
    from transformers import AutoModelForCausalLM

    layer, overrides = CASES[case]
    config = ssm_config(layer, **overrides)
    source, state = write_source(tmp_path / "ssm", config)
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "hf")

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == ("Mamba2ForCausalLM" if layer == "Mamba2" else "MambaForCausalLM")
    padded = config["vocab_size"] + (-config["vocab_size"]) % PAD_MULTIPLE
    assert config["vocab_size"] % PAD_MULTIPLE != 0 and model.config.vocab_size == padded
    if config["tie_embeddings"]:
        assert model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    else:
        assert torch.equal(model.lm_head.weight, state["lm_head.weight"])

    input_ids = torch.randint(0, config["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids).logits
    expected = reference_logits(config, state, input_ids)
    assert logits.shape == (2, 11, padded)
    assert torch.isfinite(logits).all()
    assert expected.abs().max() > 1.0  # the comparison below is not between two near-zero tensors
    torch.testing.assert_close(logits.double(), expected, atol=2e-4, rtol=1e-4)


def test_reference_forward_notices_a_wrong_mapping(tmp_path):
    """The reference is sensitive to what a mis-mapping would change (here: the gated norm's weight)."""
    from transformers import AutoModelForCausalLM

    config = ssm_config("Mamba2")
    source, state = write_source(tmp_path / "ssm", config)
    model = AutoModelForCausalLM.from_pretrained(convert_mamba_ssm_checkpoint(source, tmp_path / "hf"))
    with torch.no_grad():
        model.backbone.layers[1].mixer.norm.weight.fill_(1.0)
        input_ids = torch.arange(11)[None] % config["vocab_size"]
        diff = (model(input_ids).logits.double() - reference_logits(config, state, input_ids)).abs().max()
    assert diff > 1e-2


def test_config_fields_are_carried_over():
    family, kwargs = mamba_ssm_config_to_transformers(
        ssm_config(
            "Mamba2",
            vocab_size=50277,
            residual_in_fp32=False,
            tie_embeddings=False,
            ssm_cfg={
                "d_state": 64,
                "d_conv": 3,
                "expand": 3,
                "headdim": 24,
                "ngroups": 4,
                "bias": True,
                "conv_bias": False,
                "dt_min": 0.002,
                "dt_max": 0.2,
                "dt_init_floor": 1e-3,
                "dt_limit": [0.0, 5.0],
                "chunk_size": 128,
                "A_init_range": [1, 8],
            },
        )
    )
    assert family == "mamba2"
    assert kwargs == {
        "vocab_size": 50288,
        "hidden_size": 32,
        "state_size": 64,
        "num_hidden_layers": 2,
        "layer_norm_epsilon": 1e-5,
        "expand": 3,
        "conv_kernel": 3,
        "use_bias": True,
        "use_conv_bias": False,
        "hidden_act": "silu",
        "residual_in_fp32": False,
        "time_step_min": 0.002,
        "time_step_max": 0.2,
        "time_step_floor": 1e-3,
        "tie_word_embeddings": False,
        "num_heads": 4,
        "head_dim": 24,
        "n_groups": 4,
        "chunk_size": 128,
        "time_step_limit": [0.0, 5.0],
    }
    family, kwargs = mamba_ssm_config_to_transformers(
        ssm_config("Mamba1", ssm_cfg={"dt_rank": 7, "dt_scale": 2.0, "dt_init": "constant", "d_state": 4})
    )
    assert family == "mamba"
    assert (kwargs["time_step_rank"], kwargs["time_step_scale"], kwargs["time_step_init_scheme"]) == (
        7,
        2.0,
        "constant",
    )
    assert (kwargs["state_size"], kwargs["vocab_size"], kwargs["tie_word_embeddings"]) == (4, 112, True)


def test_mamba_ssm_defaults_apply_to_keys_a_config_leaves_out():
    # state-spaces/mamba-130m's config.json predates d_intermediate, attn_* and tie_embeddings
    config = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}  # fmt: skip
    family, kwargs = mamba_ssm_config_to_transformers(config)
    assert family == "mamba"
    assert (kwargs["vocab_size"], kwargs["state_size"], kwargs["time_step_rank"], kwargs["tie_word_embeddings"]) == (
        50280,
        16,
        48,
        True,
    )


def test_safetensors_source_and_dtypes_are_kept(tmp_path):
    config = ssm_config("Mamba1")
    state = ssm_state_dict(config, dtype=torch.bfloat16)
    source, _ = write_source(tmp_path / "ssm", config, state, weights="model.safetensors")
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    converted = read_safetensors(out)
    assert converted["backbone.layers.0.mixer.A_log"].dtype == torch.float32  # as mamba_ssm keeps it
    assert converted["backbone.layers.0.mixer.in_proj.weight"].dtype == torch.bfloat16
    assert torch.equal(converted["backbone.embeddings.weight"], state["backbone.embedding.weight"])
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"

    cast = convert_mamba_ssm_checkpoint(source, tmp_path / "hf32", dtype="float32")
    assert {t.dtype for t in read_safetensors(cast).values()} == {torch.float32}


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------------


def test_tokenizer_in_source_or_given_is_saved(tmp_path, tokenizer_dir, tokenizer):
    from transformers import AutoTokenizer

    config = ssm_config("Mamba2", vocab_size=len(tokenizer) + 1)
    source, _ = write_source(tmp_path / "ssm", config)
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "given", tokenizer=tokenizer_dir)
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.get_vocab() == tokenizer.get_vocab()
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["eos_token_id"] == tokenizer.eos_token_id == 0

    tokenizer.save_pretrained(source)
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "from_source")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()


def test_no_tokenizer_means_none_written(tmp_path):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba1"))
    out = convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tokenizer_dir, tokenizer):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba1", vocab_size=50))
    with pytest.raises(ConversionError, match=rf"tokenizer has {len(tokenizer)} tokens but .* 64 rows"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf", tokenizer=tokenizer_dir)
    assert not (tmp_path / "hf").exists()


def test_question_answering_head_loads_the_converted_folder(tmp_path):
    pytest.importorskip("biomamba_hf.modeling")
    from transformers import AutoModelForQuestionAnswering

    import biomamba_hf  # noqa: F401  (registers the task heads with the Auto classes)

    source, state = write_source(tmp_path / "ssm", ssm_config("Mamba2"))
    model = AutoModelForQuestionAnswering.from_pretrained(convert_mamba_ssm_checkpoint(source, tmp_path / "hf"))
    assert type(model).__name__ == "Mamba2ForQuestionAnswering"
    assert torch.equal(model.backbone.layers[0].mixer.in_proj.weight, state["backbone.layers.0.mixer.in_proj.weight"])


# --------------------------------------------------------------------------------------------------------------------
# Refusals: clear messages, nothing written
# --------------------------------------------------------------------------------------------------------------------


def assert_nothing_written(tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssm"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"attn_layer_idx": [1], "attn_cfg": {"num_heads": 4}}, r"attn_layer_idx=\[1\] makes a hybrid model"),
        ({"d_intermediate": 64}, r"d_intermediate=64 adds a gated MLP"),
        ({"rms_norm": False}, r"rms_norm=False means LayerNorm"),
        ({"ssm_cfg": {"layer": "Mamba3"}}, r"ssm_cfg\['layer'\]='Mamba3' is not a layer transformers implements"),
        ({"ssm_cfg": {"norm_before_gate": True}}, r"ssm_cfg\['norm_before_gate'\]=True cannot be converted"),
        ({"ssm_cfg": {"rmsnorm": False}}, r"ssm_cfg\['rmsnorm'\]=False cannot be converted"),
        ({"ssm_cfg": {"D_has_hdim": True}}, r"ssm_cfg\['D_has_hdim'\]=True cannot be converted"),
        ({"ssm_cfg": {"d_ssm": 32}}, r"ssm_cfg\['d_ssm'\]=32 applies the SSM to part"),
        ({"ssm_cfg": {"headdim": 48}}, r"headdim'\]=48 must divide the inner width expand\*d_model=64"),
        ({"ssm_cfg": {"ngroups": 3}}, r"ngroups'\]=3 must divide the number of heads"),
        ({"ssm_cfg": {"expand": 1.5}}, r"ssm_cfg\['expand'\]=1.5 must be a whole number"),
        ({"ssm_cfg": {"dt_rank": 4}}, r"keys that mamba_ssm's Mamba2 layer does not take: \['dt_rank'\]"),
        ({"norm_epsilon": 1e-6}, r"keys \['norm_epsilon'\] are not fields of mamba_ssm's MambaConfig"),
    ],
)
def test_unrepresentable_configs_are_refused(tmp_path, overrides, match):
    layer = (overrides.get("ssm_cfg") or {}).get("layer", "Mamba2")
    config = ssm_config("Mamba2", **{k: v for k, v in overrides.items() if k != "ssm_cfg"})
    config["ssm_cfg"].update(overrides.get("ssm_cfg", {}), layer=layer)
    (tmp_path / "ssm").mkdir()
    (tmp_path / "ssm" / "config.json").write_text(json.dumps(config))  # refused before the weights are read
    with pytest.raises(ConversionError, match=match) as info:
        convert_mamba_ssm_checkpoint(tmp_path / "ssm", tmp_path / "hf")
    assert "config.json" in str(info.value)
    assert_nothing_written(tmp_path)


def test_groups_are_refused_where_transformers_norms_the_whole_width(tmp_path, monkeypatch):
    from transformers.models.mamba2 import modeling_mamba2

    class UngroupedNorm(torch.nn.Module):  # transformers 5.17's MambaRMSNormGated signature
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()

    monkeypatch.setattr(modeling_mamba2, "MambaRMSNormGated", UngroupedNorm)
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba2", ssm_cfg={"ngroups": 2}))
    with pytest.raises(ConversionError, match=r"ngroups'\]=2 needs a gated RMSNorm per group.*upgrade transformers"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    assert_nothing_written(tmp_path)


def test_no_config_json(tmp_path):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba1"))
    (source / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"ssm/config.json not found"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    assert_nothing_written(tmp_path)


def test_transformers_folder_is_not_converted_again(tmp_path, clm_dir):
    with pytest.raises(ConversionError, match=r"already a transformers config \(model_type='mamba'\)"):
        convert_mamba_ssm_checkpoint(clm_dir, tmp_path / "hf")


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
def test_truncated_weights(tmp_path, weights):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba2"), weights=weights)
    data = (source / weights).read_bytes()
    (source / weights).write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=rf"ssm/{weights}: cannot read the weights .* truncated"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    assert_nothing_written(tmp_path)


def test_no_weights(tmp_path):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba2"), weights=None)
    with pytest.raises(ConversionError, match=r"no weights found; expected model.safetensors or pytorch_model.bin"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")


def test_missing_unexpected_and_misshapen_tensors_are_listed(tmp_path):
    config = ssm_config("Mamba1")
    state = ssm_state_dict(config)
    del state["backbone.layers.1.mixer.A_log"]
    state["backbone.layers.0.mlp.fc1.weight"] = torch.zeros(4, 4)
    state["backbone.norm_f.weight"] = torch.ones(D_MODEL + 1)
    source, _ = write_source(tmp_path / "ssm", config, state)
    with pytest.raises(ConversionError) as info:
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")
    message = str(info.value)
    assert "pytorch_model.bin does not match its config.json" in message
    assert "missing tensors: ['backbone.layers.1.mixer.A_log']" in message
    assert "unexpected tensors: ['backbone.layers.0.mlp.fc1.weight']" in message
    assert "backbone.norm_f.weight: (33,) (config says (32,))" in message
    assert_nothing_written(tmp_path)


def test_unpadded_vocabulary_is_caught(tmp_path):
    config = ssm_config("Mamba2", vocab_size=99)
    state = ssm_state_dict(config)
    state["backbone.embedding.weight"] = state["lm_head.weight"] = state["backbone.embedding.weight"][:99]
    source, _ = write_source(tmp_path / "ssm", config, state)
    with pytest.raises(ConversionError, match=r"backbone.embedding.weight: \(99, 32\) \(config says \(112, 32\)\)"):
        convert_mamba_ssm_checkpoint(source, tmp_path / "hf")


def test_existing_destination_is_kept_unless_overwrite(tmp_path):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba1"))
    dest = tmp_path / "hf"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"hf exists and is not empty; .* overwrite=True \(--overwrite\)"):
        convert_mamba_ssm_checkpoint(source, dest)
    assert (dest / "notes.txt").read_text() == "keep me"

    convert_mamba_ssm_checkpoint(source, dest, overwrite=True)
    assert not (dest / "notes.txt").exists() and (dest / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "ssm"]  # no temporary folders left

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (convert_mamba_ssm_checkpoint(source, empty) / "config.json").is_file()


def test_unknown_hub_id_offline_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConversionError, match=r"biomamba-test/no-such-model: not a local folder, and HF_HUB_OFFLINE"):
        convert_mamba_ssm_checkpoint("biomamba-test/no-such-model", tmp_path / "hf")
    assert time.monotonic() - start < 10
    assert not (tmp_path / "hf").exists()


def test_missing_local_folder(tmp_path):
    with pytest.raises(ConversionError, match=r"nowhere/at/all: no such folder"):
        convert_mamba_ssm_checkpoint(tmp_path / "nowhere" / "at" / "all", tmp_path / "hf")


# --------------------------------------------------------------------------------------------------------------------
# Console script
# --------------------------------------------------------------------------------------------------------------------


def test_console_script(tmp_path, capsys, tokenizer_dir, tokenizer):
    source, _ = write_source(tmp_path / "ssm", ssm_config("Mamba2", vocab_size=len(tokenizer) + 1))
    assert main([str(source), str(tmp_path / "hf"), "--tokenizer", str(tokenizer_dir), "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"

    assert main([str(source), str(tmp_path / "hf")]) == 1
    assert "biomamba-convert: error: " in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# The scripts point a mamba_ssm-format checkpoint at the converter
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["run_qa", "run_pubmedqa", "run_clm"])
def test_scripts_refuse_a_mamba_ssm_folder_and_name_the_converter(tmp_path, script):
    from helpers import example_script

    source, _ = write_source(tmp_path / "mamba2-130m", ssm_config("Mamba2"))
    argv = ["--model_name_or_path", str(source), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    if script in ("run_qa", "run_pubmedqa"):  # they check their data first: the real folders
        from helpers import data_dir

        argv += ["--data_dir", str(data_dir())]
    if script == "run_qa":
        argv += ["--do_eval", "--test_dirs", "bioasq/4b"]
    else:
        argv += ["--do_train"]
    if script == "run_clm":
        (tmp_path / "train.jsonl").write_text('{"text": "Aspirin inhibits cyclooxygenase."}\n')
        argv += ["--train_file", str(tmp_path / "train.jsonl")]
    with pytest.raises(ValueError, match=r"mamba_ssm's own format .*`biomamba-convert .*mamba2-130m DESTINATION`"):
        with example_script(script) as module:
            module.main(argv)
    assert not (tmp_path / "out").exists()


def test_a_converted_folder_passes_the_scripts_source_check(tmp_path):
    from types import SimpleNamespace

    from biomamba_hf.script_utils import check_model_sources

    source, _ = write_source(tmp_path / "source", ssm_config("Mamba1"))
    with pytest.raises(ValueError, match="mamba_ssm's own format"):
        check_model_sources(SimpleNamespace(model_name_or_path=str(source)))
    destination = convert_mamba_ssm_checkpoint(source, tmp_path / "converted")
    check_model_sources(SimpleNamespace(model_name_or_path=str(destination)))


def test_safe_loading_names_the_converter_for_a_mamba_ssm_folder(tmp_path):
    """from_pretrained_safely (the scripts' and the QA pipeline's model loader) explains the format instead of calling
    the pickle weights untrusted; transformers' own AutoConfig fails earlier with no way out named."""
    from transformers import AutoModelForQuestionAnswering

    from biomamba_hf.reliability import from_pretrained_safely

    source, _ = write_source(tmp_path / "mamba2-130m", ssm_config("Mamba2"))
    with pytest.raises(ValueError, match=r"mamba_ssm's own format .*`biomamba-convert .*mamba2-130m DESTINATION`"):
        from_pretrained_safely(AutoModelForQuestionAnswering, source)
