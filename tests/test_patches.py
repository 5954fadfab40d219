"""Every runtime patch of transformers (biomamba_hf.patches) still finds the shape it was written against."""

import inspect

import pytest
import transformers
from transformers import AutoModelForQuestionAnswering, Trainer
from transformers.models.mamba import modeling_mamba

from biomamba_hf import patches


def test_pipeline_task_removal_is_a_dict_of_task_names():
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", None)
    if removed is not None:  # older releases have no such dict: nothing to undo there
        assert isinstance(removed, dict), f"REMOVED_TASKS is now a {type(removed).__name__}"
        assert patches.QA_TASK not in removed, "allow_question_answering_task did not take effect"


def test_auto_mapping_has_extra_content():
    mapping = AutoModelForQuestionAnswering._model_mapping
    assert isinstance(getattr(mapping, "_extra_content", None), dict), (
        f"transformers {transformers.__version__}: _LazyAutoMapping has no _extra_content dict any more"
    )


def test_mamba_mixer_calls_the_module_level_selective_scan():
    assert callable(getattr(modeling_mamba, patches.MAMBA_SCAN_ATTRIBUTE, None))
    source = inspect.getsource(modeling_mamba.MambaMixer)
    assert f"{patches.MAMBA_SCAN_ATTRIBUTE}(" in source, "MambaMixer no longer calls mamba_selective_scan by name"


def test_selective_scan_patch_round_trip():
    def dispatcher(*args, **kwargs):
        raise AssertionError("not called")

    from biomamba_hf import ops

    ops.disable_fast_scan()
    try:
        before = getattr(modeling_mamba, patches.MAMBA_SCAN_ATTRIBUTE)
        patches.patch_mamba_selective_scan(dispatcher, install=True)
        assert getattr(modeling_mamba, patches.MAMBA_SCAN_ATTRIBUTE) is dispatcher
        assert patches.original_mamba_selective_scan() is before
        assert patches.selective_scan_patched_with(dispatcher)
        patches.patch_mamba_selective_scan(dispatcher, install=False)
        assert getattr(modeling_mamba, patches.MAMBA_SCAN_ATTRIBUTE) is before
    finally:
        ops.enable_fast_scan()


def test_mamba_inner_fn_takes_x_proj_weight_fourth_and_is_looked_up_at_call_time():
    fused = modeling_mamba.mamba_inner_fn
    if getattr(fused, "__wrapped__", None) is not None:
        fused = fused.__wrapped__
    source = inspect.getsource(modeling_mamba.MambaMixer)
    assert "mamba_inner_fn(" in source, "MambaMixer no longer calls mamba_inner_fn by name"
    if fused is not None and callable(fused):
        try:
            params = list(inspect.signature(fused).parameters)
        except (TypeError, ValueError):
            pytest.skip("mamba_inner_fn has no inspectable signature here")
        if len(params) >= 4:
            assert params[3] in ("x_proj_weight", "args"), f"mamba_inner_fn's 4th parameter is now {params[3]!r}"


def test_trainer_run_epoch_still_exists():
    """BiomambaTrainer overrides the private Trainer._run_epoch (resume at max_steps)."""
    assert callable(getattr(Trainer, "_run_epoch", None)), (
        f"transformers {transformers.__version__}: Trainer._run_epoch is gone; update BiomambaTrainer"
    )
    assert "create_model_card" in vars(Trainer), "Trainer.create_model_card is gone; update BiomambaTrainer"


def test_mamba2_mixer_has_a_hook_point():
    """patch_mamba2_portable_ssd rebinds the module-level mamba2_chunk_scan (or replaces Mamba2Mixer.torch_forward)."""
    from transformers.models.mamba2 import modeling_mamba2

    mixer = modeling_mamba2.Mamba2Mixer
    if callable(getattr(modeling_mamba2, "mamba2_chunk_scan", None)):
        assert "mamba2_chunk_scan(" in inspect.getsource(mixer), (
            "Mamba2Mixer no longer calls mamba2_chunk_scan by name"
        )
    else:
        assert callable(getattr(mixer, "torch_forward", None)), (
            "Mamba2 has neither mamba2_chunk_scan nor torch_forward"
        )


#: Kernel functions the mixers of transformers 5.17-5.24 call by name (besides the scans biomamba_hf.ops replaces).
EXPECTED_KERNEL_FUNCTIONS = {
    "transformers.models.mamba.modeling_mamba": {
        "causal_conv1d_fn", "causal_conv1d_update", "mamba_inner_fn", "mamba_selective_state_update"
    },
    "transformers.models.mamba2.modeling_mamba2": {
        "causal_conv1d_update", "mamba2_split_conv1d_scan_combined", "mamba2_selective_state_update"
    },
}  # fmt: skip


def test_the_kernel_functions_are_found_by_what_they_are_and_called_by_name():
    """route_non_cuda_calls_to_reference guards what hub_fallback_functions finds: transformers' hub-fallback
    functions (their reference readable), each looked up by name where the mixers call it."""
    import importlib

    for module_name in patches.KERNEL_FUNCTION_MODULES:
        module = importlib.import_module(module_name)
        found = patches.hub_fallback_functions(module)
        for name in EXPECTED_KERNEL_FUNCTIONS[module_name] - set(found):
            function = getattr(module, name)  # the package's LoRA-aware mamba_inner_fn wraps the hub function
            while function is not None and patches.hub_kernel_binding(function)[0] is None:
                function = getattr(function, "__wrapped__", None)
            assert function is not None, f"{module_name}.{name} is no hub fallback function"
        source = inspect.getsource(module).split("class ", 1)[1]
        for name, function in found.items():
            assert callable(patches.hub_kernel_binding(function)[1])
            assert f" {name}(" in source, f"{module_name}.{name} is not called by name"


def _fake_kernel_bound(name, reference, calls):
    """``reference`` bound by transformers' own decorator to a fake kernel package that fails on CPU tensors."""
    import sys
    import types

    from transformers.integrations.hub_kernels import use_kernel_func_from_hub_with_fallback

    def cuda_only_kernel(x, *args, **kwargs):
        calls.append(x.device.type)
        if x.device.type != "cuda":
            raise RuntimeError("Expected x.is_cuda() to be true, but got false.")
        return reference(x, *args, **kwargs)

    sys.modules[f"fake_kernels_{name}"] = types.SimpleNamespace(**{name: cuda_only_kernel})
    function = use_kernel_func_from_hub_with_fallback(name, f"fake_kernels_{name}")(reference)
    del sys.modules[f"fake_kernels_{name}"]
    assert patches.hub_kernel_binding(function)[0] is True
    return function


def test_any_kernel_bound_function_is_guarded_and_packed_sequences_off_cuda_are_refused(monkeypatch):
    """Found by what it is: a kernel function under a name no list holds is guarded too (with the portable paths
    switched off, BIOMAMBA_FAST_SCAN=0, the scans themselves are such functions)."""
    import torch

    calls = []

    def reference(x, scale=1.0, seq_idx=None):
        return x * scale

    monkeypatch.setattr(
        modeling_mamba, "some_new_kernel_fn", _fake_kernel_bound("some_new_kernel_fn", reference, calls), raising=False
    )
    assert patches.route_non_cuda_calls_to_reference() == ["modeling_mamba.some_new_kernel_fn"]
    guarded = modeling_mamba.some_new_kernel_fn
    assert patches.hub_kernel_binding(guarded) == (True, reference)  # seen through the guard
    torch.testing.assert_close(guarded(torch.ones(3), scale=2.0), torch.full((3,), 2.0))
    with pytest.raises(
        ValueError, match=r"modeling_mamba.some_new_kernel_fn got seq_idx \(packed sequences\) with tensors on cpu"
    ):
        guarded(torch.ones(3), seq_idx=torch.zeros(3, dtype=torch.int32))
    assert calls == []


def test_a_model_on_the_cpu_never_reaches_a_cuda_only_kernel(monkeypatch):
    """A machine with causal-conv1d installed: transformers binds causal_conv1d_fn to the kernel at import, and a
    Mamba model on the CPU then failed in its convolution. The kernel is stood in for by a fake package that fails on
    CPU tensors as the real one does, bound by transformers' own decorator."""
    import torch
    from helpers import tiny_config
    from transformers import MambaForCausalLM

    _, reference = patches.hub_kernel_binding(modeling_mamba.causal_conv1d_fn)
    calls = []
    kernel_bound = _fake_kernel_bound("causal_conv1d_fn", reference, calls)

    torch.manual_seed(0)
    model = MambaForCausalLM(tiny_config(64)).eval()
    ids = torch.randint(2, 64, (2, 12))
    with torch.no_grad():
        expected = model(ids).logits
        monkeypatch.setattr(modeling_mamba, "causal_conv1d_fn", kernel_bound)
        with pytest.raises(RuntimeError, match="is_cuda"):
            model(ids)  # what a user of such a machine got
        assert "modeling_mamba.causal_conv1d_fn" in patches.route_non_cuda_calls_to_reference()
        assert "modeling_mamba.causal_conv1d_fn" not in patches.route_non_cuda_calls_to_reference()  # idempotent
        calls.clear()
        torch.testing.assert_close(model(ids).logits, expected, rtol=0, atol=0)
    assert calls == []  # the kernel was not called with CPU tensors
