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


def test_every_cuda_only_kernel_function_is_a_hub_fallback_function_looked_up_at_call_time():
    """The names route_non_cuda_calls_to_reference guards exist, are built by transformers'
    use_kernel_func_from_hub_with_fallback (their reference is readable) and are called by name from the mixers."""
    import importlib

    for module_name, names in patches.CUDA_ONLY_KERNEL_FUNCTIONS.items():
        module = importlib.import_module(module_name)
        source = inspect.getsource(module)
        for name in names:
            function = getattr(module, name)
            if getattr(function, "_biomamba_device_guard", False):  # guarded already (a machine with the kernels)
                function = function.__wrapped__
            kernel_bound, reference = patches.hub_kernel_binding(function)
            assert kernel_bound is not None and callable(reference), (
                f"{module_name}.{name} is no hub fallback function"
            )
            assert f"= {name}(" in source or f" {name}(" in source.split("class ", 1)[1], (
                f"{name} is not called by name"
            )


def test_a_model_on_the_cpu_never_reaches_a_cuda_only_kernel(monkeypatch):
    """A machine with causal-conv1d installed: transformers binds causal_conv1d_fn to the kernel at import, and a
    Mamba model on the CPU then failed in its convolution. The kernel is stood in for by a fake package that fails on
    CPU tensors as the real one does, bound by transformers' own decorator."""
    import sys
    import types

    import torch
    from helpers import tiny_config
    from transformers import MambaForCausalLM
    from transformers.integrations.hub_kernels import use_kernel_func_from_hub_with_fallback

    _, reference = patches.hub_kernel_binding(modeling_mamba.causal_conv1d_fn)
    calls = []

    def cuda_only_kernel(x, *args, **kwargs):
        calls.append(x.device.type)
        if x.device.type != "cuda":
            raise RuntimeError("Expected x.is_cuda() to be true, but got false.")
        return reference(x, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "fake_causal_conv1d", types.SimpleNamespace(causal_conv1d_fn=cuda_only_kernel))
    kernel_bound = use_kernel_func_from_hub_with_fallback("causal_conv1d_fn", "fake_causal_conv1d")(reference)
    assert patches.hub_kernel_binding(kernel_bound)[0] is True

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
