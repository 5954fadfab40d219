"""Registration of the package's models and pipeline with transformers' Auto classes and pipeline registry."""

from __future__ import annotations

QA_TASK = "question-answering"


def _allow_question_answering_task() -> None:
    """Undo transformers' removal of the ``"question-answering"`` task.

    transformers >= 5.3 dropped the task from its registry; registering our class brings it back there (enough on
    e.g. 5.17). Later releases also list it in ``transformers.pipelines.REMOVED_TASKS``, and ``pipeline()`` raises a
    ``KeyError`` for any task in that dict *before* it consults ``PIPELINE_REGISTRY``. Dropping the entry lets the registry serve the task again; nothing else in
    transformers is touched. ``tests/test_pipeline.py::test_upstream_task_removal_shape`` fails loudly if upstream
    changes this mechanism.
    """
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed, dict):
        removed.pop(QA_TASK, None)


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
        mapping._extra_content[config_class] = model_class


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

    _allow_question_answering_task()
    current = PIPELINE_REGISTRY.supported_tasks.get(QA_TASK)
    if current is None or current.get("impl") is not QuestionAnsweringPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            QA_TASK,
            pipeline_class=QuestionAnsweringPipeline,
            pt_model=SafetensorsAutoModelForQuestionAnswering,
            default=(current or {}).get("default"),
            type="text",
        )
