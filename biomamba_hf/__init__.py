"""biomamba_hf: Mamba as a biomedical language model in the Hugging Face ecosystem.

``import biomamba_hf`` imports neither torch nor transformers; the Auto classes, the QA pipeline and the fast scan are
registered as soon as transformers' Auto classes, pipelines or Mamba are imported (:mod:`biomamba_hf.import_hook`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import import_hook

__version__ = "0.1.0.dev0"

# Public names, imported from their module on first access.
_LAZY_ATTRIBUTES = {
    "QA_LAYOUTS": "modeling",
    "MambaForQuestionAnswering": "modeling",
    "MambaForSequenceClassification": "modeling",
    "Mamba2ForQuestionAnswering": "modeling",
    "Mamba2ForSequenceClassification": "modeling",
    "convert_mamba_ssm_checkpoint": "convert",
    "QuestionAnsweringPipeline": "pipelines",
    "prepare_tokenizer_for_qa": "tokenization",
    "register": "registration",
}
_SUBMODULES = frozenset(
    {
        "bioasq",
        "convert",
        "data",
        "hub",
        "lora",
        "metrics",
        "modeling",
        "ops",
        "patches",
        "pipelines",
        "qa",
        "registration",
        "reliability",
        "script_utils",
        "speed",
        "tokenization",
        "trainer",
    }
)

if TYPE_CHECKING:
    from .convert import convert_mamba_ssm_checkpoint
    from .modeling import (
        QA_LAYOUTS,
        Mamba2ForQuestionAnswering,
        Mamba2ForSequenceClassification,
        MambaForQuestionAnswering,
        MambaForSequenceClassification,
    )
    from .pipelines import QuestionAnsweringPipeline
    from .registration import register
    from .tokenization import prepare_tokenizer_for_qa


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(f".{_LAZY_ATTRIBUTES[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_ATTRIBUTES, *_SUBMODULES})


import_hook.install()

__all__ = [
    "QA_LAYOUTS",
    "MambaForQuestionAnswering",
    "MambaForSequenceClassification",
    "Mamba2ForQuestionAnswering",
    "Mamba2ForSequenceClassification",
    "QuestionAnsweringPipeline",
    "convert_mamba_ssm_checkpoint",
    "prepare_tokenizer_for_qa",
    "register",
    "__version__",
]
