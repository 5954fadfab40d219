"""``import biomamba_hf`` and the metrics stay light; registration with transformers happens in either import order."""

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "transformers")


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "import biomamba_hf",
        "import biomamba_hf.metrics",
        "import biomamba_hf.metrics.cli",
        "import biomamba_hf.bioasq.formats",
        "from biomamba_hf.metrics import bioasq_factoid, evaluate_module_path",
    ],
)
def test_light_imports_do_not_import_torch_or_transformers(statement):
    out = run_python(
        f"""
        import sys, time
        start = time.perf_counter()
        {statement}
        print(time.perf_counter() - start)
        print(sorted(name for name in {HEAVY!r} if name in sys.modules))
        """
    )
    seconds, heavy = out.splitlines()
    assert heavy == "[]", f"{statement} imported {heavy}"
    assert float(seconds) < 1.0


def test_metrics_cli_help_is_light():
    out = run_python(
        """
        import runpy, sys
        sys.argv = ["biomamba-bioasq-eval", "--help"]
        try:
            runpy.run_module("biomamba_hf.metrics", run_name="__main__")
        except SystemExit:
            pass
        print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
        """
    )
    assert "--golden" in out
    assert out.splitlines()[-1] == "[]"


CHECK_REGISTERED = """
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, MambaConfig
from transformers.models.mamba import modeling_mamba
from transformers.pipelines import PIPELINE_REGISTRY
# Names only: importing biomamba_hf's classes here would register them and prove nothing.
assert AutoModelForQuestionAnswering._model_mapping[MambaConfig].__name__ == "MambaForQuestionAnswering"
assert AutoModelForSequenceClassification._model_mapping[MambaConfig].__name__ == "MambaForSequenceClassification"
assert PIPELINE_REGISTRY.supported_tasks["question-answering"]["impl"].__module__ == "biomamba_hf.pipelines"
assert modeling_mamba.mamba_selective_scan.__module__ == "biomamba_hf.ops"
print("registered")
"""


@pytest.mark.parametrize(
    "before",
    [
        "import biomamba_hf\nfrom transformers import pipeline",
        "from transformers import pipeline\nimport biomamba_hf",
        "import transformers\nimport biomamba_hf\nfrom transformers import AutoModelForQuestionAnswering",
        "import biomamba_hf\nfrom transformers import Trainer",
        "import biomamba_hf\nfrom transformers import MambaModel",
        "from biomamba_hf.modeling import MambaForQuestionAnswering",
        "from biomamba_hf import MambaForQuestionAnswering",
    ],
)
def test_registration_in_either_import_order(before):
    assert "registered" in run_python(before + "\n" + CHECK_REGISTERED)


def test_plain_import_gives_the_metrics_and_the_evaluate_module():
    """``biomamba_hf.metrics`` without importing it first, and ``evaluate.load`` of its module offline."""
    out = run_python(
        """
        import biomamba_hf
        import evaluate
        metric = evaluate.load(biomamba_hf.metrics.evaluate_module_path())
        predictions = [{"id": "q1", "prediction_text": ["brca1"]}]
        references = [{"id": "q1", "answers": [["BRCA1"]]}]
        print(metric.compute(predictions=predictions, references=references)["strict_acc"])
        """
    )
    assert out.splitlines()[-1] == "1.0"
