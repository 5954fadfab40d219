"""Show on a CUDA machine that converted mamba_ssm checkpoints give mamba_ssm's logits in transformers.

For each case, a tiny random ``MambaLMHeadModel`` is built by mamba_ssm itself (Mamba-1 or Mamba-2 layers, a vocabulary
that ``pad_vocab_size_multiple`` pads, tied and untied heads, biases, several groups, fused and unfused add+norm), saved
with mamba_ssm's own ``save_pretrained``, converted with ``biomamba_hf.convert.convert_mamba_ssm_checkpoint``, loaded
with ``AutoModelForCausalLM`` and run on the same random tokens.

Pass criteria (stated here and printed):
- float32: max |logits_hf - logits_ssm| <= FP32_RTOL * max(1, max |logits_ssm|). TF32 is disabled for torch matmuls
  and convolutions; mamba_ssm's Triton SSD kernels may still use TF32 internally, hence 2e-3 rather than 1e-5.
- bfloat16 (both models loaded in bf16): the converted model's error against the float32 mamba_ssm logits is at most
  BF16_FACTOR times mamba_ssm's own bf16 error, plus BF16_RTOL * max |logits|.
- control: zeroing one converted tensor (the first layer's D) moves the logits by more than 2x the float32 tolerance,
  so the tolerance is far tighter than what a wrong mapping would produce.

Run from the repository root (the machine needs mamba_ssm 2.x with its CUDA/Triton kernels and causal-conv1d):

    PYTHONPATH=. python scripts/gpu_check_convert.py

Measured on one H200 (torch 2.11+cu130, transformers 5.17, mamba_ssm 2.3.2.post1), all cases pass: fp32 max abs
diffs 2.3e-5 / 1.2e-6 (Mamba-1) and 7.0e-4 / 9.2e-6 (Mamba-2) against max |logits| of 79 / 2.8 and 108 / 2.9.

Exit status 0 when every case passes, 1 when any fails, 2 when the machine cannot run the check.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

FP32_RTOL = 2e-3
BF16_FACTOR = 3.0
BF16_RTOL = 1e-2

#: name -> mamba_ssm MambaConfig fields. vocab_size 1000 is not a multiple of 16 (or 8): the embedding is padded.
CASES = {
    "mamba1": {
        "d_model": 128,
        "n_layer": 3,
        "vocab_size": 1000,
        "ssm_cfg": {"layer": "Mamba1"},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 16,
        "tie_embeddings": True,
    },
    "mamba1-untied-bias-unfused": {
        "d_model": 96,
        "n_layer": 2,
        "vocab_size": 1001,
        "ssm_cfg": {"layer": "Mamba1", "d_state": 8, "dt_rank": 12, "bias": True, "expand": 3},
        "rms_norm": True,
        "residual_in_fp32": False,
        "fused_add_norm": False,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": False,
    },
    "mamba2": {
        "d_model": 256,
        "d_intermediate": 0,
        "n_layer": 3,
        "vocab_size": 1000,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 64, "headdim": 32, "chunk_size": 64},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 16,
        "tie_embeddings": True,
    },
    "mamba2-untied-bias-unfused": {
        "d_model": 128,
        "d_intermediate": 0,
        "n_layer": 2,
        "vocab_size": 999,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 32, "headdim": 32, "chunk_size": 32, "bias": True},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": False,
        "fused_add_norm": False,
        "pad_vocab_size_multiple": 16,
        "tie_embeddings": False,
    },
}
# With transformers releases whose Mamba2 gated norm ignores n_groups (5.17), the conversion must refuse this.
CASES["mamba2-groups"] = {
    **CASES["mamba2-untied-bias-unfused"],
    "ssm_cfg": {"layer": "Mamba2", "d_state": 32, "headdim": 32, "ngroups": 2, "chunk_size": 32},
}


def environment() -> dict:
    """Versions and kernels; exits with status 2 when the machine cannot run mamba_ssm's reference."""
    import importlib.metadata as md

    import torch

    problems = []
    if not torch.cuda.is_available():
        problems.append("no CUDA device (torch.cuda.is_available() is False)")
    for module in ("mamba_ssm", "causal_conv1d", "selective_scan_cuda", "triton"):
        try:
            __import__(module)
        except ImportError as err:
            problems.append(f"cannot import {module}: {err}")
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined  # noqa: F401
    except ImportError as err:
        problems.append(f"mamba_ssm's Triton SSD kernels are missing: {err}")
    if problems:
        print("cannot run the check:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(2)
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    for dist in ("transformers", "mamba_ssm", "causal_conv1d", "triton", "huggingface_hub", "safetensors"):
        try:
            info[dist] = md.version(dist.replace("_", "-"))
        except md.PackageNotFoundError:
            info[dist] = "?"
    info["gpu"] = torch.cuda.get_device_name(0)
    return info


def load_converter():
    """``biomamba_hf.convert``'s converter, error class and grouped-norm probe; read from this checkout's file if the
    package will not import here (the module depends on transformers, torch, huggingface_hub and safetensors only)."""
    try:
        from biomamba_hf import convert as module
    except ImportError as err:
        import importlib.util

        path = Path(__file__).resolve().parents[1] / "biomamba_hf" / "convert.py"
        print(f"note: `import biomamba_hf` failed ({err}); loading {path} directly", file=sys.stderr)
        spec = importlib.util.spec_from_file_location("biomamba_convert", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.convert_mamba_ssm_checkpoint, module.ConversionError, module.transformers_mamba2_norm_is_grouped


def randomize(model, seed: int) -> None:
    """Move the parameters mamba_ssm initialises to constants (norm weights 1, D 1, biases 0) off those constants,
    so that a tensor landing in the wrong place changes the logits."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith(".D"):
                p.copy_(noise)
            elif name.endswith(".A_log"):
                p.add_(0.1 * noise)
            elif name == "backbone.embedding.weight":
                p.copy_(0.5 * noise)
            elif name.endswith(".bias") and not name.endswith("dt_proj.bias"):
                p.add_(0.05 * noise)


def logits_of(model, input_ids):
    import torch

    with torch.no_grad():
        out = model(input_ids)
    return out.logits.float()


def run_case(name: str, fields: dict, work: Path, seq_len: int, check_bf16: bool) -> dict:
    import torch
    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    from transformers import AutoModelForCausalLM

    convert_mamba_ssm_checkpoint, ConversionError, norm_is_grouped = load_converter()
    device = torch.device("cuda")
    torch.manual_seed(0)
    ssm = MambaLMHeadModel(SsmConfig(**copy.deepcopy(fields)), device=device, dtype=torch.float32).eval()
    randomize(ssm, seed=1)
    source = work / f"{name}-ssm"
    ssm.save_pretrained(str(source))  # mamba_ssm's own: config.json + pytorch_model.bin
    saved = json.loads((source / "config.json").read_text())
    if fields["ssm_cfg"].get("ngroups", 1) > 1 and not norm_is_grouped():
        try:
            convert_mamba_ssm_checkpoint(source, work / f"{name}-hf")
        except ConversionError as err:
            refused = "needs a gated RMSNorm per group" in str(err)
            return {"case": name, "refused (transformers norm not grouped)": str(err), "pass": refused}
        return {"case": name, "error": "converted although transformers' gated norm ignores ngroups", "pass": False}
    converted = convert_mamba_ssm_checkpoint(source, work / f"{name}-hf")
    hf = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).to(device).eval()

    multiple = fields["pad_vocab_size_multiple"]
    padded = fields["vocab_size"] + (-fields["vocab_size"]) % multiple
    assert fields["vocab_size"] % multiple != 0, f"{name}: the case must need vocabulary padding"
    assert hf.config.vocab_size == padded == ssm.lm_head.weight.shape[0], (hf.config.vocab_size, padded)
    assert saved["vocab_size"] == fields["vocab_size"]

    gen = torch.Generator(device="cpu").manual_seed(2)
    input_ids = torch.randint(0, fields["vocab_size"], (2, seq_len), generator=gen).to(device)
    ref = logits_of(ssm, input_ids)
    out = logits_of(hf, input_ids)
    scale = ref.abs().max().item()
    tol = FP32_RTOL * max(1.0, scale)
    diff = (out - ref).abs().max().item()
    result = {
        "case": name,
        "class": type(hf).__name__,
        "vocab": f"{fields['vocab_size']} -> {padded}",
        "max|logits|": scale,
        "fp32 max abs diff": diff,
        "fp32 mean abs diff": (out - ref).abs().mean().item(),
        "fp32 tol": tol,
        "finite": bool(torch.isfinite(out).all()),
    }
    ok = diff <= tol and result["finite"]

    # Control: the comparison must be able to fail.
    with torch.no_grad():
        saved_d = hf.backbone.layers[0].mixer.D.detach().clone()
        hf.backbone.layers[0].mixer.D.zero_()
        result["control diff (D zeroed)"] = (logits_of(hf, input_ids) - ref).abs().max().item()
        hf.backbone.layers[0].mixer.D.copy_(saved_d)
    ok &= result["control diff (D zeroed)"] > 2 * tol

    if check_bf16:
        ssm16 = MambaLMHeadModel(SsmConfig(**copy.deepcopy(fields)), device=device, dtype=torch.bfloat16).eval()
        ssm16.load_state_dict(ssm.state_dict())  # mamba_ssm keeps some A_log and D in float32 here
        source16 = work / f"{name}-ssm-bf16"
        ssm16.save_pretrained(str(source16))
        hf16 = AutoModelForCausalLM.from_pretrained(
            convert_mamba_ssm_checkpoint(source16, work / f"{name}-hf-bf16"), dtype=torch.bfloat16
        )
        hf16 = hf16.to(device).eval()
        ref16 = logits_of(ssm16, input_ids)
        out16 = logits_of(hf16, input_ids)
        ssm_err = (ref16 - ref).abs().max().item()
        hf_err = (out16 - ref).abs().max().item()
        bf16_tol = BF16_FACTOR * ssm_err + BF16_RTOL * max(1.0, scale)
        result.update(
            {
                "bf16 max abs diff (hf vs ssm)": (out16 - ref16).abs().max().item(),
                "bf16 ssm err vs fp32": ssm_err,
                "bf16 hf err vs fp32": hf_err,
                "bf16 tol": bf16_tol,
            }
        )
        ok &= hf_err <= bf16_tol and bool(torch.isfinite(out16).all())
    result["pass"] = bool(ok)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=300, help="tokens per sequence (several SSD chunks)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 comparison")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the network

    info = environment()
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("environment: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"tolerances: fp32 {FP32_RTOL} x max(1, max|logits|); bf16 {BF16_FACTOR} x mamba_ssm's own bf16 error "
          f"+ {BF16_RTOL} x max(1, max|logits|)")  # fmt: skip

    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_convert-") as tmp:
        for name in args.cases:
            try:
                result = run_case(name, CASES[name], Path(tmp), args.seq_len, not args.no_bf16)
            except Exception as err:  # report every case, then fail
                result = {"case": name, "pass": False, "error": f"{type(err).__name__}: {err}"}
            results.append(result)
            print(json.dumps(result, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps({"environment": info, "results": results}, indent=2, default=str))
    failed = [r["case"] for r in results if not r["pass"]]
    print("FAIL: " + ", ".join(failed) if failed else f"PASS: all {len(results)} cases")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
