"""Registers the package with transformers once transformers' Auto classes, pipelines or Mamba / Mamba-2 models are
imported.

Keeps ``import biomamba_hf`` free of torch and transformers (the metrics start in milliseconds) while
``import biomamba_hf`` before or after ``import transformers`` still registers everything before first use.
"""

from __future__ import annotations

import importlib.abc
import sys

#: Importing any of these means transformers' registries, Mamba or Mamba-2 are about to be used: time to register.
TRIGGERS = (
    "transformers.models.auto.modeling_auto",
    "transformers.pipelines",
    "transformers.models.mamba.modeling_mamba",
    "transformers.models.mamba2.modeling_mamba2",
)
_WATCHED = ("transformers", "biomamba_hf")

_state = {"done": False, "running": False}
#: Watched modules whose import is executing right now (innermost last).
_executing: list[str] = []


def _watched(name: str) -> bool:
    return name in _WATCHED or name.startswith(tuple(f"{prefix}." for prefix in _WATCHED))


def register_when_ready() -> None:
    """Register (Auto classes, QA pipeline, fast scan) if a trigger module is loaded and no import is half-done.

    Called when a watched module finishes importing and by ``import biomamba_hf``. Registering inside a half-done
    import of transformers or of this package would read partially initialised modules, so it waits for the end
    of the outermost one.
    """
    if _state["done"] or _state["running"] or _executing:
        return
    if not any(name in sys.modules for name in TRIGGERS):
        return
    _state["running"] = True
    try:
        from .ops import enable_fast_scan
        from .patches import route_non_cuda_calls_to_reference
        from .registration import register

        register()
        # Where mamba-ssm / causal-conv1d are installed, a model on the CPU must not reach their CUDA-only kernels.
        route_non_cuda_calls_to_reference()
        # Without the mamba-ssm CUDA kernels, route Mamba's selective scan to the package's portable chunked scan
        # (BIOMAMBA_FAST_SCAN=0 or biomamba_hf.ops.disable_fast_scan() turn it off).
        enable_fast_scan()
        _state["done"] = True
    finally:
        _state["running"] = False
    uninstall()


class _NotifyingLoader(importlib.abc.Loader):
    """Runs the wrapped loader, then :func:`register_when_ready`; everything else is the wrapped loader's."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _executing.append(module.__name__)
        try:
            self._loader.exec_module(module)
        finally:
            _executing.remove(module.__name__)
        register_when_ready()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds transformers and biomamba_hf modules with the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        if not _watched(fullname):
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _NotifyingLoader(spec.loader)
        return spec


_finder = _Finder()


def install() -> None:
    """Watch imports until the package is registered (called by ``import biomamba_hf``; idempotent)."""
    if not _state["done"] and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    register_when_ready()


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
