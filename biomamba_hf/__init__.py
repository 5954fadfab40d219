"""biomamba_hf: Mamba as a biomedical language model in the Hugging Face ecosystem.

Importing the package registers, once and idempotently:

* :class:`MambaForQuestionAnswering` with ``AutoModelForQuestionAnswering`` and :class:`MambaForSequenceClassification`
  with ``AutoModelForSequenceClassification`` (for ``MambaConfig``; ``AutoModel`` still gives stock ``MambaModel``);
* :class:`QuestionAnsweringPipeline` as the ``"question-answering"`` pipeline task, on transformers versions that
  removed that task (>= 5.3) and on those that still have it;
* the portable fast selective scan of :mod:`biomamba_hf.ops`, used where the mamba-ssm CUDA kernels are absent.

Heavy optional dependencies (datasets, evaluate, peft, matplotlib) are imported only where used.
"""

__version__ = "0.1.0.dev0"

from .modeling import (  # noqa: E402
    QA_LAYOUTS,
    MambaForQuestionAnswering,
    MambaForSequenceClassification,
)
from .ops import enable_fast_scan  # noqa: E402
from .pipelines import QuestionAnsweringPipeline  # noqa: E402
from .registration import register  # noqa: E402
from .tokenization import prepare_tokenizer_for_qa  # noqa: E402

register()
# Without the mamba-ssm CUDA kernels, route Mamba's selective scan to the package's portable chunked scan
# (BIOMAMBA_FAST_SCAN=0 or biomamba_hf.ops.disable_fast_scan() turn it off).
enable_fast_scan()

__all__ = [
    "QA_LAYOUTS",
    "MambaForQuestionAnswering",
    "MambaForSequenceClassification",
    "QuestionAnsweringPipeline",
    "prepare_tokenizer_for_qa",
    "register",
    "__version__",
]
