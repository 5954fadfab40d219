#!/usr/bin/env python
"""Table 1: continued-pretraining throughput -- our recipe vs stock ``MambaForCausalLM`` + ``Trainer`` defaults vs
GPT-2 124M, at 2048 context (tokens/s, MFU, peak memory); with ``torchrun --nproc_per_node 2``: DDP scaling.

How it is timed. Every row runs optimizer steps in a loop that does what ``Trainer.training_step`` does for one
micro-batch per step (autocast forward with ``labels``, backward, gradient clipping to 1.0, fused AdamW step,
``zero_grad(set_to_none=True)``) on random token blocks that already sit on the device (data loading is off the
critical path, as with ``Trainer``'s pinned-memory loader). Two more rows run the stock and recipe settings through
``Trainer.train`` itself, timed by a callback between step ends, to show the loop measures what ``Trainer`` gets.
The first ``--warmup`` steps are not timed. MFU = 6 x parameters x tokens/s / bf16 peak (989e12 on H100 SXM and
H200), attention FLOPs not counted.

Rows (all at ``--seq_len``):
  stock         MambaForCausalLM, ``TrainingArguments`` defaults: float32, no autocast, batch 8, fused AdamW
  +bf16         the same with bf16 autocast (``--bf16``)
  +chunked CE   and biomamba_hf.speed's chunked linear cross-entropy (no 2048 x 50k float32 logits)
  recipe        bf16 autocast + chunked CE + micro-batch 16 (the recipe's per-device batch)
  recipe+compile, recipe bf16 weights (no autocast, bf16 parameters and optimizer state), recipe+liger (if installed)
  recipe+liger+compile  liger-kernel's fused linear CE and ``torch.compile`` of the norms together
  GPT-2         124M, sdpa, bf16 autocast, batch 8; and with the chunked CE at batch 16; and with liger-kernel's fused
                linear CE at batch 16 (the peer of recipe+liger; compile of the norms applies to Mamba blocks only)

    python benchmarks/bench_training_throughput.py                                   # GPU, 130m shapes
    python benchmarks/bench_training_throughput.py --device cpu --size small --seq_len 256 --micro_batch 2
    torchrun --nproc_per_node 2 benchmarks/bench_training_throughput.py --ddp_only   # DDP scaling
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    parser.add_argument("--size", default="130m", choices=sorted(common.MAMBA_SIZES), help=common.SIZE_HELP)
    parser.add_argument("--seq_len", type=int, default=2048)
    parser.add_argument("--micro_batch", type=int, default=8, help="stock per-device batch (Trainer default 8)")
    parser.add_argument("--recipe_micro_batch", type=int, default=16, help="per-device batch of the recipe rows")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per row")
    parser.add_argument("--chunk_size", type=int, default=2048, help="tokens per chunk of the chunked CE")
    parser.add_argument(
        "--rows",
        default="all",
        help="comma-separated subset of: stock,bf16,chunked,recipe,compile,bf16_weights,liger,liger_compile,gpt2,"
        "gpt2_chunked,gpt2_liger,trainer (default all)",
    )
    parser.add_argument("--ddp_only", action="store_true", help="under torchrun: only the DDP scaling table")
    args = parser.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    return args


# ----------------------------------------------------------------------------------------------------------------------


def _optimizer(model):
    params = [p for p in model.parameters() if p.requires_grad]
    return params, torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)


def training_loss(model, batch, chunked: str | None, chunk_size: int):
    """The loss of a training step: the model's own, or biomamba_hf.speed's chunked one (implementation ``chunked``);
    ``model`` may be a DistributedDataParallel wrapper, which then runs the forward."""
    if not chunked:
        return model(**batch).loss
    from biomamba_hf.speed import causal_lm_loss

    inner = getattr(model, "module", model)
    return causal_lm_loss(inner, batch, wrapped=model, chunk_size=chunk_size, implementation=chunked)


def time_loop(
    model,
    device,
    micro_batch,
    seq_len,
    steps,
    warmup,
    autocast: bool,
    vocab_size: int,
    seed=0,
    chunked=None,
    chunk_size=1024,
):
    """Tokens/s of ``steps`` optimizer steps after ``warmup`` ones; returns (tokens_per_s, peak_bytes)."""
    generator = torch.Generator().manual_seed(seed)
    batches = [torch.randint(2, vocab_size, (micro_batch, seq_len), generator=generator).to(device) for _ in range(2)]
    params, optimizer = _optimizer(model)
    model.train()

    def step(i):
        ids = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = training_loss(model, {"input_ids": ids, "labels": ids}, chunked, chunk_size)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with common.PeakMemory(device) as memory:
        for i in range(warmup):
            step(i)
        common.synchronize(device)
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        common.synchronize(device)
        seconds = time.perf_counter() - start
    peak = memory.peak + (memory._base if device.type == "cuda" else 0) if memory.peak is not None else None
    return steps * micro_batch * seq_len / seconds, peak


class _StepTimer:
    """A ``TrainerCallback`` recording the time of every step end (after a device synchronisation)."""

    def __init__(self, device):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                common.synchronize(device)
                timer.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = Callback()


def time_trainer(
    model, device, micro_batch, seq_len, steps, warmup, bf16: bool, vocab_size: int, chunked=None, chunk_size=1024
):
    """Tokens/s of ``Trainer.train`` (``CausalLMTrainer`` with ``--loss_chunk_size`` for a chunked row) between the
    end of step ``warmup`` and the last step."""
    from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments

    class Trainer(CausalLMTrainer):
        loss_implementation = chunked or "auto"

    generator = torch.Generator().manual_seed(0)
    rows = [
        {"input_ids": ids, "labels": ids} for ids in torch.randint(2, vocab_size, (64, seq_len), generator=generator)
    ]
    timer = _StepTimer(device)
    with tempfile.TemporaryDirectory() as output_dir, common.PeakMemory(device) as memory:
        args = CLMTrainingArguments(
            output_dir=output_dir,
            loss_chunk_size=chunk_size if chunked else 0,
            per_device_train_batch_size=micro_batch,
            max_steps=warmup + steps,
            bf16=bf16,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=device.type == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer.callback]).train()
    seconds = timer.ends[-1] - timer.ends[warmup - 1]
    peak = memory.peak + (memory._base if device.type == "cuda" else 0) if memory.peak is not None else None
    return steps * micro_batch * seq_len / seconds, peak


# ----------------------------------------------------------------------------------------------------------------------


def row_specs(args):
    b, rb = args.micro_batch, args.recipe_micro_batch
    gpt2 = "GPT-2 124M" if args.size == "130m" else f"GPT-2 ({args.size})"
    # name -> (label, family, micro batch, autocast, chunked CE implementation or None, extra, timing)
    return {
        "stock": ("Mamba stock: Trainer defaults (fp32, no autocast)", "mamba", b, False, None, None, "loop"),
        "bf16": ("Mamba + bf16 autocast", "mamba", b, True, None, None, "loop"),
        "chunked": ("Mamba + bf16 autocast + chunked CE", "mamba", b, True, "torch", None, "loop"),
        "recipe": (
            f"**Mamba recipe**: bf16 autocast + chunked CE, batch {rb}",
            "mamba",
            rb,
            True,
            "torch",
            None,
            "loop",
        ),
        "compile": ("recipe + torch.compile of the norms", "mamba", rb, True, "torch", "compile", "loop"),
        "bf16_weights": (
            "recipe with bf16 weights (no autocast)",
            "mamba",
            rb,
            False,
            "torch",
            "bf16_weights",
            "loop",
        ),
        "liger": ("recipe with liger-kernel fused linear CE", "mamba", rb, True, "liger", None, "loop"),
        "liger_compile": (
            "recipe with liger-kernel fused linear CE + torch.compile of the norms",
            "mamba",
            rb,
            True,
            "liger",
            "compile",
            "loop",
        ),
        "gpt2": (f"{gpt2} sdpa, bf16 autocast", "gpt2", b, True, None, None, "loop"),
        "gpt2_chunked": (f"{gpt2} + chunked CE, batch {rb}", "gpt2", rb, True, "torch", None, "loop"),
        "gpt2_liger": (f"{gpt2} + liger-kernel fused linear CE, batch {rb}", "gpt2", rb, True, "liger", None, "loop"),
        "trainer_stock": ("Mamba stock, via Trainer.train", "mamba", b, False, None, None, "trainer"),
        "trainer_recipe": ("Mamba recipe, via Trainer.train", "mamba", rb, True, "torch", None, "trainer"),
        "trainer_liger_compile": (
            "recipe with liger-kernel + compiled norms, via Trainer.train",
            "mamba",
            rb,
            True,
            "liger",
            "compile",
            "trainer",
        ),
    }


def build_model(family, args, device, extra):
    from transformers import GPT2LMHeadModel, MambaForCausalLM

    from biomamba_hf.speed import compile_non_scan_parts

    if family == "mamba":
        model = common.build(MambaForCausalLM, common.mamba_config(args.size), device)
    else:
        config = common.gpt2_config(args.size, n_positions=max(1024, args.seq_len))
        model = common.build(GPT2LMHeadModel, config, device)
    if extra == "bf16_weights":
        model = model.to(torch.bfloat16)
    if extra == "compile":
        compile_non_scan_parts(model)
    return model


def single_device_table(args, device, code_path) -> str:
    from biomamba_hf.speed import liger_available

    specs = row_specs(args)
    wanted = list(specs) if args.rows == "all" else []
    if args.rows != "all":
        for name in args.rows.split(","):
            name = name.strip()
            if name == "trainer":
                wanted += ["trainer_stock", "trainer_recipe", "trainer_liger_compile"]
            elif name in specs:
                wanted.append(name)
            else:
                raise SystemExit(f"--rows: unknown row {name!r}; choose from {', '.join(specs)}, trainer")
    peak_flops = common.bf16_peak_flops(device)
    rows, stock_tps = [], None
    for name in wanted:
        label, family, micro_batch, autocast, chunked, extra, timing = specs[name]
        if chunked == "liger" and not (device.type == "cuda" and liger_available()):
            rows.append([label, micro_batch, "skipped: liger-kernel needs CUDA + Triton", "", "", "", ""])
            continue
        common.free_memory(device)
        try:
            model = build_model(family, args, device, extra)
            params = common.count_parameters(model)
            vocab = model.config.vocab_size
            timer = time_trainer if timing == "trainer" else time_loop
            tps, peak = timer(
                model,
                device,
                micro_batch,
                args.seq_len,
                args.steps,
                args.warmup,
                autocast,
                vocab,
                chunked=chunked,
                chunk_size=args.chunk_size,
            )
        except Exception as error:  # an OOM or a failing compile is a result too
            reason = "OOM" if common.is_oom(error) else f"failed: {type(error).__name__}: {str(error)[:80]}"
            rows.append([label, micro_batch, reason, "", "", "", ""])
            model = None
            continue
        finally:
            model = None
            common.free_memory(device)
        if name == "stock":
            stock_tps = tps
        utilisation = common.mfu(params, tps, peak_flops)
        rows.append(
            [
                label,
                micro_batch,
                f"{tps:,.0f}",
                f"{utilisation:.1%}" if utilisation is not None else "n/a",
                common.gib(peak),
                f"{tps / stock_tps:.2f}x" if stock_tps else "",
                f"{params / 1e6:.1f}M",
            ]
        )
        print(f"  measured: {rows[-1]}", file=sys.stderr, flush=True)
    notes = [
        f"Mamba code path: {code_path}",
        f"shape {args.size}, context {args.seq_len}, {args.steps} timed optimizer steps after {args.warmup} warm-up "
        "steps, one micro-batch per step; timing: a loop mirroring Trainer.training_step, except the rows marked "
        "'via Trainer.train' (callback between step ends)",
        "MFU = 6 x parameters x tokens/s / bf16 peak"
        + (f" ({peak_flops:.3g} FLOP/s)" if peak_flops else " (n/a: no GPU peak known)"),
        "peak memory: " + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "sampled RSS increase"),
    ]
    header = common.report_header("Table 1: continued-pretraining throughput", device, notes)
    table = common.markdown_table(
        ["run", "micro-batch", "tokens/s", "MFU", "peak memory (GiB)", "vs stock", "params"], rows
    )
    return header + "\n\n" + table


# ----------------------------------------------------------------------------------------------------------------------


def ddp_table(args, code_path) -> str | None:
    """Recipe throughput on rank 0 alone, then on all ranks with DDP, in one torchrun run."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = args.device == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    rb = args.recipe_micro_batch
    results = {}
    if rank == 0:
        model = build_model("mamba", args, device, None)
        results[1], _ = time_loop(
            model,
            device,
            rb,
            args.seq_len,
            args.steps,
            args.warmup,
            True,
            model.config.vocab_size,
            chunked="torch",
            chunk_size=args.chunk_size,
        )
        model = None
        common.free_memory(device)
    dist.barrier()
    model = build_model("mamba", args, device, None)
    params = common.count_parameters(model)
    vocab = model.config.vocab_size
    ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    ddp_model.config = model.config
    per_rank, peak = time_loop(
        ddp_model,
        device,
        rb,
        args.seq_len,
        args.steps,
        args.warmup,
        True,
        vocab,
        seed=rank,
        chunked="torch",
        chunk_size=args.chunk_size,
    )
    slowest = torch.tensor([rb * args.seq_len * args.steps / per_rank], device=device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    results[world] = world * rb * args.seq_len * args.steps / slowest.item()
    dist.destroy_process_group()
    if rank != 0:
        return None
    peak_flops = common.bf16_peak_flops(device)
    rows = []
    for gpus, tps in sorted(results.items()):
        utilisation = common.mfu(params, tps / gpus, peak_flops)
        rows.append(
            [
                gpus,
                "single process" if gpus == 1 else f"DDP ({'NCCL' if cuda else 'gloo'})",
                f"{tps:,.0f}",
                f"{tps / gpus:,.0f}",
                f"{utilisation:.1%}" if utilisation is not None else "n/a",
                f"{tps / (gpus * results[1]):.0%}",
            ]
        )
    notes = [
        f"Mamba code path: {code_path}",
        f"recipe settings (bf16 autocast, chunked CE, micro-batch {rb} per device), shape {args.size}, context "
        f"{args.seq_len}, {args.steps} timed steps; both rows in one torchrun run (rank 0 alone first)",
        "scaling efficiency = tokens/s / (devices x single-device tokens/s)",
    ]
    header = common.report_header("Table 1b: DDP scaling", device, notes)
    table = common.markdown_table(
        ["devices", "mode", "tokens/s", "tokens/s per device", "MFU per device", "scaling efficiency"], rows
    )
    return header + "\n\n" + table


def main(argv=None):
    args = parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(args.device)
    code_path = common.kernel_status(device, args.allow_fallback)
    if distributed:
        report = ddp_table(args, code_path)
    else:
        if args.ddp_only:
            raise SystemExit("--ddp_only needs torchrun --nproc_per_node N (N >= 2).")
        report = single_device_table(args, device, code_path)
    if report is not None:
        common.emit(report, args.markdown_out)


if __name__ == "__main__":
    main()
