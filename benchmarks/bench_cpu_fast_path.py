"""Benchmark 5: Mamba on CPU with and without biomamba_hf's portable fast selective scan.

Measures, side by side in one run, on random-init models (no download):

1. one selective scan of the 130m layer shape (batch 1, intermediate 1536, state 16), forward, 512 tokens;
2. the same scan forward + backward at 1024 tokens;
3. 130m-shape ``MambaForCausalLM`` inference (hidden 768, 24 layers, state 16, expand 2, vocab 50280), batch 1,
   512 tokens, fp32, ``torch.no_grad()``, default ``use_cache`` (logits for every position); the same model with
   bf16 weights (every path in bf16); and ``MambaForQuestionAnswering`` of that shape in fp32 (what the QA pipeline
   runs: no vocabulary logits);
4. a training step (forward + backward + AdamW) of a tiny model, batch 1 x 1024 tokens.

each with transformers' default torch fallback (sequential scan), ``config.use_mambapy=True`` (mambapy's parallel
scan) and the fast path. Times are the minimum over ``--repeats`` runs (``--reference-repeats`` for the slow
fallback) after a warm-up on a short input (the machine may be shared).

    python benchmarks/bench_cpu_fast_path.py [--repeats 3] [--reference-repeats 1] [--threads 2] [--skip-130m]
    python benchmarks/bench_cpu_fast_path.py --threads 1 --profile     # where the fast path's time goes
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

import biomamba_hf.ops as ops

PATHS = ("reference", "mambapy", "fast")


def set_path(model, path: str) -> None:
    """Select one scan implementation for every mixer of ``model`` (or globally when ``model`` is None)."""
    if path == "fast":
        if not ops.enable_fast_scan():
            raise RuntimeError("the fast scan could not be enabled (is BIOMAMBA_FAST_SCAN=0 set?)")
    else:
        ops.disable_fast_scan()
    if model is not None:
        for module in model.modules():
            if hasattr(module, "use_mambapy"):
                module.use_mambapy = path == "mambapy"


def best_time(fn, repeats: int, warmup) -> float:
    warmup()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def scan_inputs(length: int, requires_grad: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    batch, dim, state = 1, 1536, 16
    inputs = {
        "hidden_states": torch.randn(batch, dim, length, generator=gen),
        "dt": torch.randn(batch, dim, length, generator=gen) * 0.5 - 2.0,
        "A": -torch.arange(1, state + 1, dtype=torch.float32).expand(dim, state).contiguous(),
        "B": torch.randn(batch, state, length, generator=gen),
        "C": torch.randn(batch, state, length, generator=gen),
        "D": torch.ones(dim),
        "z": torch.randn(batch, dim, length, generator=gen),
        "delta_bias": torch.randn(dim, generator=gen) * 0.1,
    }
    return {k: v.requires_grad_(requires_grad) for k, v in inputs.items()}


def bench_scan(path: str, length: int, backward: bool, repeats: int) -> float:
    from transformers.models.mamba import modeling_mamba

    set_path(None, "fast" if path == "fast" else "reference")
    scan = modeling_mamba.mamba_selective_scan  # the dispatcher when fast, transformers' binding otherwise
    inputs, short = scan_inputs(length, backward), scan_inputs(64, backward)

    def step(tensors=inputs):
        out = scan(**tensors, delta_softplus=True, use_mambapy=path == "mambapy")
        if backward:
            out.sum().backward()

    with torch.set_grad_enabled(backward):
        return best_time(step, repeats, warmup=lambda: step(short))


def bench_inference(path: str, model, input_ids, repeats: int) -> float | str:
    """Best seconds of a forward, or the error a path raises (transformers' fallback fails in bf16 on some
    releases: a failure is a result too)."""
    set_path(model, path)
    with torch.no_grad():
        try:
            return best_time(lambda: model(input_ids), repeats, warmup=lambda: model(input_ids[:, :32]))
        except RuntimeError as error:
            return f"fails ({str(error).splitlines()[0][:70]})"


def bench_training(path: str, config, input_ids, repeats: int) -> float:
    from transformers import MambaForCausalLM

    torch.manual_seed(0)
    model = MambaForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    set_path(model, path)

    def step(ids=input_ids):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return best_time(step, repeats, warmup=lambda: step(input_ids[:, :64]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the fast and mambapy paths")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="timed runs of transformers' (slow) sequential fallback"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-130m", action="store_true", help="skip the 130m-shape model inference row")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile the fast path's 130m causal-LM forward (where the time goes) and time fp32/bf16 matmuls",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import MambaConfig, MambaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.profile:
        profile_fast_path()
        return
    rows = []

    def reps(path):
        return args.reference_repeats if path == "reference" else args.repeats

    def add(name, timings):
        rows.append((name, timings))
        print(f"  {name}: " + ", ".join(f"{p} {_seconds(t)}" for p, t in timings.items()), flush=True)

    add(
        "selective scan, 130m layer shape (1 x 1536 x 16), forward, 512 tokens",
        {p: bench_scan(p, 512, False, reps(p)) for p in PATHS},
    )
    add(
        "selective scan, 130m layer shape (1 x 1536 x 16), forward + backward, 1024 tokens",
        {p: bench_scan(p, 1024, True, reps(p)) for p in PATHS},
    )
    if not args.skip_130m:
        from biomamba_hf import MambaForQuestionAnswering

        config = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2)
        input_ids = torch.randint(0, config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
        for name, model_class, dtype in (
            ("MambaForCausalLM inference, batch 1 x 512 tokens (all logits)", MambaForCausalLM, torch.float32),
            ("MambaForCausalLM inference, bf16 weights, batch 1 x 512 tokens", MambaForCausalLM, torch.bfloat16),
            ("MambaForQuestionAnswering inference, batch 1 x 512 tokens", MambaForQuestionAnswering, torch.float32),
        ):
            torch.manual_seed(0)
            model = model_class(config).eval().to(dtype)
            add(f"130m-shape {name}", {p: bench_inference(p, model, input_ids, reps(p)) for p in PATHS})
            del model
    tiny = MambaConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=4, state_size=16, expand=2)
    input_ids = torch.randint(0, tiny.vocab_size, (1, 1024), generator=torch.Generator().manual_seed(0))
    add(
        "tiny MambaForCausalLM training step (hidden 64, 4 layers, state 16, vocab 1024), batch 1 x 1024 tokens",
        {p: bench_training(p, tiny, input_ids, reps(p)) for p in PATHS},
    )
    ops.enable_fast_scan()

    print()
    print(
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; transformers {__import__('transformers').__version__}; "
        f"{datetime.date.today().isoformat()}; min of {args.repeats} runs "
        f"({args.reference_repeats} for the fallback) after a short warm-up"
    )
    print()
    print("| workload | transformers fallback | use_mambapy=True | fast path | vs fallback | vs mambapy |")
    print("|---|---|---|---|---|---|")
    for name, t in rows:
        print(
            f"| {name} | {_seconds(t['reference'])} | {_seconds(t['mambapy'])} | {_seconds(t['fast'])} "
            f"| {_ratio(t['reference'], t['fast'])} | {_ratio(t['mambapy'], t['fast'])} |"
        )


def profile_fast_path() -> None:
    """Where the fast path's 130m causal-LM forward spends its time, and what a dense product costs per dtype."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2)
    model = MambaForCausalLM(config).eval()
    input_ids = torch.randint(0, config.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
    set_path(model, "fast")
    with torch.no_grad():
        model(input_ids)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(input_ids)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"fast path, 130m MambaForCausalLM forward, 1 x 512 tokens: {total / 1e6:.3f} s of self CPU time")
    print("| op | self CPU s | share |\n|---|---|---|")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]:
        print(f"| {event.key} | {event.self_cpu_time_total / 1e6:.3f} | {event.self_cpu_time_total / total:.0%} |")
    a, w = torch.randn(512, 768), torch.randn(3072, 768)
    flop = 2 * 512 * 768 * 3072
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), w.to(dtype)
        seconds = best_time(lambda x=x, y=y: x @ y.t(), 10, warmup=lambda x=x, y=y: x @ y.t())
        print(f"512 x 768 x 3072 product in {dtype}: {flop / seconds / 1e9:.0f} GFLOP/s")


def _seconds(value: float | str) -> str:
    return f"{value:.3f} s" if isinstance(value, float) else value


def _ratio(slow: float | str, fast: float | str) -> str:
    return f"{slow / fast:.1f}x" if isinstance(slow, float) and isinstance(fast, float) else "n/a"


if __name__ == "__main__":
    main()
