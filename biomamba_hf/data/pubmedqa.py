"""PubMedQA (PQA-L): loading with the official 500-question test split, input encoding, accuracy and macro-F1.
Details: docs/modules.md.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..bioasq.formats import PathLike, read_json

__all__ = [
    "LABELS",
    "classification_metrics",
    "encode_pubmedqa",
    "load_pubmedqa",
    "read_pqal",
]

#: The answer classes, in label-id order.
LABELS = ("yes", "no", "maybe")
PQAL_FILE = "ori_pqal.json"
TEST_FILE = "test_ground_truth.json"


def _string(value: Any, path: Path, pmid: str, field: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: record {pmid!r}: field {field!r} must be a non-empty string, got {value!r}; {hint}")
    return value


def read_pqal(path: PathLike) -> list[dict[str, Any]]:
    """The records of ``ori_pqal.json`` as dicts ``{"pubid", "question", "contexts", "long_answer", "label"}``.

    Each record is validated: a missing or malformed field raises ``ValueError`` naming the file, the PMID and the
    field.

    >>> import json, pathlib, tempfile
    >>> record = {"QUESTION": "Does X help?", "CONTEXTS": ["It did."], "LONG_ANSWER": "Yes.", "final_decision": "yes"}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "ori_pqal.json"
    ...     _ = path.write_text(json.dumps({"123": record}))
    ...     read_pqal(path)
    [{'pubid': '123', 'question': 'Does X help?', 'contexts': ['It did.'], 'long_answer': 'Yes.', 'label': 'yes'}]
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"{path}: expected PubMedQA's ori_pqal.json, a JSON object mapping PMIDs to records, got "
            f"{type(data).__name__}{' (empty)' if isinstance(data, dict) else ''}"
        )
    records = []
    for pmid, record in data.items():
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {pmid!r} must be a JSON object, got {type(record).__name__}")
        question = _string(record.get("QUESTION"), path, pmid, "QUESTION", "every record needs its question")
        contexts = record.get("CONTEXTS")
        if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
            raise ValueError(
                f"{path}: record {pmid!r}: field 'CONTEXTS' must be a non-empty list of strings (the abstract's "
                f"sections), got {contexts!r:.100}"
            )
        label = record.get("final_decision")
        if label not in LABELS:
            raise ValueError(
                f"{path}: record {pmid!r}: field 'final_decision' must be one of {', '.join(LABELS)}, got {label!r}"
            )
        long_answer = record.get("LONG_ANSWER", "")
        if not isinstance(long_answer, str):
            raise ValueError(f"{path}: record {pmid!r}: field 'LONG_ANSWER' must be a string, got {long_answer!r}")
        records.append(
            {
                "pubid": str(pmid),
                "question": question.strip(),
                "contexts": [c.strip() for c in contexts if c.strip()],
                "long_answer": long_answer,
                "label": label,
            }
        )
    return records


def _read_test_ids(path: Path, labels: Mapping[str, str]) -> list[str]:
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(
            f"{path}: expected PubMedQA's test_ground_truth.json, a JSON object mapping PMIDs to answers, got "
            f"{type(data).__name__}"
        )
    for pmid, answer in data.items():
        if pmid not in labels:
            raise ValueError(
                f"{path}: test record {pmid!r} is not in {PQAL_FILE}; both files must come from the same PubMedQA "
                "release"
            )
        if answer != labels[pmid]:
            raise ValueError(
                f"{path}: test record {pmid!r}: answer {answer!r} differs from its final_decision "
                f"{labels[pmid]!r} in {PQAL_FILE}; both files must come from the same PubMedQA release"
            )
    return list(data)


def load_pubmedqa(directory: PathLike, *, dev_size: int = 50, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The PQA-L splits: ``{"train": [...], "validation": [...], "test": [...]}`` of :func:`read_pqal` records.

    ``test`` holds the official test PMIDs of ``test_ground_truth.json`` (500) in that file's order; the other
    records are shuffled with ``seed`` and the first ``dev_size`` become ``validation``, the rest ``train``.
    """
    directory = Path(directory)
    pqal_path, test_path = directory / PQAL_FILE, directory / TEST_FILE
    for path in (pqal_path, test_path):
        if not path.is_file():
            raise ValueError(
                f"{directory}: {path.name} not found; a PubMedQA folder holds {PQAL_FILE} and {TEST_FILE} (from "
                "pubmedqa/pubmedqa, data/)"
            )
    records = read_pqal(pqal_path)
    by_id = {r["pubid"]: r for r in records}
    test_ids = _read_test_ids(test_path, {r["pubid"]: r["label"] for r in records})
    test_set = set(test_ids)
    rest = [r for r in records if r["pubid"] not in test_set]
    if not 0 <= dev_size < len(rest):
        raise ValueError(
            f"dev_size={dev_size} must leave training data: use a value from 0 to {len(rest) - 1} "
            f"({len(rest)} records are outside the test split)"
        )
    random.Random(seed).shuffle(rest)
    return {"train": rest[dev_size:], "validation": rest[:dev_size], "test": [by_id[i] for i in test_ids]}


def encode_pubmedqa(
    tokenizer,
    question: str,
    contexts: Sequence[str],
    *,
    max_seq_length: int = 512,
    max_question_length: int = 64,
) -> list[int]:
    """Token ids of ``question <sep> contexts`` with at most ``max_seq_length`` tokens; the question stays whole.

    Contexts are joined with spaces and cut at the end. The tokenizer needs a separator token
    (:func:`biomamba_hf.prepare_tokenizer_for_qa` gives it one).
    """
    if tokenizer.sep_token_id is None:
        raise ValueError(
            "The tokenizer has no separator token: call biomamba_hf.prepare_tokenizer_for_qa(tokenizer, model) first."
        )
    question_ids = tokenizer(question, add_special_tokens=False)["input_ids"][:max_question_length]
    budget = max_seq_length - len(question_ids) - 1
    if budget < 1:
        raise ValueError(
            f"max_seq_length={max_seq_length} leaves no room for context after a question of {len(question_ids)} "
            "tokens; raise max_seq_length or lower max_question_length"
        )
    context_ids = tokenizer(" ".join(contexts), add_special_tokens=False)["input_ids"][:budget]
    return question_ids + [tokenizer.sep_token_id] + context_ids


def classification_metrics(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean of the per-class F1; a class never predicted nor present counts 0).

    >>> classification_metrics([0, 0, 1, 2], [0, 1, 1, 2], num_labels=3)
    {'accuracy': 0.75, 'macro_f1': 0.7777777777777777}
    """
    predictions, references = [int(p) for p in predictions], [int(r) for r in references]
    if len(predictions) != len(references) or not references:
        raise ValueError(
            f"got {len(predictions)} predictions for {len(references)} references; pass one prediction per example"
        )
    for value in predictions + references:
        if not 0 <= value < num_labels:
            raise ValueError(f"label {value} is outside 0..{num_labels - 1}")
    correct = sum(p == r for p, r in zip(predictions, references))
    f1s = []
    for label in range(num_labels):
        tp = sum(p == label and r == label for p, r in zip(predictions, references))
        predicted = sum(p == label for p in predictions)
        actual = sum(r == label for r in references)
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return {"accuracy": correct / len(references), "macro_f1": sum(f1s) / num_labels}
