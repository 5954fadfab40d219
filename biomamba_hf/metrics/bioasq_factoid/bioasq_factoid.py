# Copyright 2025 The biomamba_hf Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""BioASQ factoid metric for `evaluate`: strict accuracy, lenient accuracy and MRR over the top-5 candidates.

A thin wrapper: the scoring lives in ``biomamba_hf.metrics.bioasq`` (standard library only), which this module
imports as an installed package, so ``evaluate.load(<this folder>)`` works offline.
"""

import datasets
import evaluate

from biomamba_hf.metrics.bioasq import bioasq_factoid, bioasq_factoid_batches, flatten_scores

_CITATION = """\
@article{tsatsaronis2015overview,
  title={An overview of the BIOASQ large-scale biomedical semantic indexing and question answering competition},
  author={Tsatsaronis, George and Balikas, Georgios and Malakasiotis, Prodromos and others},
  journal={BMC Bioinformatics},
  volume={16},
  pages={138},
  year={2015}
}
"""

_DESCRIPTION = """\
The official BioASQ Task B (phase B) measures for factoid questions. Each question gets a ranked list of candidate
answers, of which the first 5 count. A candidate is correct when it equals one of the gold synonyms after
lower-casing both, whitespace compared as written (as the official evaluator, EvaluatorTask1b -e 5, does; its rules
are listed in the metric card). Strict accuracy: the first candidate is correct; lenient accuracy: one of
the candidates is correct; MRR: mean of 1/rank of the first correct candidate (0 if none). Every reference question
counts, and one without a prediction scores 0. The "batches" configuration also takes each question's test batch
and returns per-batch scores, their macro average over batches (as BioBERT reports) and the micro average.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of dicts, one per question, with
        - 'id': the BioASQ question id,
        - 'prediction_text': the ranked candidate answers (list of strings; may be empty).
    references: list of dicts, one per question, with
        - 'id': the BioASQ question id,
        - 'answers': the gold answers as in BioASQ `exact_answer`: a list of synonym lists,
        - 'batch' (configuration "batches" only): the test batch of the question, e.g. "4b-1".
Returns:
    'strict_acc', 'lenient_acc', 'mrr' (fractions in [0, 1]), 'num_questions', 'num_answered' and
    'num_unknown_predictions' (prediction ids without a reference; ignored). With the "batches" configuration the
    keys are prefixed: 'macro_mrr', 'micro_mrr', '4b-1_mrr', ...
Examples:
    >>> import evaluate
    >>> bioasq = evaluate.load("bioasq_factoid")  # doctest: +SKIP
    >>> predictions = [{"id": "q1", "prediction_text": ["tnf", "IL-6"]}, {"id": "q2", "prediction_text": []}]
    >>> references = [{"id": "q1", "answers": [["TNF", "TNF-alpha"]]}, {"id": "q2", "answers": [["BRCA1"]]}]
    >>> results = bioasq.compute(predictions=predictions, references=references)  # doctest: +SKIP
    >>> print(results["strict_acc"], results["mrr"])  # doctest: +SKIP
    0.5 0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BioasqFactoid(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", "batches"):
            raise ValueError(
                f"Unknown configuration {self.config_name!r} of bioasq_factoid: use 'default' or 'batches'"
            )
        references = {
            "id": datasets.Value("string"),
            "answers": datasets.List(datasets.List(datasets.Value("string"))),
        }
        if self.config_name == "batches":
            references["batch"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.List(datasets.Value("string")),
                    },
                    "references": references,
                }
            ),
            codebase_urls=["https://github.com/BioASQ/Evaluation-Measures"],
            reference_urls=["http://participants-area.bioasq.org/general_information/Task1b/"],
        )

    def _compute(self, predictions, references):
        predicted = {}
        for prediction in predictions:
            if prediction["id"] in predicted:
                raise ValueError(
                    f"predictions: question {prediction['id']!r} is given twice; give one row per question"
                )
            predicted[prediction["id"]] = prediction["prediction_text"]
        if self.config_name == "batches":
            by_batch = {}
            for reference in references:
                batch = by_batch.setdefault(reference["batch"], {})
                if reference["id"] in batch:
                    raise ValueError(f"references: question {reference['id']!r} is given twice")
                batch[reference["id"]] = reference["answers"]
            return flatten_scores(bioasq_factoid_batches(predicted, by_batch))
        gold = {}
        for reference in references:
            if reference["id"] in gold:
                raise ValueError(f"references: question {reference['id']!r} is given twice; give one row per question")
            gold[reference["id"]] = reference["answers"]
        return bioasq_factoid(predicted, gold)
