"""Registration of the package's models and pipeline with transformers' Auto classes and pipeline registry."""

from __future__ import annotations

from .patches import QA_TASK, add_auto_mapping_entry, allow_question_answering_task


def _register_auto_model(auto_class, config_class, model_class) -> None:
    """``auto_class.register(config_class, model_class)``, also where transformers ignores it.

    transformers releases such as 5.17 silently skip registrations keyed by their *own* config classes
    (``_LazyAutoMapping.register`` returns early for classes from ``transformers.``), and ``MambaConfig`` is one. There
    we place the entry exactly where the public API places it on newer releases (``_extra_content``). The
    registration tests fail if neither way takes effect.
    """
    auto_class.register(config_class, model_class, exist_ok=True)
    mapping = auto_class._model_mapping
    try:
        registered = mapping[config_class]
    except KeyError:
        registered = None
    if registered is not model_class:
        add_auto_mapping_entry(mapping, config_class, model_class)


def register() -> None:
    """Register the Mamba and Mamba-2 task heads with the Auto classes and our QA pipeline with ``pipeline()``.

    Called on ``import biomamba_hf``; calling it again changes nothing.
    """
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        Mamba2Config,
        MambaConfig,
    )
    from transformers.pipelines import PIPELINE_REGISTRY

    from .modeling import (
        Mamba2ForQuestionAnswering,
        Mamba2ForSequenceClassification,
        MambaForQuestionAnswering,
        MambaForSequenceClassification,
    )
    from .pipelines import QuestionAnsweringPipeline, SafetensorsAutoModelForQuestionAnswering

    _register_auto_model(AutoModelForQuestionAnswering, MambaConfig, MambaForQuestionAnswering)
    _register_auto_model(AutoModelForSequenceClassification, MambaConfig, MambaForSequenceClassification)
    _register_auto_model(AutoModelForQuestionAnswering, Mamba2Config, Mamba2ForQuestionAnswering)
    _register_auto_model(AutoModelForSequenceClassification, Mamba2Config, Mamba2ForSequenceClassification)

    allow_question_answering_task()
    current = PIPELINE_REGISTRY.supported_tasks.get(QA_TASK)
    if current is None or current.get("impl") is not QuestionAnsweringPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            QA_TASK,
            pipeline_class=QuestionAnsweringPipeline,
            pt_model=SafetensorsAutoModelForQuestionAnswering,
            default=(current or {}).get("default"),
            type="text",
        )
