"""Evaluation metrics: the official BioASQ factoid measures (standard library only; light to import)."""

from pathlib import Path

from ..bioasq.formats import (
    MAX_CANDIDATES,
    batch_name,
    load_golden,
    load_golden_batches,
    load_predictions,
    question_id,
    question_types,
    read_golden_questions,
    read_json,
    to_submission,
    write_submission,
)
from .bioasq import (
    bioasq_factoid,
    bioasq_factoid_batches,
    clean_answer,
    flatten_scores,
    merge_candidates,
    merge_nbest,
    normalize_answer,
    question_scores,
)


def evaluate_module_path() -> str:
    """Local path of the ``evaluate`` metric module: ``evaluate.load(evaluate_module_path())`` works offline."""
    return str(Path(__file__).parent / "bioasq_factoid")


__all__ = [
    "MAX_CANDIDATES",
    "batch_name",
    "bioasq_factoid",
    "bioasq_factoid_batches",
    "clean_answer",
    "evaluate_module_path",
    "flatten_scores",
    "load_golden",
    "load_golden_batches",
    "load_predictions",
    "merge_candidates",
    "merge_nbest",
    "normalize_answer",
    "question_id",
    "question_scores",
    "question_types",
    "read_golden_questions",
    "read_json",
    "to_submission",
    "write_submission",
]
