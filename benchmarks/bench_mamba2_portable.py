"""Mamba-2 training without mamba-ssm: transformers' reference path vs biomamba_hf's portable chunked SSD.

Training steps (forward + backward + AdamW step) of a random-init ``Mamba2ForCausalLM``, side by side in one run:

* ``transformers fallback``: transformers' own PyTorch path (the one it takes without mamba-ssm);
* ``portable SSD``: :mod:`biomamba_hf.ops.ssd` (``install_mamba2_fast_path``);
* ``kernels`` (``--device cuda`` with mamba-ssm importable): transformers with mamba-ssm's kernels.

On a GPU that has the kernels, the first two are timed with the kernels hidden from transformers for the duration (the
module-level kernel bindings rebound to transformers' reference functions, ``is_fast_path_available`` set to False),
so all three rows come from the same machine and process. Presets:

* ``tiny`` (default): hidden 256, 2 layers, state 64, head_dim 32 (16 heads), expand 2, n_groups 1, chunk 256,
  vocab 1024, batch 4, at 256 and 1,024 tokens, fp32;
* ``130m``: hidden 768, 24 layers, state 128, head_dim 64, expand 2, n_groups 1, chunk 256, vocab 50,288,
  batch 16 x 2,048 tokens, bf16 (weights, activations and AdamW states).

Tokens/s are ``batch x length / median step time`` (after ``--warmup`` steps); peak memory is CUDA's
``max_memory_allocated`` (CPU: RSS sampled, an estimate).

    python benchmarks/bench_mamba2_portable.py                          # CPU, tiny
    python benchmarks/bench_mamba2_portable.py --device cuda --preset 130m --check

``--check`` first compares the paths' loss, logits and gradients on a small fp32 model (n_groups 2, padding).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from biomamba_hf.ops import ssd  # noqa: E402

PRESETS = {
    "tiny": dict(
        config=dict(vocab_size=1024, hidden_size=256, num_hidden_layers=2, state_size=64, head_dim=32, num_heads=16),
        batch=4,
        lengths=[256, 1024],
        dtype="float32",
    ),
    "130m": dict(
        config=dict(
            vocab_size=50288, hidden_size=768, num_hidden_layers=24, state_size=128, head_dim=64, num_heads=24
        ),
        batch=16,
        lengths=[2048],
        dtype="bfloat16",
    ),
}
KERNEL_BOUND_NAMES = (
    "mamba2_split_conv1d_scan_combined",
    "mamba2_chunk_scan",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "mamba2_selective_state_update",
)


def kernels_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("mamba_ssm") is not None


@contextlib.contextmanager
def without_kernels():
    """transformers' Mamba-2 as it runs without mamba-ssm, whatever is installed (restored on exit)."""
    from transformers.models.mamba2 import modeling_mamba2

    saved = {name: getattr(modeling_mamba2, name) for name in KERNEL_BOUND_NAMES if hasattr(modeling_mamba2, name)}
    saved_flag = getattr(modeling_mamba2, "is_fast_path_available", None)
    try:
        for name, function in saved.items():  # the reference function behind transformers' kernel-or-reference wrapper
            setattr(modeling_mamba2, name, getattr(function, "__wrapped__", function))
        if saved_flag is not None:
            modeling_mamba2.is_fast_path_available = False
        yield
    finally:
        for name, function in saved.items():
            setattr(modeling_mamba2, name, function)
        if saved_flag is not None:
            modeling_mamba2.is_fast_path_available = saved_flag


@contextlib.contextmanager
def code_path(name: str):
    ssd.uninstall_mamba2_fast_path()
    if name == "kernels":
        yield
        return
    with without_kernels():
        if name == "portable SSD":
            assert ssd.install_mamba2_fast_path(), "BIOMAMBA_FAST_SCAN=0 is set: the portable path cannot be timed"
        try:
            yield
        finally:
            ssd.uninstall_mamba2_fast_path()


def train_step_time(config, batch, length, device, dtype, repeats, warmup):
    """Median wall seconds of one training step, the least process CPU seconds of one (on a shared CPU the steadier
    measure: time spent waiting for a core does not count), and the peak memory of the timed steps (bytes)."""
    from transformers import Mamba2ForCausalLM

    model = common.build(Mamba2ForCausalLM, config, device, dtype).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(0, config.vocab_size, (batch, length), device=device)

    cpu_seconds = []

    def step():
        start = time.process_time()
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        cpu_seconds.append(time.process_time() - start)

    with common.PeakMemory(device) as memory:
        seconds = common.time_call(step, device, repeats, warmup)
    return seconds, min(cpu_seconds[warmup:]), memory.peak


def agreement(device, paths) -> list[str]:
    """Max relative error (``max|a - b| / max|b|`` over loss, logits and every parameter gradient) of the portable
    path against the others, on a small fp32 model with left and right padding and n_groups 2 (TF32 off)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    config = Mamba2Config(
        vocab_size=128, hidden_size=64, num_heads=8, head_dim=16, expand=2, state_size=32, n_groups=2, chunk_size=32
    )
    config.num_hidden_layers = 2
    model = common.build(Mamba2ForCausalLM, config, device)
    input_ids = torch.randint(0, 128, (3, 100), device=device, generator=None)
    mask = torch.ones_like(input_ids)
    mask[0, :7] = 0
    mask[1, -9:] = 0

    def outputs():
        model.zero_grad(set_to_none=True)
        out = model(input_ids, attention_mask=mask, labels=input_ids)
        out.loss.backward()
        return [out.loss.detach(), out.logits.detach(), *(p.grad for p in model.parameters())]

    results = {}
    for path in paths:
        with code_path(path):
            results[path] = outputs()
    lines = []
    for other in paths:
        if other != "portable SSD":
            error = max(
                ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                for a, b in zip(results["portable SSD"], results[other])
            )
            lines.append(
                f"agreement, fp32 (loss, logits, all gradients): portable vs {other}: max rel. error {error:.2e}"
            )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (preset's default)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (preset's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--check", action="store_true", help="first compare the paths' results on a small model")
    parser.add_argument("--markdown_out", default=None, help="also append the printed report to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import Mamba2Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the fallback's "install mamba_ssm" warning
    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    dtype = getattr(torch, preset["dtype"])
    config = Mamba2Config(expand=2, n_groups=1, chunk_size=256, **preset["config"])
    batch = args.batch or preset["batch"]
    lengths = args.lengths or preset["lengths"]
    paths = ["transformers fallback", "portable SSD"]
    if device.type == "cuda" and kernels_importable():
        paths.append("kernels")

    checks = agreement(device, paths) if args.check else []
    load_before = os.getloadavg()[0]
    rows, results, cpu_results = [], {}, {}
    for length in lengths:
        for path in paths:
            with code_path(path):
                try:
                    seconds, cpu, peak = train_step_time(
                        config, batch, length, device, dtype, args.repeats, args.warmup
                    )
                    common.free_memory(device)
                    results[path, length] = batch * length / seconds
                    cpu_results[path, length] = batch * length / cpu
                    tokens_per_s = f"{batch * length / seconds:,.0f}"
                    rows.append([path, length, tokens_per_s, f"{seconds:.3f}", f"{cpu:.3f}", common.gib(peak)])
                except Exception as error:  # noqa: BLE001 -- an OOM (or a failure) is a result worth a row
                    if not common.is_oom(error):
                        raise
                    common.free_memory(device)
                    rows.append([path, length, "out of memory", "-", "-", "-"])
                    print(f"{path} at {length}: {str(error).splitlines()[0]}", file=sys.stderr)

    ratios = []
    for length in lengths:
        ours, ours_cpu = results.get(("portable SSD", length)), cpu_results.get(("portable SSD", length))
        for other in ("transformers fallback", "kernels"):
            if ours and results.get((other, length)):
                line = f"portable / {other} at {length} tokens: {ours / results[other, length]:.2f}x (wall)"
                if device.type == "cpu":
                    line += f", {ours_cpu / cpu_results[other, length]:.2f}x (CPU time)"
                ratios.append(line)
    if len(lengths) > 1:
        for path in paths:
            if results.get((path, lengths[0])) and results.get((path, lengths[-1])):
                ratio = results[path, lengths[0]] / results[path, lengths[-1]]
                line = f"{path}: tokens/s at {lengths[0]} / at {lengths[-1]} = {ratio:.2f} (wall)"
                if device.type == "cpu":
                    line += f", {cpu_results[path, lengths[0]] / cpu_results[path, lengths[-1]]:.2f} (CPU time)"
                ratios.append(line)
    notes = [
        f"preset {args.preset}: {preset['config']}, expand 2, n_groups 1, chunk 256, batch {batch}, {preset['dtype']}",
        "training step = forward + backward + AdamW step; median of "
        f"{args.repeats} after {args.warmup} warm-up; peak memory "
        + ("max_memory_allocated" if device.type == "cuda" else "RSS sampled (estimate)"),
        f"portable path chunk length on this device: {ssd.default_chunk_size(device, config.chunk_size)}",
        "CPU s / step: the least process CPU time of one timed step (all threads; steadier than wall time on a "
        "shared machine)",
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}",
    ]
    headers = ["code path", "tokens", "tokens/s", "s / step", "CPU s / step", "peak GiB"]
    table = common.markdown_table(headers, rows)
    report = common.report_header("Mamba-2 training without kernels: portable SSD vs fallback", device, notes)
    lines = "\n".join(f"- {line}" for line in [*ratios, *checks])
    common.emit(report + "\n\n" + table + "\n\n" + lines, args.markdown_out)


if __name__ == "__main__":
    main()
