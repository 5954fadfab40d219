"""Every runtime patch of transformers, one function each, with the transformers versions it was checked on.

``tests/test_patches.py`` fails loudly when upstream changes the shape a patch relies on.
"""

from __future__ import annotations

QA_TASK = "question-answering"
#: The module-level name of ``transformers.models.mamba.modeling_mamba`` that ``MambaMixer.forward`` calls for its scan.
MAMBA_SCAN_ATTRIBUTE = "mamba_selective_scan"
#: Set on the base weight of an ``x_proj`` that carries a LoRA adapter (by :func:`biomamba_hf.lora.add_lora`).
ADAPTED_X_PROJ = "_biomamba_x_proj_has_adapter"

# The function transformers bound to `mamba_selective_scan`, saved while ours is bound.
_original_scan = None


# --------------------------------------------------------------------------------------------------------------------
# Pipelines and Auto classes
# --------------------------------------------------------------------------------------------------------------------


def allow_question_answering_task() -> None:
    """Undo transformers' removal of the ``"question-answering"`` task (drop it from ``pipelines.REMOVED_TASKS``).

    Checked on transformers 5.17 and 5.24. transformers >= 5.3 dropped the task from its registry; registering our
    class brings it back there (enough on e.g. 5.17). Later releases also list it in ``REMOVED_TASKS``, and
    ``pipeline()`` raises a ``KeyError`` for any task in that dict *before* it consults ``PIPELINE_REGISTRY``.
    Dropping the entry lets the registry serve the task again; nothing else in transformers is touched.
    """
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed, dict):
        removed.pop(QA_TASK, None)


def add_auto_mapping_entry(mapping, config_class, model_class) -> None:
    """Put ``config_class -> model_class`` in an Auto class's ``_LazyAutoMapping`` where ``register`` ignores it.

    Checked on transformers 5.17 and 5.24. Releases such as 5.17 silently skip registrations keyed by their *own*
    config classes (``_LazyAutoMapping.register`` returns early for classes from ``transformers.``), and
    ``MambaConfig`` is one; the entry goes exactly where the public API places it on newer releases
    (``_extra_content``).
    """
    mapping._extra_content[config_class] = model_class


# --------------------------------------------------------------------------------------------------------------------
# Mamba's selective scan (the portable fast path of biomamba_hf.ops)
# --------------------------------------------------------------------------------------------------------------------


def patch_mamba_selective_scan(dispatcher, install: bool) -> None:
    """(Un)bind ``modeling_mamba.mamba_selective_scan`` to ``dispatcher``; idempotent.

    Checked on transformers 5.17 to 5.24, where ``MambaMixer.forward`` looks that module-level name up at call
    time (bound at import to mamba-ssm's kernel or to the PyTorch reference), so rebinding it reaches every Mamba
    model, already built or not. The original stays available to the dispatcher
    (:func:`original_mamba_selective_scan`). Raises ``RuntimeError`` when transformers no longer has the attribute.
    """
    global _original_scan
    from transformers.models.mamba import modeling_mamba

    current = getattr(modeling_mamba, MAMBA_SCAN_ATTRIBUTE, None)
    if current is None or not callable(current):
        raise RuntimeError(
            f"transformers.models.mamba.modeling_mamba has no callable `{MAMBA_SCAN_ATTRIBUTE}` any more "
            "(transformers changed how Mamba picks its scan): the biomamba_hf fast scan cannot hook in; "
            "set BIOMAMBA_FAST_SCAN=0 and report this at the biomamba_hf issue tracker"
        )
    if install:
        if current is not dispatcher:
            _original_scan = current
            setattr(modeling_mamba, MAMBA_SCAN_ATTRIBUTE, dispatcher)
    elif current is dispatcher:
        setattr(modeling_mamba, MAMBA_SCAN_ATTRIBUTE, _original_scan)
        _original_scan = None


def original_mamba_selective_scan():
    """The function transformers bound to ``mamba_selective_scan`` before :func:`patch_mamba_selective_scan`."""
    return _original_scan


def selective_scan_patched_with(dispatcher) -> bool:
    """Whether ``mamba_selective_scan`` is bound to ``dispatcher`` right now."""
    if _original_scan is None:
        return False
    from transformers.models.mamba import modeling_mamba

    return getattr(modeling_mamba, MAMBA_SCAN_ATTRIBUTE, None) is dispatcher


def patch_mamba2_portable_ssd(install: bool) -> None:
    """(Un)route transformers' Mamba-2 reference path through :mod:`biomamba_hf.ops.ssd`; idempotent.

    Checked on transformers 5.24, where ``Mamba2Mixer.forward`` looks the module-level ``mamba2_chunk_scan`` and
    ``causal_conv1d_fn`` up at call time (bound at import to mamba-ssm / causal-conv1d or to the PyTorch reference):
    both are rebound to dispatchers that keep the kernels for CUDA tensors where transformers bound them. On releases
    whose mixer has ``torch_forward`` instead, that method is replaced at class level (written against the stored
    source of such a release). Installing honours ``BIOMAMBA_FAST_SCAN=0`` and raises ``RuntimeError`` when
    transformers has neither hook point. The mechanics are :func:`biomamba_hf.ops.ssd.install_mamba2_fast_path` and
    :func:`~biomamba_hf.ops.ssd.uninstall_mamba2_fast_path`.
    """
    from .ops import ssd

    if install:
        ssd.install_mamba2_fast_path()
    else:
        ssd.uninstall_mamba2_fast_path()


# --------------------------------------------------------------------------------------------------------------------
# Kernel functions called with tensors off CUDA
# --------------------------------------------------------------------------------------------------------------------

#: transformers' modeling modules whose kernel functions are bound at import, whatever the device a model later runs
#: on (transformers 5.17 to 5.24: ``use_kernel_func_from_hub_with_fallback``).
KERNEL_FUNCTION_MODULES = ("transformers.models.mamba.modeling_mamba", "transformers.models.mamba2.modeling_mamba2")
#: Arguments that ask a kernel to keep packed sequences apart; transformers' references cannot.
PACKED_SEQUENCE_ARGUMENTS = ("seq_idx", "cu_seqlens")
#: The attribute of a device guard that holds the kernel-bound function it guards.
_GUARDED = "_biomamba_guarded_kernel_function"


def hub_kernel_binding(function):
    """``(kernel_bound, reference)`` of a function built by transformers' ``use_kernel_func_from_hub_with_fallback``
    (or of the device guard around one, :func:`route_non_cuda_calls_to_reference`): whether it calls the kernel
    package's implementation, and transformers' PyTorch reference it falls back to (read from the wrapper's closure;
    ``(None, None)`` for anything else)."""
    import inspect

    function = getattr(function, _GUARDED, function)
    try:
        bound = inspect.getclosurevars(function).nonlocals
    except (TypeError, ValueError):
        return None, None
    if "is_new_implementation" not in bound or not callable(bound.get("torch_function")):
        return None, None
    return bool(bound["is_new_implementation"]), bound["torch_function"]


def hub_fallback_functions(module) -> dict:
    """``{name: function}`` of the module-level functions of ``module`` built by
    ``use_kernel_func_from_hub_with_fallback`` (guarded or not), found by what they are, not by a list of names."""
    return {
        name: value
        for name, value in vars(module).items()
        if callable(value) and hub_kernel_binding(value)[0] is not None
    }


def _first_tensor(args, kwargs):
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def route_non_cuda_calls_to_reference() -> list[str]:
    """Every kernel-bound function of :data:`KERNEL_FUNCTION_MODULES` sends calls with tensors off CUDA to
    transformers' PyTorch reference instead of the CUDA-only kernel; idempotent; returns the names guarded now.

    Checked on transformers 5.17 and 5.24: the functions are bound once, at import, to mamba-ssm / causal-conv1d
    when those are installed, whatever device a model later runs on, so a Mamba model on the CPU of a machine with
    the kernels failed (``Expected x.is_cuda() to be true``) in its convolution, scan, fused training path or
    decoding step. CUDA calls are unchanged; the references of the fused paths return ``None``, which sends
    transformers to its unfused path, as on a machine without the kernels. Packed sequences (``seq_idx``,
    ``cu_seqlens``) off CUDA are refused: the references would mix them. The portable paths of
    :mod:`biomamba_hf.ops` sit on top of these guards (they call the guarded function for CUDA tensors), and
    ``BIOMAMBA_FAST_SCAN=0`` leaves the guards in place.
    """
    import importlib

    guarded = []
    for module_name in KERNEL_FUNCTION_MODULES:
        module = importlib.import_module(module_name)
        for name, function in hub_fallback_functions(module).items():
            kernel_bound, reference = hub_kernel_binding(function)
            if kernel_bound and not hasattr(function, _GUARDED):
                setattr(module, name, _device_guard(function, reference, f"{module_name}.{name}"))
                guarded.append(f"{module_name.rsplit('.', 1)[-1]}.{name}")
    return guarded


def _device_guard(kernel_function, reference, qualified_name: str):
    def guarded(*args, **kwargs):
        tensor = _first_tensor(args, kwargs)
        if tensor is None or tensor.device.type == "cuda":
            return kernel_function(*args, **kwargs)
        packed = [name for name in PACKED_SEQUENCE_ARGUMENTS if kwargs.get(name) is not None]
        if packed:
            raise ValueError(
                f"{qualified_name} got {' and '.join(packed)} (packed sequences) with tensors on "
                f"{tensor.device}: only the CUDA kernels keep packed sequences apart. Run on a GPU or train on "
                "unpacked sequences."
            )
        return reference(*args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = qualified_name.rsplit(".", 1)[-1]
    setattr(guarded, _GUARDED, kernel_function)
    return guarded


# --------------------------------------------------------------------------------------------------------------------
# LoRA on Mamba's fused training path
# --------------------------------------------------------------------------------------------------------------------


def skip_fused_path_for_adapted_x_proj() -> None:
    """Skip transformers' fused ``mamba_inner_fn`` for mixers whose ``x_proj`` carries a LoRA adapter; idempotent.

    Checked on transformers 5.17 and 5.24. Mixers are marked by :func:`biomamba_hf.lora.add_lora`.

    The fused function receives ``x_proj.weight`` and multiplies by it itself, bypassing the adapter. When it returns
    ``None``, transformers' ``MambaMixer`` goes on with its unfused path (as it does without mamba-ssm), which calls
    the ``x_proj`` module and still uses the CUDA kernels for the convolution and the scan. Other mixers keep the fused
    path. The hook point is the module-level ``mamba_inner_fn`` that ``MambaMixer.forward`` looks up at call time in
    transformers 5.x.
    """
    from transformers.models.mamba import modeling_mamba

    fused = modeling_mamba.mamba_inner_fn
    if getattr(fused, "_biomamba_lora_aware", False):
        return

    def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs):
        if getattr(x_proj_weight, ADAPTED_X_PROJ, False):
            return None
        return fused(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs)

    mamba_inner_fn._biomamba_lora_aware = True
    mamba_inner_fn.__wrapped__ = fused
    modeling_mamba.mamba_inner_fn = mamba_inner_fn
