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
