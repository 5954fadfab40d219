"""Evaluation metrics: the official BioASQ factoid measures (standard library only; light to import)."""

from pathlib import Path

from . import bioasq as _bioasq
from .bioasq import *  # noqa: F403  (the public names listed in bioasq.__all__)


def evaluate_module_path() -> str:
    """Local path of the ``evaluate`` metric module: ``evaluate.load(evaluate_module_path())`` works offline."""
    return str(Path(__file__).parent / "bioasq_factoid")


__all__ = [*_bioasq.__all__, "evaluate_module_path"]
