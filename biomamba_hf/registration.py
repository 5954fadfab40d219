"""Registration of the package's models and pipeline with transformers' Auto classes and pipeline registry."""

from __future__ import annotations

QA_TASK = "question-answering"


def _allow_question_answering_task() -> None:
    """Undo transformers' removal of the ``"question-answering"`` task (the package's only runtime patch).

    transformers >= 5.3 lists the task in ``transformers.pipelines.REMOVED_TASKS``, and ``pipeline()`` raises a
    ``KeyError`` for any task in that dict *before* it consults ``PIPELINE_REGISTRY``, so registering a pipeline
    class alone is not enough. Dropping the entry lets the registry serve the task again; nothing else in
    transformers is touched. ``tests/test_pipeline.py::test_upstream_task_removal_shape`` fails loudly if upstream
    changes this mechanism.
    """
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", None)
    if isinstance(removed, dict):
        removed.pop(QA_TASK, None)


def register() -> None:
    """Register the Mamba task heads with the Auto classes and our QA pipeline with ``transformers.pipeline``.

    Called on ``import biomamba_hf``; calling it again changes nothing.
    """
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        MambaConfig,
    )
    from transformers.pipelines import PIPELINE_REGISTRY

    from .modeling import MambaForQuestionAnswering, MambaForSequenceClassification
    from .pipelines import QuestionAnsweringPipeline

    AutoModelForQuestionAnswering.register(MambaConfig, MambaForQuestionAnswering, exist_ok=True)
    AutoModelForSequenceClassification.register(MambaConfig, MambaForSequenceClassification, exist_ok=True)

    _allow_question_answering_task()
    current = PIPELINE_REGISTRY.supported_tasks.get(QA_TASK)
    if current is None or current.get("impl") is not QuestionAnsweringPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            QA_TASK,
            pipeline_class=QuestionAnsweringPipeline,
            pt_model=AutoModelForQuestionAnswering,
            default=(current or {}).get("default"),
            type="text",
        )
