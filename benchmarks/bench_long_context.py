#!/usr/bin/env python
"""Table 2: long-context forward time and peak memory, 2k to 64k tokens and beyond where it fits: Mamba causal LM,
Mamba QA head (``MambaForQuestionAnswering``: no vocabulary logits), GPT-2 with sdpa attention.

One sequence per forward (batch 1), ``torch.inference_mode``, no recurrent cache, weights in ``--dtype``. Memory is
the forward's peak above the resident weights (``torch.cuda.max_memory_allocated``; sampled RSS on CPU). GPT-2 has
1024 learned positions: its position table is extended to the longest length measured (random weights, like the rest
of the model -- speed and memory do not depend on them), so the attention cost at long context is measured as is.
A model that runs out of memory at one length is not tried at longer ones. The three models stay resident and are
measured in turn at each length (a slow spell of a shared machine then affects a whole row, not one column).

    python benchmarks/bench_long_context.py                                    # GPU, 130m shapes, 2k..256k
    python benchmarks/bench_long_context.py --device cpu --size small --lengths 512,1024,2048,4096,8192
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = ("mamba_lm", "mamba_qa", "gpt2")
LABELS = {"mamba_lm": "Mamba causal LM", "mamba_qa": "Mamba QA head", "gpt2": "GPT-2 (sdpa)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    parser.set_defaults(repeats=3, warmup=1)
    parser.add_argument("--size", default="130m", choices=sorted(common.MAMBA_SIZES), help=common.SIZE_HELP)
    parser.add_argument("--lengths", default="2048,4096,8192,16384,32768,65536,131072,262144", help="comma-separated")
    parser.add_argument("--gpt2_max_len", type=int, default=65536, help="longest context tried for GPT-2 (time)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"], help="default: bf16 on GPU")
    args = parser.parse_args(argv)
    args.lengths = sorted(int(v) for v in args.lengths.split(","))
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return args


def build_model(name, args, device, dtype):
    from transformers import GPT2LMHeadModel, MambaForCausalLM

    from biomamba_hf import MambaForQuestionAnswering

    if name == "mamba_lm":
        return common.build(MambaForCausalLM, common.mamba_config(args.size), device, dtype).eval()
    if name == "mamba_qa":
        return common.build(MambaForQuestionAnswering, common.mamba_config(args.size), device, dtype).eval()
    longest = max(min(args.gpt2_max_len, max(args.lengths)), 1024)
    return common.build(GPT2LMHeadModel, common.gpt2_config(args.size, n_positions=longest), device, dtype).eval()


def measure(model, length, args, device, vocab_size):
    ids = torch.randint(2, vocab_size, (1, length), generator=torch.Generator().manual_seed(length)).to(device)

    def forward():
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False) if hasattr(model, "lm_head") else model(input_ids=ids)

    with common.PeakMemory(device) as memory:
        seconds = common.time_call(forward, device, args.repeats, args.warmup)
    return seconds, memory.peak


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    code_path = common.kernel_status(device, args.allow_fallback)
    results: dict[tuple[str, int], tuple[float, int | None] | str] = {}
    # All models stay resident and are measured in turn at each length, so a slow spell of a shared machine hits
    # all columns of a row alike; memory is measured above everything resident.
    models = {name: build_model(name, args, device, dtype) for name in MODELS}
    stopped: dict[str, str] = {}
    for length in args.lengths:
        for name, model in models.items():
            if name == "gpt2" and length > args.gpt2_max_len:
                results[name, length] = "not run (--gpt2_max_len)"
                continue
            if name in stopped:
                results[name, length] = stopped[name]
                continue
            try:
                results[name, length] = measure(model, length, args, device, model.config.vocab_size)
            except Exception as error:
                if not common.is_oom(error):
                    raise
                stopped[name] = results[name, length] = "OOM"
            finally:
                common.free_memory(device)
            print(f"  {name} {length}: {results[name, length]}", file=sys.stderr, flush=True)
    models = None
    common.free_memory(device)

    rows = []
    for length in args.lengths:
        row = [f"{length:,}"]
        for name in MODELS:
            value = results[name, length]
            if isinstance(value, str):
                row += [value, "", ""]
            else:
                seconds, peak = value
                row += [f"{seconds * 1e3:,.1f}", f"{length / seconds:,.0f}", common.gib(peak)]
        lm, qa = results["mamba_lm", length], results["mamba_qa", length]
        ratio = ""
        if not isinstance(lm, str) and not isinstance(qa, str) and lm[1] and qa[1] is not None:
            ratio = f"{qa[1] / lm[1]:.3f}"
        row.append(ratio)
        rows.append(row)

    scaling = []
    for name in MODELS:
        measured = [(n, results[name, n]) for n in args.lengths if not isinstance(results[name, n], str)]
        if len(measured) >= 2:
            (n0, (t0, m0)), (n1, (t1, m1)) = measured[0], measured[-1]
            growth = f"x{n1 / n0:.0f} tokens ({n0:,} -> {n1:,}): time x{t1 / t0:.1f}"
            if m0 and m1:
                growth += f", memory x{m1 / m0:.1f}"
            scaling.append(f"{LABELS[name]}: {growth}")
    notes = [
        f"Mamba code path: {code_path}",
        f"shape {args.size}, weights {args.dtype}, batch 1, median of {args.repeats} forwards after {args.warmup}",
        "memory: forward peak above the weights, "
        + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "sampled RSS increase (estimate)"),
        f"GPT-2 position table extended to {max(min(args.gpt2_max_len, max(args.lengths)), 1024):,} positions "
        "(random weights)",
        "linear scaling means time and memory grow like the token count: " + "; ".join(scaling),
    ]
    header = common.report_header("Table 2: long-context forward", device, notes)
    headers = ["tokens"]
    for name in MODELS:
        headers += [f"{LABELS[name]} ms", "tokens/s", "GiB"]
    headers.append("QA / LM memory")
    common.emit(header + "\n\n" + common.markdown_table(headers, rows), args.markdown_out)


if __name__ == "__main__":
    main()
