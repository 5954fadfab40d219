"""biomamba_hf: Mamba as a biomedical language model in the Hugging Face ecosystem.

Importing the package registers, once and idempotently:

* :class:`MambaForQuestionAnswering` with ``AutoModelForQuestionAnswering`` and :class:`MambaForSequenceClassification`
  with ``AutoModelForSequenceClassification`` (for ``MambaConfig``; ``AutoModel`` still gives stock ``MambaModel``);
* :class:`QuestionAnsweringPipeline` as the ``"question-answering"`` pipeline task, on transformers versions that
  removed that task (>= 5.3) and on those that still have it.

Heavy optional dependencies (datasets, evaluate, peft, matplotlib) are imported only where used.
"""

__version__ = "0.1.0.dev0"

from .modeling import (  # noqa: E402
    QA_LAYOUTS,
    MambaForQuestionAnswering,
    MambaForSequenceClassification,
)
from .pipelines import QuestionAnsweringPipeline  # noqa: E402
from .registration import register  # noqa: E402
from .tokenization import prepare_tokenizer_for_qa  # noqa: E402

register()

__all__ = [
    "QA_LAYOUTS",
    "MambaForQuestionAnswering",
    "MambaForSequenceClassification",
    "QuestionAnsweringPipeline",
    "prepare_tokenizer_for_qa",
    "register",
    "__version__",
]
