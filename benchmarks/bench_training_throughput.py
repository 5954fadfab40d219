#!/usr/bin/env python
"""Table 1: continued-pretraining throughput -- our recipe vs stock ``MambaForCausalLM`` + ``Trainer`` defaults vs
GPT-2 124M, at 2048 context (tokens/s, MFU, peak memory); with ``torchrun --nproc_per_node 2``: DDP scaling.

How it is timed. Every row runs optimizer steps in a loop that does what ``Trainer.training_step`` does for one
micro-batch per step (autocast forward with ``labels``, backward, gradient clipping to 1.0, fused AdamW step,
``zero_grad(set_to_none=True)``) on random token blocks that already sit on the device (data loading is off the
critical path, as with ``Trainer``'s pinned-memory loader). The ``trainer_*`` rows run settings through
``Trainer.train`` itself (``CausalLMTrainer``), timed by a callback from the end of step ``--warmup`` to the end of the
last step (the device is synchronised at those two step ends only, as the loop synchronises only around its timed
steps), to show what ``Trainer`` costs over the loop. The first ``--warmup`` steps are not timed.
MFU = 6 x parameters x tokens/s / bf16 peak (989e12 on H100 SXM and H200), attention FLOPs not counted.

Rows (all at ``--seq_len``):
  stock         MambaForCausalLM, ``TrainingArguments`` defaults: float32, no autocast, batch 8, fused AdamW
  +bf16         the same with bf16 autocast (``--bf16``)
  +chunked CE   and biomamba_hf.speed's chunked linear cross-entropy (no 2048 x 50k float32 logits)
  recipe        bf16 autocast + chunked CE + micro-batch 16 (the recipe's per-device batch)
  recipe+compile, recipe bf16 weights (no autocast, bf16 parameters and optimizer state), recipe+liger (if installed)
  recipe+liger+compile  liger-kernel's fused linear CE and ``torch.compile`` of the norms together
  GPT-2         124M, sdpa, bf16 autocast, batch 8; and with the chunked CE at batch 16; and with liger-kernel's fused
                linear CE at batch 16 (the peer of recipe+liger; compile of the norms applies to Mamba blocks only)
  Mamba-2       Mamba2ForCausalLM (Mamba2-130m shapes), bf16 autocast, batch 8 (mamba2); with liger-kernel's fused
                linear CE at batch 16 (mamba2_liger, the peer of gpt2_liger); the same with bf16 weights and no
                autocast (mamba2_bf16_weights)
  Trainer       trainer_stock, trainer_recipe, trainer_liger_compile (shortcut ``trainer``): in-memory tensors, no
                callbacks. trainer_mamba2_liger, trainer_gpt2_liger, trainer_mamba_liger: liger-kernel, batch 16, as
                examples/run_clm.py runs them: CausalLMTrainer with loss_chunk_size, bf16, adamw_torch_fused,
                max_grad_norm 1.0, lr 6e-4, betas (0.9, 0.95), weight decay 0.1, a datasets.Dataset of token lists
                through default_data_collator, and run_clm's callbacks (ThroughputCallback + reliability_callbacks:
                CheckpointCompletionCallback, NonFiniteLossCallback); trainer_mamba2_liger_bare: the same without those
                callbacks; trainer_mamba2_liger_tensors: the same without callbacks, fed in-memory tensors
  decompose     shortcut: mamba2, mamba2_liger, mamba2_bf16_weights, gpt2, gpt2_liger, trainer_mamba2_liger_tensors,
                trainer_mamba2_liger_bare, trainer_mamba2_liger, trainer_gpt2_liger, trainer_mamba_liger, liger -- one
                run that puts the loop, Trainer, run_clm's data path and run_clm's callbacks side by side per model

``--loss_implementation torch`` replaces liger-kernel by biomamba_hf.speed's PyTorch chunked CE in every row (labels
and header say so): liger-kernel needs CUDA, so this makes the liger rows runnable as a CPU smoke test.

    python benchmarks/bench_training_throughput.py                                   # GPU, 130m shapes
    python benchmarks/bench_training_throughput.py --device cpu --size small --seq_len 256 --micro_batch 2
    python benchmarks/bench_training_throughput.py --rows decompose --steps 20                # where Trainer time goes
    python benchmarks/bench_training_throughput.py --device cpu --size tiny --seq_len 128 --micro_batch 2 \
        --recipe_micro_batch 2 --steps 2 --rows decompose --loss_implementation torch       # CPU smoke test
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

#: ``--rows decompose``: where the time between a bare loop and examples/run_clm.py goes, same levers per model.
DECOMPOSE = (
    "mamba2",
    "mamba2_liger",
    "mamba2_bf16_weights",
    "gpt2",
    "gpt2_liger",
    "trainer_mamba2_liger_tensors",
    "trainer_mamba2_liger_bare",
    "trainer_mamba2_liger",
    "trainer_gpt2_liger",
    "trainer_mamba_liger",
    "liger",
)
ROW_SHORTCUTS = {
    "trainer": ("trainer_stock", "trainer_recipe", "trainer_liger_compile"),
    "decompose": DECOMPOSE,
}
#: How a ``trainer*`` timing runs ``Trainer.train``: (data, callbacks, run_clm's optimisation arguments).
#: data: ``tensors`` = a list of dicts of token tensors; ``arrow`` = what run_clm trains on, a ``datasets.Dataset`` of
#: token lists collated by ``default_data_collator``. callbacks: ``run_clm`` = ThroughputCallback +
#: reliability_callbacks(), as examples/run_clm.py adds them; ``None`` = none but the timer.
TRAINER_MODES = {
    "trainer": ("tensors", None, False),
    "trainer_tensors": ("tensors", None, True),
    "run_clm_bare": ("arrow", None, True),
    "run_clm": ("arrow", "run_clm", True),
}


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
        "gpt2_chunked,gpt2_liger,mamba2,mamba2_liger,mamba2_bf16_weights,trainer_stock,trainer_recipe,"
        "trainer_liger_compile,trainer_mamba2_liger_tensors,trainer_mamba2_liger_bare,trainer_mamba2_liger,"
        "trainer_gpt2_liger,trainer_mamba_liger; shortcuts: trainer (= trainer_stock,trainer_recipe,"
        "trainer_liger_compile), decompose (= " + ",".join(DECOMPOSE) + ") (default all)",
    )
    parser.add_argument(
        "--loss_implementation",
        default="liger",
        choices=("liger", "torch"),
        help="fused linear CE of the liger rows: liger-kernel (needs CUDA + Triton; skipped otherwise) or torch = "
        "biomamba_hf.speed's PyTorch chunked CE in its place (for a CPU smoke test; labels and header say so)",
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
    """A ``TrainerCallback`` recording the time at the end of steps ``start`` and ``stop`` (optimizer steps counted
    from 1), each after a device synchronisation. Other step ends are not synchronised: a synchronisation at every
    step would add a stall the loop rows do not have and would hide one made by another callback."""

    def __init__(self, device, start: int, stop: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step in (start, stop):
                    common.synchronize(device)
                    timer.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = Callback()


def time_trainer(
    model,
    device,
    micro_batch,
    seq_len,
    steps,
    warmup,
    bf16: bool,
    vocab_size: int,
    chunked=None,
    chunk_size=1024,
    data: str = "tensors",
    callbacks: str | None = None,
    run_clm_optimizer: bool = False,
):
    """Tokens/s of ``Trainer.train`` (``CausalLMTrainer`` with ``--loss_chunk_size`` for a chunked row) between the
    end of step ``warmup`` and the last step.

    ``data``: ``"tensors"`` (a list of dicts of token tensors) or ``"arrow"`` (what examples/run_clm.py trains on: a
    ``datasets.Dataset`` of token lists, collated by ``default_data_collator``). ``callbacks``: ``None`` (only the
    timer) or ``"run_clm"`` (run_clm's: ``ThroughputCallback`` and ``reliability_callbacks()``, in its order).
    ``run_clm_optimizer``: set the recipe's optimisation arguments explicitly (adamw_torch_fused, max_grad_norm 1.0,
    lr 6e-4, betas (0.9, 0.95), weight decay 0.1) instead of ``TrainingArguments``' defaults. One epoch covers all
    the steps (no epoch boundary inside the timed steps) and nothing is logged or saved.
    """
    from transformers import default_data_collator

    from biomamba_hf.reliability import reliability_callbacks
    from biomamba_hf.trainer import CausalLMTrainer, CLMTrainingArguments, ThroughputCallback

    class Trainer(CausalLMTrainer):
        loss_implementation = chunked or "auto"

    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(2, vocab_size, (max(64, (warmup + steps) * micro_batch), seq_len), generator=generator)
    if data == "arrow":
        from datasets import Dataset

        token_lists = blocks.tolist()
        rows = Dataset.from_dict({"input_ids": token_lists, "labels": token_lists})
    elif data == "tensors":
        rows = [{"input_ids": ids, "labels": ids} for ids in blocks]
    else:
        raise ValueError(f"data={data!r}: use 'tensors' or 'arrow'")
    timer = _StepTimer(device, warmup, warmup + steps)
    extra_callbacks = []
    if callbacks == "run_clm":
        extra_callbacks = [ThroughputCallback(micro_batch * seq_len), *reliability_callbacks()]
    elif callbacks is not None:
        raise ValueError(f"callbacks={callbacks!r}: use None or 'run_clm'")
    optimisation = (
        dict(
            optim="adamw_torch_fused",
            max_grad_norm=1.0,
            learning_rate=6e-4,
            adam_beta1=0.9,
            adam_beta2=0.95,
            weight_decay=0.1,
        )
        if run_clm_optimizer
        else {}
    )
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
            **optimisation,
        )
        trainer_kwargs = {"data_collator": default_data_collator} if data == "arrow" else {}
        Trainer(
            model=model, args=args, train_dataset=rows, callbacks=[*extra_callbacks, timer.callback], **trainer_kwargs
        ).train()
    if len(timer.ends) != 2:
        raise RuntimeError(f"Trainer.train ended after {len(timer.ends)} of the 2 timed step ends")
    seconds = timer.ends[1] - timer.ends[0]
    peak = memory.peak + (memory._base if device.type == "cuda" else 0) if memory.peak is not None else None
    return steps * micro_batch * seq_len / seconds, peak


# ----------------------------------------------------------------------------------------------------------------------


def row_specs(args):
    b, rb = args.micro_batch, args.recipe_micro_batch
    gpt2 = "GPT-2 124M" if args.size == "130m" else f"GPT-2 ({args.size})"
    mamba2 = "Mamba-2 130m" if args.size == "130m" else f"Mamba-2 ({args.size})"
    # the fused linear CE of the liger rows: liger-kernel's, or (--loss_implementation torch) the PyTorch chunked CE
    fused = getattr(args, "loss_implementation", "liger")
    fused_ce = "liger-kernel fused linear CE" if fused == "liger" else "PyTorch chunked CE in place of liger"
    run_clm = "via Trainer.train as run_clm runs it (its arguments, data path, callbacks)"
    run_clm_bare = "via Trainer.train: run_clm's arguments and data path, no callbacks"
    # name -> (label, family, micro batch, autocast, chunked CE implementation or None, extra, timing); timing is
    # "loop" or a key of TRAINER_MODES
    specs = {
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
        "liger": (f"recipe with {fused_ce}", "mamba", rb, True, fused, None, "loop"),
        "liger_compile": (
            f"recipe with {fused_ce} + torch.compile of the norms",
            "mamba",
            rb,
            True,
            fused,
            "compile",
            "loop",
        ),
        "gpt2": (f"{gpt2} sdpa, bf16 autocast", "gpt2", b, True, None, None, "loop"),
        "gpt2_chunked": (f"{gpt2} + chunked CE, batch {rb}", "gpt2", rb, True, "torch", None, "loop"),
        "gpt2_liger": (f"{gpt2} + {fused_ce}, batch {rb}", "gpt2", rb, True, fused, None, "loop"),
        "mamba2": (f"{mamba2}, bf16 autocast", "mamba2", b, True, None, None, "loop"),
        "mamba2_liger": (f"{mamba2} + {fused_ce}, batch {rb}", "mamba2", rb, True, fused, None, "loop"),
        "mamba2_bf16_weights": (
            f"{mamba2} with bf16 weights (no autocast) + {fused_ce}, batch {rb}",
            "mamba2",
            rb,
            False,
            fused,
            "bf16_weights",
            "loop",
        ),
        "trainer_stock": ("Mamba stock, via Trainer.train", "mamba", b, False, None, None, "trainer"),
        "trainer_recipe": ("Mamba recipe, via Trainer.train", "mamba", rb, True, "torch", None, "trainer"),
        "trainer_liger_compile": (
            f"recipe with {fused_ce} + compiled norms, via Trainer.train",
            "mamba",
            rb,
            True,
            fused,
            "compile",
            "trainer",
        ),
        "trainer_mamba2_liger_tensors": (
            f"{mamba2} + {fused_ce}, batch {rb}, via Trainer.train: run_clm's arguments, in-memory tensors, "
            "no callbacks",
            "mamba2",
            rb,
            True,
            fused,
            None,
            "trainer_tensors",
        ),
        "trainer_mamba2_liger_bare": (
            f"{mamba2} + {fused_ce}, batch {rb}, {run_clm_bare}",
            "mamba2",
            rb,
            True,
            fused,
            None,
            "run_clm_bare",
        ),
        "trainer_mamba2_liger": (
            f"{mamba2} + {fused_ce}, batch {rb}, {run_clm}",
            "mamba2",
            rb,
            True,
            fused,
            None,
            "run_clm",
        ),
        "trainer_gpt2_liger": (
            f"{gpt2} + {fused_ce}, batch {rb}, {run_clm}",
            "gpt2",
            rb,
            True,
            fused,
            None,
            "run_clm",
        ),
        "trainer_mamba_liger": (
            f"Mamba + {fused_ce}, batch {rb} (no compile), {run_clm}",
            "mamba",
            rb,
            True,
            fused,
            None,
            "run_clm",
        ),
    }
    return specs


def build_model(family, args, device, extra):
    from transformers import GPT2LMHeadModel, Mamba2ForCausalLM, MambaForCausalLM

    from biomamba_hf.speed import compile_non_scan_parts

    if family == "mamba":
        model = common.build(MambaForCausalLM, common.mamba_config(args.size), device)
    elif family == "mamba2":
        model = common.build(Mamba2ForCausalLM, common.mamba2_config(args.size), device)
    elif family == "gpt2":
        config = common.gpt2_config(args.size, n_positions=max(1024, args.seq_len))
        model = common.build(GPT2LMHeadModel, config, device)
    else:
        raise ValueError(f"unknown model family {family!r}")
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
            if name in ROW_SHORTCUTS:
                wanted += [row for row in ROW_SHORTCUTS[name] if row in specs]
            elif name in specs:
                wanted.append(name)
            else:
                raise SystemExit(
                    f"--rows: unknown row {name!r}; choose from {', '.join(specs)}, {', '.join(ROW_SHORTCUTS)}"
                )
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
            if timing == "loop":
                timer, modes = time_loop, {}
            else:
                data, callbacks, run_clm_optimizer = TRAINER_MODES[timing]
                timer = time_trainer
                modes = dict(data=data, callbacks=callbacks, run_clm_optimizer=run_clm_optimizer)
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
                **modes,
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
    families = {specs[name][1] for name in wanted}
    notes = [f"Mamba code path: {code_path}"]
    if "mamba2" in families:
        from biomamba_hf.ops import mamba_code_path

        notes.append(f"Mamba-2 code path: {mamba_code_path(device, 'mamba2')}")
    if "gpt2" in families:
        notes.append("GPT-2 code path: transformers GPT2LMHeadModel, sdpa attention")
    if any(specs[name][6] in ("run_clm", "run_clm_bare", "trainer_tensors") for name in wanted):
        notes.append(
            "run_clm's arguments: CausalLMTrainer with loss_chunk_size, bf16, adamw_torch_fused, max_grad_norm 1.0, "
            "lr 6e-4, betas (0.9, 0.95), weight decay 0.1; its data path: a datasets.Dataset of token lists through "
            "default_data_collator (the other Trainer rows: a list of token tensors); its callbacks: "
            "ThroughputCallback + reliability_callbacks() (CheckpointCompletionCallback, NonFiniteLossCallback)"
        )
    if args.loss_implementation == "torch":
        notes.append(
            "--loss_implementation torch: every liger-kernel row ran biomamba_hf.speed's PyTorch chunked CE in its "
            "place (labels say so)"
        )
    notes += [
        f"shape {args.size}, context {args.seq_len}, {args.steps} timed optimizer steps after {args.warmup} warm-up "
        "steps, one micro-batch per step (no gradient accumulation); timing: a loop mirroring "
        "Trainer.training_step, except the rows marked 'via Trainer.train' or 'as run_clm runs it' (a callback "
        "synchronises the device at the end of the last warm-up step and of the last step only; nothing is logged "
        "or saved)",
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
