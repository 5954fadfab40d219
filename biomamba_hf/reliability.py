"""Training that survives kills and bad numbers: complete-checkpoint markers, NaN/inf stops, disk preflight,
safe (safetensors-only) loading. Details: docs/modules.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .bioasq.formats import read_json_object, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "COMPLETE_MARKER",
    "CheckpointCompletionCallback",
    "DiskFullError",
    "NonFiniteLossCallback",
    "NonFiniteLossError",
    "PICKLE_WEIGHT_SUFFIXES",
    "check_safetensors_file",
    "checkpoint_problem",
    "disk_full_errors",
    "expected_output_bytes",
    "from_pretrained_safely",
    "last_complete_checkpoint",
    "list_checkpoints",
    "mark_checkpoint_complete",
    "preflight",
    "reliability_callbacks",
    "remove_incomplete_checkpoints",
    "safe_loading_kwargs",
]

#: File written into a checkpoint folder once every other file of it is on disk.
COMPLETE_MARKER = "checkpoint_complete.json"
#: The last file ``Trainer._save_checkpoint`` writes into a checkpoint folder.
TRAINER_STATE_NAME = "trainer_state.json"
#: Weight files read with ``pickle`` (through ``torch.load``): loading one can execute code.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_MARKER_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """The training loss or its gradients became NaN or infinite; the message names the step and a checkpoint."""


# --------------------------------------------------------------------------------------------------------------------
# Complete checkpoints
# --------------------------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, oldest step first (none when it does not exist)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if _CHECKPOINT_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_CHECKPOINT_DIR.match(p.name).group(1)))


def _step_of(checkpoint: Path) -> int:
    return int(_CHECKPOINT_DIR.match(checkpoint.name).group(1))


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the files themselves were synced
        if not directory:
            raise
    finally:
        os.close(fd)


def mark_checkpoint_complete(checkpoint_dir: str | os.PathLike, global_step: int | None = None) -> Path:
    """Flush every file of ``checkpoint_dir`` to disk, then atomically write :data:`COMPLETE_MARKER` into it.

    The marker records the step and the size of every file, so :func:`checkpoint_problem` also notices a file that
    was truncated or removed afterwards. Returns the marker's path.
    """
    checkpoint_dir = Path(checkpoint_dir)
    step = _step_of(checkpoint_dir) if global_step is None else int(global_step)
    files = {}
    for path in sorted(p for p in checkpoint_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(checkpoint_dir).as_posix()
        if relative == COMPLETE_MARKER or path.name.startswith(f".{COMPLETE_MARKER}"):
            continue
        _fsync_path(path)
        files[relative] = path.stat().st_size
    for directory in sorted({p.parent for p in checkpoint_dir.rglob("*")} | {checkpoint_dir}):
        _fsync_path(directory, directory=True)
    marker = {"format": _MARKER_FORMAT, "global_step": step, "files": files, "time": time.time()}
    path = write_json(checkpoint_dir / COMPLETE_MARKER, marker, sort_keys=True, atomic=True)
    _fsync_path(checkpoint_dir, directory=True)
    return path


def checkpoint_problem(checkpoint_dir: str | os.PathLike, require_marker: bool = True) -> str | None:
    """Why ``checkpoint_dir`` is not a complete checkpoint, or ``None`` when it is.

    With ``require_marker`` (runs that use :class:`CheckpointCompletionCallback`) the folder needs a
    :data:`COMPLETE_MARKER` whose step matches the folder name and whose files are all present with their recorded
    sizes. Without it (runs that never wrote markers), ``trainer_state.json`` must parse and name the folder's step.
    """
    checkpoint_dir = Path(checkpoint_dir)
    match = _CHECKPOINT_DIR.match(checkpoint_dir.name)
    if match is None or not checkpoint_dir.is_dir():
        return f"{checkpoint_dir} is not a checkpoint-<step> folder"
    step = int(match.group(1))
    if not require_marker:
        state = read_json_object(checkpoint_dir / TRAINER_STATE_NAME)
        if state is None:
            return f"its {TRAINER_STATE_NAME} is missing or unreadable (the save was interrupted)"
        if state.get("global_step") != step:
            return f"its {TRAINER_STATE_NAME} is for step {state.get('global_step')!r}, not {step}"
        return None
    marker = read_json_object(checkpoint_dir / COMPLETE_MARKER)
    if marker is None:
        return f"it has no {COMPLETE_MARKER} (the save was interrupted before it finished)"
    if marker.get("global_step") != step or not isinstance(marker.get("files"), dict):
        return f"its {COMPLETE_MARKER} is for step {marker.get('global_step')!r}, not {step}"
    for name, size in marker["files"].items():
        path = checkpoint_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def _uses_markers(checkpoints: list[Path]) -> bool:
    return any((c / COMPLETE_MARKER).exists() for c in checkpoints)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder of ``output_dir`` (a path string), or ``None``.

    Use it instead of ``transformers.trainer_utils.get_last_checkpoint``, which returns the highest-numbered folder
    even when it was half-written. Incomplete folders are skipped with a logged warning; see
    :func:`checkpoint_problem` for what "complete" means.
    """
    checkpoints = list_checkpoints(output_dir)
    require_marker = _uses_markers(checkpoints)
    for checkpoint in reversed(checkpoints):
        problem = checkpoint_problem(checkpoint, require_marker=require_marker)
        if problem is None:
            return str(checkpoint)
        logger.warning("Skipping incomplete checkpoint %s: %s.", checkpoint, problem)
    return None


def remove_incomplete_checkpoints(output_dir: str | os.PathLike, after_step: int = -1) -> list[str]:
    """Delete the incomplete checkpoint folders of ``output_dir`` whose step is above ``after_step``; return them.

    A resumed run writes its next checkpoints into the same folder names, and a leftover file of an interrupted save
    must not end up inside a checkpoint that is then marked complete.
    """
    checkpoints = list_checkpoints(output_dir)
    require_marker = _uses_markers(checkpoints)
    removed = []
    for checkpoint in checkpoints:
        if _step_of(checkpoint) <= after_step:
            continue
        problem = checkpoint_problem(checkpoint, require_marker=require_marker)
        if problem is not None:
            logger.warning("Removing incomplete checkpoint %s: %s.", checkpoint, problem)
            shutil.rmtree(checkpoint)
            removed.append(str(checkpoint))
    return removed


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointCompletionCallback(TrainerCallback):
    """Marks each checkpoint complete once ``Trainer`` has saved all of it (see :func:`mark_checkpoint_complete`).

    At the start of training, incomplete checkpoint folders newer than the step training starts from are removed
    (:func:`remove_incomplete_checkpoints`), so that a resumed run rewrites them from scratch.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        if args.should_save:
            remove_incomplete_checkpoints(args.output_dir, after_step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every process has written its part (RNG state, shards) before the marker goes in
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and checkpoint.is_dir():
            mark_checkpoint_complete(checkpoint, state.global_step)
        _barrier()


class DiskFullError(OSError):
    """A save ran out of disk space; the message names the folder, the free space and the checkpoint to resume from."""


#: ``errno`` values of a full disk or an exhausted quota.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
#: How torch.save reports a failed write (its zip writer hides the OSError): "unexpected pos 154112 vs 154004".
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed writing")


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS:
        return True
    return isinstance(err, RuntimeError) and bool(_TORCH_WRITE_FAILURE.search(str(err)))


@contextlib.contextmanager
def disk_full_errors(folder: str | os.PathLike, what: str, root: str | os.PathLike | None = None):
    """Turn a full disk while saving ``what`` into ``folder`` into a :class:`DiskFullError` that says so, with the
    free space and the complete checkpoint of ``root`` (default ``folder``) that a rerun resumes from.

    Catches ``OSError`` ``ENOSPC``/``EDQUOT`` and torch.save's "unexpected pos ... vs ..." (its zip writer's
    report of the same failure).
    """
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as err:
        if not _is_disk_full(err):
            raise
        root = Path(root if root is not None else folder)
        existing = _existing_ancestor(Path(folder))
        try:
            free = format_bytes(shutil.disk_usage(existing).free)
        except OSError:
            free = "unknown"
        checkpoint = last_complete_checkpoint(root)
        resume = (
            f"Rerunning the same command resumes from {checkpoint}, the last complete checkpoint"
            if checkpoint
            else f"There is no complete checkpoint in {root} yet: a rerun starts over"
        )
        raise DiskFullError(
            errno.ENOSPC,
            f"The disk is full: saving {what} into {folder} failed ({free} free on the disk of {existing}; {err}). "
            f"{resume} (an incomplete checkpoint is never resumed) once space is freed, or pass --save_total_limit "
            "2 / --save_only_model to keep less.",
        ) from err


# --------------------------------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------------------------------


def _output_loss(output: Any):
    import torch

    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


def _non_finite_flag(losses: list, grads: list):
    """A one-element int32 tensor on the device of the first loss (or gradient): 1 when any of ``losses`` or
    ``grads`` holds a NaN or an infinity, else 0. Nothing is read back to the host.

    Each group of gradients of one device and dtype goes through one ``torch._foreach_norm(..., inf)`` (a fused
    multi-tensor kernel on CUDA): the max-abs norm is NaN or infinite exactly when the tensor holds a NaN or an
    infinity (the maximum propagates NaN, and unlike a sum of squares it cannot overflow on finite values), so the
    cost no longer grows with the number of parameters (it was two kernel launches per gradient). Empty gradients
    hold nothing to check (and have no inf norm).
    """
    import torch

    device = (losses or grads)[0].device
    values = [loss.to(device).reshape(-1) for loss in losses]
    groups: dict = {}
    for grad in grads:
        if grad.numel():
            groups.setdefault((grad.device, grad.dtype), []).append(grad)
    values += [torch.stack(torch._foreach_norm(tensors, math.inf)).to(device) for tensors in groups.values()]
    if not values:
        return torch.zeros(1, dtype=torch.int32, device=device)
    # cat promotes to the widest dtype (a finite float64 or bfloat16 value stays finite), then one isfinite
    return (~torch.isfinite(torch.cat(values)).all()).to(torch.int32).reshape(1)


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first NaN or infinite loss or gradient, before the optimizer applies it.

    A forward hook records the loss of every training micro-batch (no device synchronisation); before each optimizer
    step the recorded losses and the gradients are checked in one synchronisation, reduced over all processes so
    that every process stops together. Gradients are not checked with ``fp16`` (the loss scaler skips steps whose
    scaled gradients overflowed, by design); losses always are. A NaN in the logged ``loss`` also stops training.

    Per optimizer step the check costs a fixed handful of device operations whatever the number of parameters (one
    multi-tensor max-abs reduction per device and dtype of the gradients, see :func:`_non_finite_flag`) and one
    host synchronisation (reading the flag): it must be read before ``optimizer.step()``, or the bad update would
    be applied and could be saved.

    Raises:
        NonFiniteLossError: naming the step, the offending values and the last complete checkpoint to resume from.
    """

    def __init__(self):
        self._losses: list = []
        self._hook = None

    def _record(self, module, inputs, output):
        if module.training:
            loss = _output_loss(output)
            if loss is not None:
                self._losses.append(loss.detach().float().reshape(-1)[:1])

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._losses = []
        if self._hook is not None:
            self._hook.remove()
        self._hook = model.register_forward_hook(self._record) if model is not None else None

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch.distributed as dist

        losses, self._losses = self._losses, []
        grads = [] if args.fp16 or model is None else [p.grad for p in model.parameters() if p.grad is not None]
        if not losses and not grads:
            return
        bad = _non_finite_flag(losses, grads)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            values = [float(loss.item()) for loss in losses]
            if any(not math.isfinite(v) for v in values):
                what = f"the training loss is {', '.join(map(str, values))} (one value per micro-batch)"
            else:
                what = "the gradients hold NaN or infinite values"
                if values:
                    what += f" (losses of the micro-batches: {', '.join(f'{v:.4g}' for v in values)})"
            self._fail(args, state.global_step + 1, what, "the optimizer did not apply this step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self._fail(args, state.global_step, f"the logged training loss is {loss}", "")

    def _fail(self, args, step: int, what: str, note: str) -> None:
        self.on_train_end(args, None, None)
        checkpoint = last_complete_checkpoint(args.output_dir)
        where = (
            f"The last complete checkpoint is {checkpoint}: resume from it (rerun the same command, or pass "
            f"--resume_from_checkpoint {checkpoint})"
            if checkpoint
            else f"There is no complete checkpoint in {args.output_dir} yet: restart"
        )
        raise NonFiniteLossError(
            f"Training stopped at step {step}: {what}{'; ' + note if note else ''}. {where} with a lower "
            "--learning_rate, a smaller --max_grad_norm or bf16 instead of fp16, and check the data of that step."
        )


def reliability_callbacks() -> list[TrainerCallback]:
    """The callbacks every biomamba_hf training script adds: complete-checkpoint markers and NaN/inf stops."""
    return [CheckpointCompletionCallback(), NonFiniteLossCallback()]


# --------------------------------------------------------------------------------------------------------------------
# Preflight
# --------------------------------------------------------------------------------------------------------------------


def format_bytes(size: float) -> str:
    """``"512 B"``, ``"1.5 KB"``, ... up to TB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _number_of_saves(args) -> int | None:
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "no":
        return 0
    if strategy == "steps" and args.max_steps and args.max_steps > 0:
        save_steps = args.save_steps if args.save_steps >= 1 else math.ceil(args.max_steps * args.save_steps)
        return max(args.max_steps // max(int(save_steps), 1), 1)
    if strategy == "epoch" and (not args.max_steps or args.max_steps <= 0):
        return max(math.ceil(args.num_train_epochs), 1)
    return None


def expected_output_bytes(model, args) -> dict[str, int]:
    """Bytes a training run will write: one checkpoint, how many are kept at once, and the total.

    A checkpoint holds the weights (in the model's dtype) and, unless ``save_only_model``, the optimizer state
    (two float32 moments per trainable parameter for Adam-type optimizers) plus ~1 MB of scheduler, RNG and state
    files. While rotating, ``Trainer`` saves a new checkpoint before deleting the oldest, so ``save_total_limit + 1``
    are on disk at once. The final ``save_model`` adds one more copy of the weights.
    """
    seen: dict[int, tuple[int, int, bool]] = {}
    for parameter in model.parameters():
        seen[parameter.data_ptr()] = (parameter.numel(), parameter.element_size(), parameter.requires_grad)
    weights = sum(n * size for n, size, _ in seen.values())
    optimizer = 0 if args.save_only_model else sum(n * 8 for n, _, trainable in seen.values() if trainable)
    checkpoint = weights + optimizer + (0 if args.save_only_model else 1 << 20)
    saves = _number_of_saves(args)
    kept = saves if saves is not None else 1
    if args.save_total_limit:
        kept = min(kept, args.save_total_limit + 1) if saves is not None else args.save_total_limit + 1
    return {"checkpoint": checkpoint, "checkpoints_kept": kept, "total": kept * checkpoint + weights}


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def preflight(args, model=None, *, required_bytes: int | None = None) -> dict[str, Any]:
    """Check, before any training, that ``args.output_dir`` can be written and the disk can hold the run.

    Nothing is created: when the output folder does not exist yet, its nearest existing parent is checked. The disk
    needs the bytes of :func:`expected_output_bytes` for ``model`` (or ``required_bytes``) plus 5 % margin. Only the
    process that saves checks. Returns what was checked (``directory``, ``free``, ``required``).

    Raises:
        ValueError: the output folder is a file or sits under one, cannot be written, or the disk is too small; the
            message gives the numbers and the ways out.
    """
    output_dir = Path(args.output_dir)
    report: dict[str, Any] = {"directory": str(output_dir), "free": None, "required": None}
    if not getattr(args, "should_save", True):
        return report
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder: choose another --output_dir.")
    existing = _existing_ancestor(output_dir)
    if not existing.is_dir():
        raise ValueError(
            f"--output_dir {output_dir} cannot be created: {existing} is a file, not a folder. Choose another "
            "--output_dir."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".biomamba-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"--output_dir {output_dir} is not writable ({existing}: {err.strerror or err}). Fix its permissions "
            "or choose another --output_dir; nothing was trained."
        ) from None
    if required_bytes is None and model is not None:
        expected = expected_output_bytes(model, args)
        required_bytes = expected["total"]
        detail = (
            f"{expected['checkpoints_kept']} checkpoint(s) of {format_bytes(expected['checkpoint'])} kept at once "
            "and the final model"
        )
    else:
        detail = "the requested space"
    free = shutil.disk_usage(existing).free
    report.update(free=free, required=required_bytes)
    if required_bytes is not None and free < required_bytes * 1.05:
        raise ValueError(
            f"Not enough disk space for --output_dir {output_dir}: {format_bytes(free)} free on the disk of "
            f"{existing}, but the run will write about {format_bytes(required_bytes)} ({detail}). Free up space, "
            "choose another --output_dir, or keep fewer checkpoints (--save_total_limit 2, --save_only_model)."
        )
    if getattr(args, "save_total_limit", None) == 1:
        logger.warning(
            "--save_total_limit 1: Trainer deletes the previous checkpoint before the new one is marked complete, "
            "so a crash in that moment leaves nothing to resume from. Use --save_total_limit 2 or more."
        )
    return report


# --------------------------------------------------------------------------------------------------------------------
# Untrusted weights
# --------------------------------------------------------------------------------------------------------------------


def safe_loading_kwargs(allow_pickle: bool = False) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments of the loading policy: safetensors only unless ``allow_pickle``.

    >>> safe_loading_kwargs()
    {'use_safetensors': True, 'trust_remote_code': False}
    >>> safe_loading_kwargs(allow_pickle=True)
    {'use_safetensors': None, 'trust_remote_code': False}
    """
    return {"use_safetensors": None if allow_pickle else True, "trust_remote_code": False}


def _check_local_weights(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(name.endswith(".safetensors") for name in names):
        return
    pickles = [name for name in names if name.endswith(PICKLE_WEIGHT_SUFFIXES)]
    if pickles:
        raise ValueError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), which can run arbitrary code when loaded; "
            "biomamba_hf loads safetensors only. Convert them where you trust the file "
            "(`model.save_pretrained(folder)` writes model.safetensors), or opt in explicitly with "
            "allow_pickle=True (scripts: --allow_pickle_weights) if you trust its source."
        )


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Refuse a ``.safetensors`` file whose header is unreadable or whose tensors end past the end of the file (an
    interrupted download or copy), naming the file; safetensors' own error names neither."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            problem = f"it has {size} bytes, less than a safetensors header"
        else:
            length = int.from_bytes(head, "little")
            if 8 + length > size:
                problem = f"its header announces {length} bytes but the file has {size}"
            else:
                try:
                    header = json.loads(f.read(length))
                    end = max(
                        (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                        default=0,
                    )
                except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError):
                    problem = "its header is not valid safetensors JSON"
                else:
                    if 8 + length + end > size:
                        problem = f"it has {size} bytes but its tensors need {8 + length + end}"
    if problem:
        raise ValueError(
            f"{path} is truncated or corrupt ({problem}): an interrupted download, copy or save. Copy or download "
            "it again (or save the model again with `model.save_pretrained(folder)`)."
        )


def from_pretrained_safely(model_class, name_or_path: str | os.PathLike, *, allow_pickle: bool = False, **kwargs):
    """``model_class.from_pretrained(name_or_path, **kwargs)`` under the loading policy of :func:`safe_loading_kwargs`.

    A local folder with only pickle weights is refused with a ``ValueError`` that says how to convert them or opt in;
    a Hub repository without safetensors weights likewise. ``trust_remote_code=True`` is refused: every model
    biomamba_hf needs is registered when it is imported.
    """
    if kwargs.pop("trust_remote_code", False):
        raise ValueError(
            "biomamba_hf never runs code from a checkpoint (trust_remote_code=True): its models are registered by "
            "`import biomamba_hf`. Remove trust_remote_code."
        )
    kwargs.pop("use_safetensors", None)
    if Path(name_or_path).is_dir():
        from .convert import refuse_mamba_ssm_format

        refuse_mamba_ssm_format(name_or_path, str(name_or_path))
        if not allow_pickle:
            _check_local_weights(Path(name_or_path))
        for weights in sorted(Path(name_or_path).glob("*.safetensors")):
            check_safetensors_file(weights)
    try:
        return model_class.from_pretrained(name_or_path, **kwargs, **safe_loading_kwargs(allow_pickle))
    except OSError as err:
        if allow_pickle or "safetensors" not in str(err):
            raise
        raise ValueError(
            f"{name_or_path} has no safetensors weights ({err}); biomamba_hf does not load pickle weights unless "
            "you opt in with allow_pickle=True (scripts: --allow_pickle_weights) for a source you trust."
        ) from err
