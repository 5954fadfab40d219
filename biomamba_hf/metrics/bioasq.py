"""The official BioASQ factoid measures (strict accuracy, lenient accuracy, MRR), standard library only.
Definitions and the rules made explicit: docs/modules.md and the metric card (``bioasq_factoid/README.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..bioasq.formats import (
    MAX_CANDIDATES,
    Candidate,
    candidate_strings,
    check_mapping,
    question_id,
    ranked_candidates,
)

__all__ = [
    "bioasq_factoid",
    "bioasq_factoid_batches",
    "clean_answer",
    "flatten_scores",
    "merge_candidates",
    "merge_nbest",
    "normalize_answer",
    "question_scores",
]

_METRIC_KEYS = ("strict_acc", "lenient_acc", "mrr")


# --------------------------------------------------------------------------------------------------------------------
# Matching and scoring
# --------------------------------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """The form in which answers are compared: lower-cased, whitespace kept (as the official evaluator does).

    The evaluator lower-cases candidates and gold answers with Java's ``String.toLowerCase`` (``Task1bData.java:294``)
    and compares them with ``String.equals`` (``ExactAnswer.java:81``); it never strips whitespace.

    >>> normalize_answer(" Factor Xa")
    ' factor xa'
    """
    return text.lower()


def _ranked_candidates(candidates: Any, qid: str) -> list[str]:
    """Normalised texts of the first MAX_CANDIDATES candidates of one question (``[]`` items take no rank)."""
    return [normalize_answer(text) for text in ranked_candidates(candidates, qid)[:MAX_CANDIDATES]]


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
        synonyms.update(normalize_answer(s) for s in candidate_strings(answer, f"{where}[{i}]"))
    return synonyms


def _score(ranked: list[str], gold: set[str]) -> tuple[float, float, float]:
    for rank, text in enumerate(ranked, start=1):
        if text in gold:
            return (1.0 if rank == 1 else 0.0), 1.0, 1.0 / rank
    return 0.0, 0.0, 0.0


def question_scores(
    predictions: Mapping[str, Sequence[Candidate]], references: Mapping[str, Sequence[Any]]
) -> dict[str, dict[str, float]]:
    """Per-question ``strict_acc``, ``lenient_acc`` and ``mrr`` (reciprocal rank) for every reference question.

    The building block of :func:`bioasq_factoid`, useful for error analysis.

    >>> question_scores({"q1": ["IL-6", "tnf"]}, {"q1": [["TNF", "TNF-alpha"]], "q2": [["BRCA1"]]})
    {'q1': {'strict_acc': 0.0, 'lenient_acc': 1.0, 'mrr': 0.5}, 'q2': {'strict_acc': 0.0, 'lenient_acc': 0.0, 'mrr': 0.0}}
    """
    check_mapping(predictions, "predictions")
    check_mapping(references, "references")
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
        predictions: question id -> ranked candidate answers (strings, or the submission form ``["text"]``; ``[]``
            takes no rank). Only the first :data:`MAX_CANDIDATES` count; blank candidates take a rank.
        references: question id -> gold answers as in BioASQ ``exact_answer``: a list of synonym lists
            (``[["Factor Xa", "FXa"]]``); a candidate matching any synonym of any inner list is correct.

    Returns:
        ``strict_acc``, ``lenient_acc``, ``mrr`` (fractions in [0, 1]), ``num_questions`` (= len(references): a
        question without a prediction scores 0), ``num_answered`` (reference questions with at least one
        candidate) and ``num_unknown_predictions`` (prediction ids not in the references; ignored).

    >>> references = {"q1": [["BRCA1"]], "q2": [["Factor Xa", "FXa"]], "q3": [["coilin"]]}
    >>> predictions = {"q1": ["brca1", "BRCA2"], "q2": ["thrombin", "fxa"], "q9": ["ignored"]}
    >>> scores = bioasq_factoid(predictions, references)
    >>> scores["strict_acc"], scores["lenient_acc"], scores["mrr"]
    (0.3333333333333333, 0.6666666666666666, 0.5)

    Whitespace is compared as written (as the official evaluator does): ``"brca1 "`` is not ``"BRCA1"``.

    >>> bioasq_factoid({"q1": ["brca1 "]}, {"q1": [["BRCA1"]]})["strict_acc"]
    0.0
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
    check_mapping(predictions, "predictions")
    check_mapping(references_by_batch, "references_by_batch")
    if not references_by_batch:
        raise ValueError("references_by_batch is empty: there is no batch to score")
    seen: dict[str, str] = {}
    batches = {}
    all_scores: dict[str, dict[str, float]] = {}
    for batch, references in references_by_batch.items():
        check_mapping(references, f"references_by_batch[{batch!r}]")
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
    check_mapping(nbest, "nbest")
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
