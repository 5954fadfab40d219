"""Shared pieces of the benchmark scripts: machine description, timing, peak memory, MFU, model shapes, tables.

Every benchmark prints one markdown table measured in one run, preceded by the machine, the date and the exact
command, and can append the same block to a file (``--markdown_out``) so that ``benchmarks/results/*.md`` hold what
was printed. Models are randomly initialised (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

#: Dense bf16 tensor-core peak (FLOP/s) by GPU name fragment, for MFU. H100 SXM and H200 share the H100 die.
BF16_PEAK_FLOPS = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
}
GIB = 1024**3


# ----------------------------------------------------------------------------------------------------------------------
# machine, command and output


def bf16_peak_flops(device: torch.device) -> float | None:
    """The bf16 peak of ``device``'s GPU, or ``None`` (CPU, unknown GPU) -- MFU is then not reported."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, flops in BF16_PEAK_FLOPS.items():
        if fragment in name:
            return flops
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """One line: accelerator (or CPU) model, cores, torch / transformers versions, threads."""
    import transformers

    cpu = f"{_cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpus = torch.cuda.device_count()
        accel = f"{gpus} x {props.name} ({props.total_memory / GIB:.0f} GiB), CUDA {torch.version.cuda}; host {cpu}"
    else:
        accel = f"CPU only: {cpu}"
    return (
        f"{accel}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )


def command_line() -> str:
    """The command that ran this script, as it could be typed again (torchrun's rank env is not repeated)."""
    launcher = [Path(sys.executable).name]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])}"]
    return " ".join(shlex.quote(a) for a in [*launcher, *sys.argv])


def report_header(title: str, device: torch.device, notes: Sequence[str] = ()) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title}", "", f"- machine: {machine_description(device)}", f"- date: {date}"]
    lines.append(f"- command: `{command_line()}`")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(out)


def emit(text: str, markdown_out: str | None) -> None:
    """Print ``text`` and append it to ``markdown_out`` (when given)."""
    print(text, flush=True)
    if markdown_out:
        path = Path(markdown_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text.rstrip() + "\n\n")


def choices(parser: argparse.ArgumentParser, name: str, value: str, allowed) -> list[str]:
    """The comma-separated ``value`` of option ``name`` as a list, every item among ``allowed`` (else a parser
    error naming the unknown ones and the choices)."""
    values = value.split(",")
    unknown = [item for item in values if item not in allowed]
    if unknown:
        parser.error(f"{name}: unknown {unknown}; choose from {', '.join(allowed)}")
    return values


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--markdown_out", default=None, help="also append the printed report to this file")
    parser.add_argument(
        "--allow_fallback",
        action="store_true",
        help="on a GPU, run even when mamba-ssm/causal-conv1d kernels are missing (normally an error)",
    )


def data_dir_from(value: str | None) -> Path | None:
    """``--data_dir`` or the environment variable ``BIOMAMBA_DATA_DIR``; ``None`` when neither is set."""
    value = value or os.environ.get("BIOMAMBA_DATA_DIR")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise ValueError(f"--data_dir / BIOMAMBA_DATA_DIR {value} is not a directory: pass the shared data folder.")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Mamba code path


def kernel_status(device: torch.device, allow_fallback: bool = False) -> str:
    """Import the CUDA kernels on a GPU (refusing to time transformers' slow fallback by accident) and describe the
    selective-scan path in use. On CPU the package's portable fast scan is switched on."""
    from biomamba_hf import ops

    if device.type == "cuda":
        try:
            import causal_conv1d_cuda  # noqa: F401
            import selective_scan_cuda  # noqa: F401
        except ImportError as error:
            if not allow_fallback:
                raise SystemExit(
                    f"mamba-ssm / causal-conv1d CUDA kernels cannot be imported ({error}): build them first "
                    "(see scripts/gpu_bench.sh) or pass --allow_fallback to time the fallback knowingly."
                ) from error
    ops.enable_fast_scan()
    return ops.mamba_code_path(device)


# ----------------------------------------------------------------------------------------------------------------------
# timing and memory


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class PeakMemory:
    """Peak memory of a ``with`` block above what was in use when it began, in bytes (``.peak``).

    CUDA: ``torch.cuda.max_memory_allocated`` (exact). CPU: resident set size sampled every 10 ms from
    ``/proc/self/statm`` (Linux; ``None`` elsewhere) -- an estimate that can miss very short peaks.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak: int | None = None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            self._max = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            if self._base is not None:
                self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            value = _rss_bytes()
            if value is not None and value > self._max:
                self._max = value
            time.sleep(0.01)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes() or 0) - self._base
        return False


def gib(num_bytes: int | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / GIB:.2f}"


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# ----------------------------------------------------------------------------------------------------------------------
# models and FLOPs


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters counted once (tied input/output embeddings are one matrix)."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def mfu(num_params: int, tokens_per_second: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation of training: 6 x parameters x tokens/s / bf16 peak (no attention FLOPs)."""
    if not peak_flops:
        return None
    return 6 * num_params * tokens_per_second / peak_flops


#: Shape presets: the issue's sizes (``full``) and CPU-sized stand-ins that keep the vocabulary (it sets the cost
#: of the LM head) but shrink the body.
MAMBA_SIZES = {
    "130m": {"hidden_size": 768, "num_hidden_layers": 24},
    "small": {"hidden_size": 256, "num_hidden_layers": 4},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2},
}
GPT2_SIZES = {
    "130m": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "small": {"n_embd": 256, "n_layer": 4, "n_head": 4},
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2},
}
BERT_SIZES = {
    "130m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256},
}
SIZE_HELP = "130m = Mamba-130m / GPT-2 124M / BERT-base shapes; small and tiny shrink the body, keep the vocabulary"


def mamba_config(size: str = "130m", vocab_size: int = 50280, **overrides):
    """Mamba-130m's shape (hidden 768, 24 layers, vocab 50280, state 16, expand 2) or a smaller body."""
    from transformers import MambaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        state_size=16,
        expand=2,
        conv_kernel=4,
        residual_in_fp32=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    kwargs.update(MAMBA_SIZES[size])
    kwargs.update(overrides)
    return MambaConfig(**kwargs)


def mamba2_config(size: str = "130m", vocab_size: int = 50288, **overrides):
    """Mamba2-130m's shape (hidden 768, 24 layers, heads of 64 channels, state 128, expand 2, one group, chunks of
    256, vocab 50288) or a smaller body with the same head size."""
    from transformers import Mamba2Config

    body = MAMBA_SIZES[size]
    kwargs = dict(
        vocab_size=vocab_size,
        state_size=128,
        expand=2,
        head_dim=64,
        num_heads=2 * body["hidden_size"] // 64,
        n_groups=1,
        chunk_size=256,
        conv_kernel=4,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    kwargs.update(body)
    kwargs.update(overrides)
    return Mamba2Config(**kwargs)


def gpt2_config(size: str = "130m", n_positions: int = 1024, vocab_size: int = 50257, **overrides):
    """GPT-2 124M (12 layers, 768 hidden, 50257 vocab) with sdpa attention; ``n_positions`` may extend it."""
    from transformers import GPT2Config

    kwargs = dict(vocab_size=vocab_size, n_positions=n_positions, bos_token_id=0, eos_token_id=0, use_cache=False)
    kwargs.update(GPT2_SIZES[size])
    kwargs.update(overrides)
    config = GPT2Config(**kwargs)
    config._attn_implementation = "sdpa"
    return config


def bert_config(size: str = "130m", vocab_size: int = 28996, max_position_embeddings: int = 512, **overrides):
    """BERT-base (BioBERT's size: 12 layers, hidden 768, cased vocabulary of 28996) with sdpa attention."""
    from transformers import BertConfig

    kwargs = dict(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings)
    kwargs.update(BERT_SIZES[size])
    kwargs.update(overrides)
    config = BertConfig(**kwargs)
    config._attn_implementation = "sdpa"
    return config


def build(model_class, config, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    model = model_class(config)
    return model.to(device=device, dtype=dtype)
