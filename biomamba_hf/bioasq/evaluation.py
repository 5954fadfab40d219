"""BioASQ test sets: load a test-set folder, merge per-context n-best answers per question, score, write files.

A question's top 5 follows BioBERT's rule (:func:`biomamba_hf.metrics.merge_candidates`): each context gives its
n-best spans with probabilities, which are tidied, summed per question case-insensitively and ranked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..metrics.bioasq import bioasq_factoid_batches, flatten_scores, merge_nbest
from .formats import (
    MAX_CANDIDATES,
    PathLike,
    batch_name,
    read_golden_batches,
    write_json,
    write_submission,
)
from .squad import read_squad_bioasq

__all__ = [
    "TestBatch",
    "check_disjoint",
    "find_test_batches",
    "load_test_references",
    "load_test_set",
    "merge_question_predictions",
    "read_test_set",
    "score_test_set",
    "test_set_name",
    "write_prediction_files",
]


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TestBatch:
    """One test batch: its name, BioBERT's SQuAD-format test file and the official golden file."""

    __test__ = False  # not a pytest test class

    name: str
    squad_path: Path
    golden_path: Path


def find_test_batches(directory: PathLike) -> list[TestBatch]:
    """The batches of a test-set folder, pairing ``test/BioASQ-test-factoid-<batch>.json`` with its golden file.

    The folder holds ``test/`` (SQuAD-format files) and ``golden/`` (``*_golden.json``); files pair by
    :func:`~biomamba_hf.bioasq.formats.batch_name` (``BioASQ-test-factoid-4b-3.json`` with ``4B3_golden.json``).
    """
    directory = Path(directory)
    test_dir, golden_dir = directory / "test", directory / "golden"
    if not test_dir.is_dir() or not golden_dir.is_dir():
        raise ValueError(
            f"{directory}: a BioASQ test-set folder needs 'test/' (BioASQ-test-factoid-*.json) and 'golden/' "
            "(*_golden.json) subfolders"
        )
    golden = {batch_name(p): p for p in sorted(golden_dir.glob("*_golden.json"))}
    tests = sorted(test_dir.glob("BioASQ-test-factoid-*.json"))
    if not tests:
        raise ValueError(f"{test_dir}: no BioASQ-test-factoid-*.json file")
    batches = []
    for path in tests:
        name = batch_name(path)
        if name not in golden:
            raise ValueError(
                f"{path}: no golden file for batch {name!r} in {golden_dir} (found batches: {sorted(golden) or 'none'}); "
                "add the batch's golden file, named like 4B1_golden.json for batch 4b-1"
            )
        batches.append(TestBatch(name, path, golden.pop(name)))
    return batches


def _check_pairing(batch: TestBatch, rows: Sequence[dict], references: dict) -> None:
    missing = sorted({row["question_id"] for row in rows} - set(references))
    if missing:
        raise ValueError(
            f"{batch.squad_path}: {len(missing)} question(s) of batch {batch.name!r} are not factoid questions of "
            f"{batch.golden_path} (first: {missing[0]!r}); is the golden file of the right batch?"
        )


def load_test_references(directory: PathLike) -> dict[str, dict[str, list[list[str]]]]:
    """``{batch: {question id: exact_answer}}`` for the test set in ``directory`` (see :func:`find_test_batches`).

    Each batch holds the factoid questions of its golden file; every question of its SQuAD test file must be
    among them (checked, to catch a golden file of another batch).
    """
    return read_test_set(directory)[1]


def read_test_set(
    directory: PathLike,
) -> tuple[list[dict], dict[str, dict[str, list[list[str]]]], list[dict[str, str]]]:
    """``(rows, references_by_batch, questions)`` of the test set in ``directory``, each file read once.

    ``rows`` are the rows to predict (all batches, :func:`~biomamba_hf.bioasq.squad.read_squad_bioasq` columns);
    ``references_by_batch`` the factoid references by batch, ready for :func:`score_test_set` after merging the
    predictions per question; ``questions`` ``[{"id", "type"}, ...]`` every question of the golden files (all types,
    batch by batch), what a submission must list for the official evaluator
    (:func:`~biomamba_hf.bioasq.formats.write_submission`).
    """
    batches = find_test_batches(directory)
    rows = read_squad_bioasq([b.squad_path for b in batches])
    by_name = {b.name: b for b in batches}

    def check_pairing(name: str, references: dict) -> None:
        _check_pairing(by_name[name], [row for row in rows if row["batch"] == name], references)

    golden = read_golden_batches([b.golden_path for b in batches], check=check_pairing)
    questions = [{"id": q["id"], "type": q["type"]} for batch in golden.questions.values() for q in batch]
    return rows, golden.references, questions


def load_test_set(directory: PathLike) -> tuple[list[dict], dict[str, dict[str, list[list[str]]]]]:
    """The rows to predict and the references by batch of :func:`read_test_set`."""
    rows, references_by_batch, _ = read_test_set(directory)
    return rows, references_by_batch


def check_disjoint(train_rows: Iterable[Mapping], test_question_ids: Mapping[str, str]) -> None:
    """Refuse training rows whose BioASQ question is a test question (``test_question_ids``: id -> test set)."""
    for row in train_rows:
        test_set = test_question_ids.get(row["question_id"])
        if test_set is not None:
            raise ValueError(
                f"training example {row['id']!r} (batch {row['batch']!r}) is question {row['question_id']!r} of the "
                f"test set {test_set!r}: training on test questions inflates the scores. Remove that golden/SQuAD "
                "file from the training files, or that folder from --test_dirs."
            )


def test_set_name(batch_names: Iterable[str]) -> str:
    """The name of a test set from its batches: ``["4b-1", ..., "4b-5"] -> "4b"``, ``["7b"] -> "7b"``.

    >>> test_set_name(["4b-1", "4b-2"]), test_set_name(["7b"])
    ('4b', '7b')
    """
    names = {name.split("-")[0] for name in batch_names}
    if len(names) != 1:
        raise ValueError(
            f"the batches {sorted(batch_names)} belong to several test sets ({sorted(names)}); put each BioASQ year "
            "in its own folder"
        )
    return names.pop()


def merge_question_predictions(
    nbest: Mapping[str, Sequence[Mapping[str, Any]]], question_ids: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Top-5 ranked answers per question from the n-best answers of its contexts (BioBERT's rule, below).

    Every id of ``question_ids`` is in the result, with an empty list when none of its contexts gave a candidate.

    >>> merge_question_predictions({"q1_000": [{"text": "BRCA1", "probability": 0.4}],
    ...                             "q1_001": [{"text": "BRCA2", "probability": 0.5}, {"text": "brca1", "probability": 0.2}]},
    ...                            ["q1", "q2"])
    {'q1': ['BRCA1', 'BRCA2'], 'q2': []}
    """
    merged = merge_nbest(nbest, score_key="probability", top_k=MAX_CANDIDATES, reduce="sum")
    for qid in question_ids:
        merged.setdefault(qid, [])
    return merged


def score_test_set(
    predictions: Mapping[str, Sequence[str]], references_by_batch: Mapping[str, Mapping[str, Any]], name: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """BioASQ scores of one test set: ``(nested, flat)``.

    ``nested`` is :func:`~biomamba_hf.metrics.bioasq_factoid_batches` (per batch, ``macro``, ``micro``); ``flat`` the
    numbers for ``all_results.json``: ``bioasq_<name>_strict_acc`` / ``_lenient_acc`` / ``_mrr`` are the averages
    over batches (what BioBERT and the paper report and the model card reads), ``bioasq_<name>_micro_*`` the averages
    over questions, plus ``bioasq_<name>_num_questions`` / ``_num_answered`` / ``_num_batches``.
    """
    nested = bioasq_factoid_batches(predictions, references_by_batch)
    prefix = f"bioasq_{name}_"
    flat = {prefix + key: value for key, value in nested["macro"].items()}
    flat.update(flatten_scores({"micro": nested["micro"]}, prefix))
    flat.pop(prefix + "micro_num_answered", None)
    flat.pop(prefix + "micro_num_questions", None)
    return nested, flat


def write_prediction_files(
    output_dir: str | os.PathLike,
    name: str,
    nbest: Mapping[str, Any],
    predictions: Mapping[str, Sequence[str]],
    question_ids: Iterable[str],
    per_batch: Mapping[str, Any] | None = None,
    prefix: str = "",
    questions: Iterable[Mapping[str, str]] | None = None,
) -> list[Path]:
    """Write ``predictions_<name>.json`` (question id -> top 5), ``nbest_predictions_<name>.json`` (per context),
    ``submission_<name>.json`` (BioASQ format) and, with ``per_batch``, ``bioasq_<name>_per_batch.json``.
    ``prefix`` is put in front of every file name (``initial_``).

    ``questions`` are the golden questions of every type (the third item of :func:`read_test_set`): the submission then lists
    them all, and the official evaluator accepts it unchanged against the golden file of each batch. Without them
    the submission lists the factoid ``question_ids`` only, which the evaluator refuses when the golden file has
    list or yes/no questions (a warning says how to complete it)."""
    output_dir = Path(output_dir)
    question_ids = list(question_ids)
    if questions is None:
        logger.warning(
            "%s lists only the %d factoid questions predicted; the official BioASQ evaluator needs every question "
            "of the golden file: biomamba-bioasq-eval %s --golden GOLDEN --write_submission OUT writes a complete one",
            output_dir / f"{prefix}submission_{name}.json",
            len(question_ids),
            output_dir / f"{prefix}predictions_{name}.json",
        )
    paths = [
        write_json(
            output_dir / f"{prefix}predictions_{name}.json", {q: list(predictions.get(q, [])) for q in question_ids}
        ),
        write_json(output_dir / f"{prefix}nbest_predictions_{name}.json", nbest),
        write_submission(
            output_dir / f"{prefix}submission_{name}.json",
            predictions,
            question_ids if questions is None else questions,
        ),
    ]
    if per_batch is not None:
        paths.append(write_json(output_dir / f"{prefix}bioasq_{name}_per_batch.json", per_batch))
    return paths
