"""A fork server that runs the example scripts' ``main()`` in child processes that may ``kill -9`` themselves.

Used by ``tests/test_interrupted_training.py``. Importing torch, transformers and datasets takes seconds, so the
server imports them once and forks one child per command; each child is a separate process that ends exactly as a
``kill -9`` would end it (``SIGKILL``: no cleanup, no ``atexit``, no flushing), at a moment chosen by the
``BIOMAMBA_TEST_KILL`` variable of the request:

* ``mid_step:N``: inside optimizer step ``N``, after its gradients were computed, before the optimizer applied them;
* ``torn_save:N``: while saving ``checkpoint-N``: the weights are written, ``optimizer.pt`` is cut to half its size
  (a write that never finished), ``trainer_state.json`` is never written;
* ``before_marker:N``: after ``Trainer`` finished ``checkpoint-N`` (``trainer_state.json`` written), before the
  completion marker;
* ``final_save``: during the final ``trainer.save_model()`` after training, with ``model.safetensors`` half-written.

The scripts run as they are: the server adds only the kill hook, never the reliability wiring (callbacks,
``last_complete_checkpoint``, ``preflight``), so the tests see what the scripts themselves write (completion markers,
resumed checkpoints, locks).

Protocol: one JSON request per line on stdin, ``{"script": path, "argv": [...], "env": {...}, "log": path}``; one
JSON reply per line on stdout, ``{"returncode": int}`` (``-9`` for a ``SIGKILL``). The child's stdout and stderr go
to ``log``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

KILL_VARIABLE = "BIOMAMBA_TEST_KILL"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_hook(spec: str) -> None:
    """Arrange for this process to ``SIGKILL`` itself at the moment ``spec`` names (see the module docstring)."""
    from pathlib import Path

    from transformers import Trainer, TrainerCallback

    moment, _, step = spec.partition(":")
    step = int(step) if step else None

    if moment == "mid_step":

        class KillMidStep(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                if state.global_step + 1 == step:
                    _die()

        callback = KillMidStep()
    elif moment == "before_marker":

        class KillBeforeMarker(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if state.global_step == step:
                    _die()

        callback = KillBeforeMarker()
    elif moment == "torn_save":
        original = Trainer._save_optimizer_and_scheduler

        def torn(self, output_dir):
            original(self, output_dir)
            if self.state.global_step == step:
                path = Path(output_dir) / "optimizer.pt"
                os.truncate(path, path.stat().st_size // 2)
                _die()

        Trainer._save_optimizer_and_scheduler = torn
        return
    elif moment == "final_save":
        original_save = Trainer.save_model

        def save_model(self, output_dir=None, _internal_call=False):
            original_save(self, output_dir, _internal_call)
            if not _internal_call:
                path = Path(output_dir or self.args.output_dir) / "model.safetensors"
                os.truncate(path, path.stat().st_size // 2)
                _die()

        Trainer.save_model = save_model
        return
    else:
        raise ValueError(f"{KILL_VARIABLE}={spec!r}: unknown moment {moment!r}")

    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # First in line, so it runs before the completion marker callback.
        self.callback_handler.callbacks.insert(0, callback)

    Trainer.__init__ = init


def _load_script(path: str):
    import importlib.util

    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through the module
    spec.loader.exec_module(module)
    return module


def _child(request: dict) -> None:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ.update(request.get("env", {}))
    import torch

    torch.set_num_threads(1)
    try:
        if os.environ.get(KILL_VARIABLE):
            install_kill_hook(os.environ[KILL_VARIABLE])
        _load_script(request["script"]).main(list(request["argv"]))
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def serve() -> None:
    # Import the heavy modules once; no torch operation runs here, so forking afterwards is safe.
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import biomamba_hf  # noqa: F401
    import biomamba_hf.bioasq.evaluation  # noqa: F401
    import biomamba_hf.data.clm  # noqa: F401
    import biomamba_hf.lora  # noqa: F401
    import biomamba_hf.qa  # noqa: F401
    import biomamba_hf.reliability  # noqa: F401
    import biomamba_hf.script_utils  # noqa: F401
    import biomamba_hf.trainer  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": returncode}), flush=True)


if __name__ == "__main__":
    serve()
