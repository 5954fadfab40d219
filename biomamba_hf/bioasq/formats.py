"""BioASQ file formats, standard library only: test, golden and submission JSON, candidate lists, batch names."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CANDIDATES",
    "as_paths",
    "batch_name",
    "candidate_strings",
    "check_candidates",
    "check_mapping",
    "load_golden",
    "load_golden_batches",
    "load_predictions",
    "question_id",
    "read_golden_questions",
    "read_json",
    "to_submission",
    "write_json",
    "write_submission",
]

#: Number of ranked candidates that count for a factoid question (BioASQ guidelines, since BioASQ 3).
MAX_CANDIDATES = 5

PathLike = str | os.PathLike[str]
#: One submitted answer: a string, or a list of synonym strings (BioASQ submission format).
Candidate = str | Sequence[str]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Candidates and question ids
# --------------------------------------------------------------------------------------------------------------------


def check_mapping(value: Any, name: str) -> None:
    """Refuse a ``value`` that is not a dict keyed by BioASQ question id."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a dict keyed by BioASQ question id, got {type(value).__name__}")


def candidate_strings(candidate: Any, where: str) -> list[str]:
    """The strings of one candidate: a string, or a list of synonym strings (``where`` names it in errors)."""
    if isinstance(candidate, str):
        return [candidate]
    if isinstance(candidate, Sequence) and all(isinstance(s, str) for s in candidate):
        return list(candidate)
    raise ValueError(
        f"{where} must be a string or a list of synonym strings, got {candidate!r}; "
        'write candidates as ["answer 1", "answer 2"] or [["answer 1", "synonym"], ["answer 2"]]'
    )


def check_candidates(candidates: Any, qid: str) -> None:
    """Refuse ``candidates`` of question ``qid`` unless they are a ranked list (not a bare string)."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise ValueError(
            f"predictions[{qid!r}] must be a ranked list of candidate answers, got {type(candidates).__name__} "
            f"{candidates!r}; wrap a single answer in a list: [{candidates!r}]"
        )


_QA_ID_SUFFIX = re.compile(r"^(.+)_(\d+)$")


def question_id(qa_id: str) -> str:
    """The BioASQ question id of a SQuAD qa id: the part before a final ``_<digits>`` suffix.

    BioBERT's qa ids are ``"<24-hex question id>_<nnn>"`` (one per context); an id without such a suffix is
    already a question id.

    >>> question_id("56c073fcef6e394741000020_003")
    '56c073fcef6e394741000020'
    >>> question_id("56c073fcef6e394741000020")
    '56c073fcef6e394741000020'
    """
    match = _QA_ID_SUFFIX.match(qa_id)
    return match.group(1) if match else qa_id


# --------------------------------------------------------------------------------------------------------------------
# Files: golden answers, predictions, submissions
# --------------------------------------------------------------------------------------------------------------------


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; a malformed file raises ``ValueError`` naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def write_json(path: PathLike, value: Any) -> Path:
    """Write ``value`` to ``path`` as indented UTF-8 JSON (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return path


_TEST_FILE = re.compile(r"^BioASQ-(?:test|train)-factoid-(.+)$", re.IGNORECASE)
_GOLDEN_FILE = re.compile(r"^(\d+)B(\d*)_golden$", re.IGNORECASE)


def batch_name(path: PathLike) -> str:
    """The batch a BioASQ file belongs to, from its name; golden and SQuAD files of one batch give the same name.

    >>> batch_name("4b/test/BioASQ-test-factoid-4b-1.json"), batch_name("4b/golden/4B1_golden.json")
    ('4b-1', '4b-1')
    >>> batch_name("BioASQ-test-factoid-7b.json"), batch_name("7B_golden.json"), batch_name("dev.json")
    ('7b', '7b', 'dev')
    """
    stem = Path(path).stem
    match = _TEST_FILE.match(stem)
    if match:
        return match.group(1)
    match = _GOLDEN_FILE.match(stem)
    if match:
        year, number = match.groups()
        return f"{year}b-{number}" if number else f"{year}b"
    return stem


def as_paths(paths: PathLike | Iterable[PathLike], name: str) -> list[Path]:
    """One path or several as a non-empty list of ``Path`` (``name`` is the argument named in the error)."""
    if isinstance(paths, (str, os.PathLike)):
        result = [Path(paths)]
    else:
        result = [Path(p) for p in paths]
    if not result:
        raise ValueError(f"{name} is empty: give at least one file")
    return result


def _string_lists(value: Any) -> list[list[str]] | None:
    """``exact_answer`` as a list of synonym lists, or None when it has another shape."""
    if not isinstance(value, list):
        return None
    if all(isinstance(s, str) for s in value):  # a flat list: the synonyms of one answer
        return [list(value)]
    if all(isinstance(a, list) and a and all(isinstance(s, str) for s in a) for a in value):
        return [list(a) for a in value]
    return None


def read_golden_questions(path: PathLike, question_types: Iterable[str] | None = ("factoid",)) -> list[dict]:
    """The questions of one BioASQ golden/training JSON file, validated, keeping those of ``question_types``.

    Checks the ``questions`` list, each question's ``id`` and ``type``, and for factoid and list questions the
    ``exact_answer`` (a list of synonym lists; a flat list of strings is read as one answer's synonyms); a bad
    record raises ``ValueError`` naming the file, the question id and the field. A question whose gold answers
    are all blank is kept with a logged warning (it scores 0). ``question_types=None`` keeps every question.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError(
            f"{path}: expected a BioASQ JSON object with a 'questions' list (golden/training format), "
            f"got {type(data).__name__}{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}"
        )
    types = None if question_types is None else set(question_types)
    questions = []
    for i, question in enumerate(data["questions"]):
        if not isinstance(question, dict):
            raise ValueError(f"{path}: questions[{i}] must be a JSON object, got {type(question).__name__}")
        qid = question.get("id")
        if not isinstance(qid, str) or not qid.strip():
            raise ValueError(
                f"{path}: questions[{i}] has no string 'id' field (got {qid!r}); every question needs one"
            )
        qtype = question.get("type")
        if not isinstance(qtype, str):
            raise ValueError(
                f"{path}: question {qid!r} (questions[{i}]): field 'type' must be one of "
                f"'factoid', 'list', 'yesno', 'summary', got {qtype!r}"
            )
        if types is not None and qtype not in types:
            continue
        if qtype in ("factoid", "list"):
            answers = _string_lists(question.get("exact_answer"))
            if answers is None:
                raise ValueError(
                    f"{path}: question {qid!r} (questions[{i}]): field 'exact_answer' must be a list of synonym "
                    f'lists such as [["Factor Xa", "FXa"]], got {question.get("exact_answer")!r}'
                )
            if not any(s.strip() for a in answers for s in a):
                # Real golden files have such questions (4B5 has [[" "]]); they count, and can only score 0.
                logger.warning(
                    "%s: question %r has no non-blank gold answer (exact_answer=%r); it counts and scores 0",
                    path,
                    qid,
                    question.get("exact_answer"),
                )
            question = {**question, "exact_answer": answers}
        questions.append(question)
    return questions


def load_golden(paths: PathLike | Iterable[PathLike], question_types: Iterable[str] = ("factoid",)) -> dict:
    """References ``{question id: exact_answer synonym lists}`` from one or more BioASQ golden files.

    Only factoid questions by default (``question_types`` selects others with a list ``exact_answer``). Question ids
    must be unique across the files.
    """
    question_types = tuple(question_types)
    if not set(question_types) <= {"factoid", "list"}:
        raise ValueError(
            f"question_types must be among 'factoid' and 'list' (they have exact answers), got {question_types}"
        )
    references: dict[str, list[list[str]]] = {}
    origin: dict[str, Path] = {}
    for path in as_paths(paths, "paths"):
        for question in read_golden_questions(path, question_types):
            qid = question["id"]
            if qid in references:
                raise ValueError(f"{path}: question {qid!r} is also in {origin[qid]}; question ids must be unique")
            references[qid] = question["exact_answer"]
            origin[qid] = path
    return references


def load_golden_batches(paths: PathLike | Iterable[PathLike], question_types: Iterable[str] = ("factoid",)) -> dict:
    """``{batch name: references}`` with one batch per golden file, named by :func:`batch_name` (``4B1`` -> ``4b-1``)."""
    batches: dict[str, dict] = {}
    for path in as_paths(paths, "paths"):
        name = batch_name(path)
        if name in batches:
            raise ValueError(f"{path}: batch {name!r} is given twice; pass each golden file once")
        batches[name] = load_golden(path, question_types)
    seen: dict[str, str] = {}
    for name, references in batches.items():
        for qid in references:
            if qid in seen:
                raise ValueError(f"question {qid!r} is in batch {seen[qid]!r} and batch {name!r}; ids must be unique")
            seen[qid] = name
    return batches


def _is_candidate_list(answer) -> bool:
    """A ranked list of candidates, each a string or a list of synonym strings."""
    return isinstance(answer, list) and all(
        isinstance(c, str) or (isinstance(c, list) and all(isinstance(s, str) for s in c)) for c in answer
    )


def load_predictions(path: PathLike) -> dict[str, list[Candidate]]:
    """Read predictions: our ``{question id: [answer, ...]}`` JSON or a BioASQ submission ``{"questions": [...]}``.

    In a submission, each ``exact_answer`` item is one candidate (a list of synonyms) and non-factoid questions
    are skipped. A bare string value in our format is read as a single candidate.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object, either {{question id: [answers]}} or a BioASQ submission "
            f"{{'questions': [...]}}, got {type(data).__name__}"
        )
    predictions: dict[str, list[Candidate]] = {}
    if isinstance(data.get("questions"), list):
        for i, question in enumerate(data["questions"]):
            if not isinstance(question, dict) or not isinstance(question.get("id"), str):
                raise ValueError(
                    f"{path}: questions[{i}] must be an object with a string 'id' field, got {question!r}"
                )
            qid = question["id"]
            if question.get("type", "factoid") != "factoid":
                continue
            if qid in predictions:
                raise ValueError(f"{path}: question {qid!r} (questions[{i}]) is listed twice; list each question once")
            answer = question.get("exact_answer", [])
            if not _is_candidate_list(answer):
                raise ValueError(
                    f"{path}: question {qid!r} (questions[{i}]): field 'exact_answer' must be a list of candidates "
                    f'such as [["cand1"], ["cand2"]], got {answer!r}'
                )
            predictions[qid] = answer
        return predictions
    for qid, answer in data.items():
        if isinstance(answer, str):
            answer = [answer]
        if not _is_candidate_list(answer):
            raise ValueError(
                f"{path}: question {qid!r}: the value must be a ranked list of answer strings such as "
                f'["cand1", "cand2"], got {answer!r}'
            )
        predictions[qid] = answer
    return predictions


def to_submission(
    predictions: Mapping[str, Sequence[Candidate]], question_ids: Iterable[str], top_k: int = MAX_CANDIDATES
) -> dict[str, list[dict[str, Any]]]:
    """Predictions in the BioASQ submission JSON format, listing every question of ``question_ids``.

    The official evaluator fails on a golden question missing from the submission and does not cut candidate
    lists, so every question is written (with an empty ``exact_answer`` when there is no prediction) with at most
    ``top_k`` non-empty candidates, each as a synonym list. Pass the references (or their keys) as
    ``question_ids``; predictions for other ids are not written.

    >>> to_submission({"q1": ["BRCA1", " ", "BRCA2"], "q9": ["x"]}, ["q1", "q2"])
    {'questions': [{'id': 'q1', 'type': 'factoid', 'exact_answer': [['BRCA1'], ['BRCA2']]}, {'id': 'q2', 'type': 'factoid', 'exact_answer': []}]}
    """
    check_mapping(predictions, "predictions")
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_CANDIDATES:
        raise ValueError(
            f"top_k must be an int from 1 to {MAX_CANDIDATES} (BioASQ counts {MAX_CANDIDATES}), got {top_k!r}"
        )
    questions = []
    for qid in question_ids:
        exact_answer = []
        candidates = predictions.get(qid, [])
        check_candidates(candidates, qid)
        for rank, candidate in enumerate(candidates):
            strings = [s.strip() for s in candidate_strings(candidate, f"predictions[{qid!r}][{rank}]")]
            strings = [s for s in strings if s]
            if strings:
                exact_answer.append(strings)
            if len(exact_answer) == top_k:
                break
        questions.append({"id": qid, "type": "factoid", "exact_answer": exact_answer})
    return {"questions": questions}


def write_submission(
    path: PathLike,
    predictions: Mapping[str, Sequence[Candidate]],
    question_ids: Iterable[str],
    top_k: int = MAX_CANDIDATES,
) -> Path:
    """Write :func:`to_submission` to ``path`` (UTF-8 JSON) and return the path."""
    return write_json(path, to_submission(predictions, question_ids, top_k=top_k))
