"""The official BioASQ factoid measures (strict accuracy, lenient accuracy, MRR) and their file formats.

Pure Python (standard library only), so that scoring never needs torch, datasets or evaluate.

Definitions follow the official evaluator (BioASQ ``Evaluation-Measures``, ``EvaluatorTask1b -phaseB``, challenge
versions 3 and later), with the two rules it leaves to the submitter made explicit:

* each question gets a ranked list of candidate answers, of which **only the first five count**
  (:data:`MAX_CANDIDATES`; the Java evaluator trusts the submission and does not cut the list);
* a candidate is either one string or a list of synonym strings (the submission format ``[["cand1"], ...]``);
  it **matches** when one of its strings equals one of the gold synonyms of the question (any inner list of
  ``exact_answer``) after stripping surrounding whitespace and lower-casing (the evaluator lower-cases both
  sides; we strip whitespace as well). Candidates that are empty after stripping are ignored and take no rank;
* **strict accuracy**: the first candidate matches; **lenient accuracy**: one of the candidates matches;
  **MRR**: mean over questions of 1/rank of the first matching candidate (0 if none);
* every question of the references counts; **a question without a prediction scores 0** (the Java evaluator
  fails instead, which is why :func:`to_submission` lists every golden question), and so does a question whose
  gold answers are all blank (one in the 4b golden files);
* predictions for question ids that are not in the references are **ignored** (as the evaluator ignores them)
  and only counted in ``num_unknown_predictions``, so that a wrong id format shows up instead of passing silently.

Test sets come in batches (five per BioASQ year); BioBERT and the BioMamba paper report the **macro average over
batches** (:func:`bioasq_factoid_batches`), which we give next to the micro average over all questions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CANDIDATES",
    "batch_name",
    "bioasq_factoid",
    "bioasq_factoid_batches",
    "clean_answer",
    "flatten_scores",
    "load_golden",
    "load_golden_batches",
    "load_predictions",
    "merge_candidates",
    "merge_nbest",
    "normalize_answer",
    "question_id",
    "question_scores",
    "read_golden_questions",
    "read_json",
    "to_submission",
    "write_submission",
]

#: Number of ranked candidates that count for a factoid question (BioASQ guidelines, since BioASQ 3).
MAX_CANDIDATES = 5

PathLike = str | os.PathLike[str]
#: One submitted answer: a string, or a list of synonym strings (BioASQ submission format).
Candidate = str | Sequence[str]

logger = logging.getLogger(__name__)

_METRIC_KEYS = ("strict_acc", "lenient_acc", "mrr")


# --------------------------------------------------------------------------------------------------------------------
# Matching and scoring
# --------------------------------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """The form in which answers are compared: surrounding whitespace stripped, lower-cased.

    >>> normalize_answer("  Factor Xa ")
    'factor xa'
    """
    return text.strip().lower()


def _candidate_strings(candidate: Any, where: str) -> list[str]:
    if isinstance(candidate, str):
        return [candidate]
    if isinstance(candidate, Sequence) and all(isinstance(s, str) for s in candidate):
        return list(candidate)
    raise ValueError(
        f"{where} must be a string or a list of synonym strings, got {candidate!r}; "
        'write candidates as ["answer 1", "answer 2"] or [["answer 1", "synonym"], ["answer 2"]]'
    )


def _ranked_candidates(candidates: Any, qid: str) -> list[set[str]]:
    """Normalised synonym sets of the first MAX_CANDIDATES non-empty candidates of one question."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise ValueError(
            f"predictions[{qid!r}] must be a ranked list of candidate answers, got {type(candidates).__name__} "
            f"{candidates!r}; wrap a single answer in a list: [{candidates!r}]"
        )
    ranked = []
    for rank, candidate in enumerate(candidates):
        strings = {normalize_answer(s) for s in _candidate_strings(candidate, f"predictions[{qid!r}][{rank}]")}
        strings.discard("")
        if strings:
            ranked.append(strings)
        if len(ranked) == MAX_CANDIDATES:
            break
    return ranked


def _gold_synonyms(answers: Any, qid: str) -> set[str]:
    """All normalised gold synonyms of one question; accepts ``[["a", "b"], ["c"]]`` or a flat ``["a", "b"]``."""
    where = f"references[{qid!r}]"
    if isinstance(answers, str) or not isinstance(answers, Sequence):
        raise ValueError(
            f'{where} must be a list of synonym lists as in BioASQ exact_answer (e.g. [["Factor Xa", "FXa"]]), '
            f"got {answers!r}"
        )
    synonyms = set()
    for i, answer in enumerate(answers):
        synonyms.update(normalize_answer(s) for s in _candidate_strings(answer, f"{where}[{i}]"))
    synonyms.discard("")  # a question whose gold answers are all blank can only score 0
    return synonyms


def _score(ranked: list[set[str]], gold: set[str]) -> tuple[float, float, float]:
    for rank, strings in enumerate(ranked, start=1):
        if strings & gold:
            return (1.0 if rank == 1 else 0.0), 1.0, 1.0 / rank
    return 0.0, 0.0, 0.0


def _check_mapping(value: Any, name: str) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a dict keyed by BioASQ question id, got {type(value).__name__}")


def question_scores(
    predictions: Mapping[str, Sequence[Candidate]], references: Mapping[str, Sequence[Any]]
) -> dict[str, dict[str, float]]:
    """Per-question ``strict_acc``, ``lenient_acc`` and ``mrr`` (reciprocal rank) for every reference question.

    The building block of :func:`bioasq_factoid`, useful for error analysis.

    >>> question_scores({"q1": ["IL-6", "tnf"]}, {"q1": [["TNF", "TNF-alpha"]], "q2": [["BRCA1"]]})
    {'q1': {'strict_acc': 0.0, 'lenient_acc': 1.0, 'mrr': 0.5}, 'q2': {'strict_acc': 0.0, 'lenient_acc': 0.0, 'mrr': 0.0}}
    """
    _check_mapping(predictions, "predictions")
    _check_mapping(references, "references")
    scores = {}
    for qid, answers in references.items():
        gold = _gold_synonyms(answers, qid)
        ranked = _ranked_candidates(predictions[qid], qid) if qid in predictions else []
        scores[qid] = dict(zip(_METRIC_KEYS, _score(ranked, gold)))
    return scores


def _aggregate(scores: Mapping[str, Mapping[str, float]], num_answered: int) -> dict[str, Any]:
    n = len(scores)
    result: dict[str, Any] = {key: math.fsum(s[key] for s in scores.values()) / n for key in _METRIC_KEYS}
    result["num_questions"] = n
    result["num_answered"] = num_answered
    return result


def _num_answered(predictions: Mapping[str, Sequence[Candidate]], question_ids: Iterable[str]) -> int:
    return sum(1 for qid in question_ids if _ranked_candidates(predictions.get(qid, []), qid))


def bioasq_factoid(
    predictions: Mapping[str, Sequence[Candidate]], references: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """Official BioASQ factoid scores of ranked predictions against gold synonym lists.

    Args:
        predictions: question id -> ranked candidate answers (strings, or lists of synonym strings). Only the first
            :data:`MAX_CANDIDATES` non-empty candidates count.
        references: question id -> gold answers as in BioASQ ``exact_answer``: a list of synonym lists
            (``[["Factor Xa", "FXa"]]``); a candidate matching any synonym of any inner list is correct.

    Returns:
        ``strict_acc``, ``lenient_acc``, ``mrr`` (fractions in [0, 1]), ``num_questions`` (= len(references): a
        question without a prediction scores 0), ``num_answered`` (reference questions with at least one
        candidate) and ``num_unknown_predictions`` (prediction ids not in the references; ignored).

    >>> references = {"q1": [["BRCA1"]], "q2": [["Factor Xa", "FXa"]], "q3": [["coilin"]]}
    >>> predictions = {"q1": ["brca1 ", "BRCA2"], "q2": ["thrombin", "fxa"], "q9": ["ignored"]}
    >>> scores = bioasq_factoid(predictions, references)
    >>> scores["strict_acc"], scores["lenient_acc"], scores["mrr"]
    (0.3333333333333333, 0.6666666666666666, 0.5)
    >>> scores["num_questions"], scores["num_answered"], scores["num_unknown_predictions"]
    (3, 2, 1)

    A correct answer in sixth place does not count:

    >>> bioasq_factoid({"q1": ["a", "b", "c", "d", "e", "BRCA1"]}, {"q1": [["BRCA1"]]})["lenient_acc"]
    0.0
    """
    scores = question_scores(predictions, references)
    if not scores:
        raise ValueError("references is empty: there is no question to score")
    result = _aggregate(scores, _num_answered(predictions, scores))
    result["num_unknown_predictions"] = sum(1 for qid in predictions if qid not in references)
    return result


def bioasq_factoid_batches(
    predictions: Mapping[str, Sequence[Candidate]], references_by_batch: Mapping[str, Mapping[str, Sequence[Any]]]
) -> dict[str, Any]:
    """Per-batch scores, their macro average over batches (as BioBERT and the paper report) and the micro average.

    Args:
        predictions: question id -> ranked candidates, for the questions of all batches.
        references_by_batch: batch name (e.g. ``"4b-1"``) -> references of that batch (see :func:`bioasq_factoid`).
            Question ids must be unique across batches.

    Returns:
        ``{"batches": {name: scores}, "macro": {...}, "micro": {...}, "num_unknown_predictions": int}`` where each
        scores dict has ``strict_acc``, ``lenient_acc``, ``mrr``, ``num_questions`` and ``num_answered``; ``macro``
        also has ``num_batches``. Use :func:`flatten_scores` for a flat dict (``all_results.json``).

    >>> refs = {"4b-1": {"a": [["x"]], "b": [["y"]]}, "4b-2": {"c": [["z"]]}}
    >>> out = bioasq_factoid_batches({"a": ["x"], "c": ["z"]}, refs)
    >>> out["batches"]["4b-1"]["strict_acc"], out["batches"]["4b-2"]["strict_acc"]
    (0.5, 1.0)
    >>> out["macro"]["strict_acc"], out["micro"]["strict_acc"]
    (0.75, 0.6666666666666666)
    """
    _check_mapping(predictions, "predictions")
    _check_mapping(references_by_batch, "references_by_batch")
    if not references_by_batch:
        raise ValueError("references_by_batch is empty: there is no batch to score")
    seen: dict[str, str] = {}
    batches = {}
    all_scores: dict[str, dict[str, float]] = {}
    for batch, references in references_by_batch.items():
        _check_mapping(references, f"references_by_batch[{batch!r}]")
        if not references:
            raise ValueError(f"references_by_batch[{batch!r}] is empty: remove the batch or give its questions")
        for qid in references:
            if qid in seen:
                raise ValueError(
                    f"question {qid!r} is in both batch {seen[qid]!r} and batch {batch!r}: "
                    "each question must belong to exactly one batch"
                )
            seen[qid] = batch
        scores = question_scores(predictions, references)
        batches[batch] = _aggregate(scores, _num_answered(predictions, scores))
        all_scores.update(scores)
    macro: dict[str, Any] = {key: math.fsum(b[key] for b in batches.values()) / len(batches) for key in _METRIC_KEYS}
    macro["num_batches"] = len(batches)
    macro["num_questions"] = len(all_scores)
    macro["num_answered"] = sum(b["num_answered"] for b in batches.values())
    return {
        "batches": batches,
        "macro": macro,
        "micro": _aggregate(all_scores, macro["num_answered"]),
        "num_unknown_predictions": sum(1 for qid in predictions if qid not in seen),
    }


def flatten_scores(result: Mapping[str, Any], prefix: str = "", sep: str = "_") -> dict[str, Any]:
    """Flatten the nested output of :func:`bioasq_factoid_batches` into ``{"macro_mrr": ..., "4b-1_mrr": ...}``.

    >>> flatten_scores({"macro": {"mrr": 0.5}, "batches": {"4b-1": {"mrr": 0.5}}, "num_unknown_predictions": 0}, "eval_")
    {'eval_macro_mrr': 0.5, 'eval_4b-1_mrr': 0.5, 'eval_num_unknown_predictions': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if key == "batches":
            flat.update(flatten_scores(value, prefix, sep))
        elif isinstance(value, Mapping):
            flat.update(flatten_scores(value, f"{prefix}{key}{sep}", sep))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --------------------------------------------------------------------------------------------------------------------
# Merging per-context candidates into one ranked list per question
# --------------------------------------------------------------------------------------------------------------------

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


def clean_answer(text: str) -> str:
    """Tidy a predicted span before it becomes a candidate (adapted from BioBERT's ``textrip``).

    Strips whitespace and one trailing ``,`` or ``.``; removes parentheses that enclose the whole answer; returns
    ``""`` (the candidate is dropped) when parentheses are unbalanced, as a span cut through a parenthesis is.

    >>> clean_answer(" Factor Xa, ")
    'Factor Xa'
    >>> clean_answer("(FXa)")
    'FXa'
    >>> clean_answer("factor Xa (FXa")
    ''
    """
    text = text.strip()
    if text[-1:] in (",", "."):
        text = text[:-1].rstrip()
    if len(text) > 2 and text[0] == "(" and text[-1] == ")" and text.count("(") == 1 and text.count(")") == 1:
        text = text[1:-1].strip()
    if text.count("(") != text.count(")"):
        return ""
    return text


def merge_candidates(
    per_context: Iterable[Sequence[Any]],
    *,
    top_k: int = MAX_CANDIDATES,
    reduce: str = "sum",
    clean: bool = True,
    max_answer_chars: int = 100,
) -> dict[str, list[str]]:
    """Merge candidate answers from a question's several contexts into one ranked top-``top_k`` list.

    The rule is BioBERT's (``biocodes/transform_n2b_factoid.py`` of dmis-lab/bioasq-biobert):

    1. group the ``(id, text, score)`` triples by question id (:func:`question_id` of the SQuAD qa id);
    2. tidy each text with :func:`clean_answer` (if ``clean``) and drop empty texts and texts longer than
       ``max_answer_chars`` characters;
    3. dedupe case-insensitively (:func:`normalize_answer`): with ``reduce="sum"`` (BioBERT) the scores of one
       answer are added up, so an answer found in several contexts rises; with ``reduce="max"`` the best score is
       kept. The spelling shown is that of the highest-scored occurrence;
    4. sort by merged score, highest first (ties keep the order of first appearance), and keep ``top_k``.

    ``reduce="sum"`` needs probabilities (non-negative, e.g. the n-best ``probability``); use ``reduce="max"`` for
    logit scores.

    >>> merge_candidates([
    ...     ("q1_000", "Factor Xa", 0.5),
    ...     ("q1_001", "thrombin", 0.6),
    ...     ("q1_001", "factor Xa.", 0.3),
    ...     ("q2_000", "coilin", 0.9),
    ... ])
    {'q1': ['Factor Xa', 'thrombin'], 'q2': ['coilin']}
    >>> merge_candidates([("q1_000", "Factor Xa", 0.5), ("q1_001", "thrombin", 0.6), ("q1_001", "factor Xa", 0.3)],
    ...                  reduce="max")
    {'q1': ['thrombin', 'Factor Xa']}
    """
    if reduce not in ("sum", "max"):
        raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    items = []
    for position, item in enumerate(per_context):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 3:
            raise ValueError(f"per_context item {position} must be an (id, text, score) triple, got {item!r}")
        qa_id, text, score = item
        if not isinstance(qa_id, str) or not isinstance(text, str):
            raise ValueError(f"per_context item {position} ({qa_id!r}): id and text must be strings, got {item!r}")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"per_context item {position} ({qa_id!r}): score must be a finite number, got {score!r}")
        if reduce == "sum" and score < 0:
            raise ValueError(
                f"per_context item {position} ({qa_id!r}): score {score!r} is negative, but reduce='sum' adds up "
                "probabilities; pass probabilities or use reduce='max' for logits"
            )
        items.append((question_id(qa_id), text, float(score)))

    # Questions in order of first appearance; then highest score first (stable), so that the first occurrence of
    # an answer is its best-scored spelling.
    merged: dict[str, dict[str, list[Any]]] = {qid: {} for qid, _, _ in items}
    items.sort(key=lambda item: -item[2])
    for qid, text, score in items:
        answers = merged[qid]
        if clean:
            text = clean_answer(text)
        else:
            text = text.strip()
        if not text or len(text) > max_answer_chars:
            continue
        key = normalize_answer(text)
        if key in answers:
            if reduce == "sum":
                answers[key][1] += score
        else:
            answers[key] = [text, score, len(answers)]
    return {
        qid: [text for text, _, _ in sorted(answers.values(), key=lambda a: (-a[1], a[2]))[:top_k]]
        for qid, answers in merged.items()
    }


def merge_nbest(nbest: Mapping[str, Sequence[Mapping[str, Any]]], score_key: str = "probability", **kwargs: Any):
    """:func:`merge_candidates` over an n-best file (``{qa_id: [{"text": ..., "probability": ...}, ...]}``).

    That is the ``nbest_predictions.json`` layout written by BioBERT and by transformers' ``postprocess_qa_predictions``.

    >>> merge_nbest({"q1_000": [{"text": "BRCA1", "probability": 0.7}], "q1_001": [{"text": "BRCA2", "probability": 0.8}]})
    {'q1': ['BRCA2', 'BRCA1']}
    """
    _check_mapping(nbest, "nbest")
    triples = []
    for qa_id, entries in nbest.items():
        if isinstance(entries, (str, Mapping)) or not isinstance(entries, Sequence):
            raise ValueError(f"nbest[{qa_id!r}] must be a list of {{'text', {score_key!r}}} dicts, got {entries!r}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or "text" not in entry or score_key not in entry:
                raise ValueError(
                    f"nbest[{qa_id!r}][{i}] must be a dict with 'text' and {score_key!r} fields, got {entry!r}"
                )
            triples.append((qa_id, entry["text"], entry[score_key]))
    return merge_candidates(triples, **kwargs)


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


def _as_paths(paths: PathLike | Iterable[PathLike], name: str) -> list[Path]:
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
    for path in _as_paths(paths, "paths"):
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
    for path in _as_paths(paths, "paths"):
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
    _check_mapping(predictions, "predictions")
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_CANDIDATES:
        raise ValueError(
            f"top_k must be an int from 1 to {MAX_CANDIDATES} (BioASQ counts {MAX_CANDIDATES}), got {top_k!r}"
        )
    questions = []
    for qid in question_ids:
        exact_answer = []
        candidates = predictions.get(qid, [])
        _ranked_candidates(candidates, qid)  # validates the shape
        for rank, candidate in enumerate(candidates):
            strings = [s.strip() for s in _candidate_strings(candidate, f"predictions[{qid!r}][{rank}]")]
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
    path = Path(path)
    submission = to_submission(predictions, question_ids, top_k=top_k)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(submission, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return path
