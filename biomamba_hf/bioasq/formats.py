"""BioASQ file formats, standard library only: test, golden and submission JSON, candidate lists, batch names.

Submission files follow the official evaluator (github.com/BioASQ/Evaluation-Measures, ``EvaluatorTask1b -phaseB
-e 5``); its rules, with the Java lines they come from, are listed in the metric card
(``biomamba_hf/metrics/bioasq_factoid/README.md``). In short: :func:`write_submission` lists every question of
the golden files (the evaluator stops with a NullPointerException on a missing factoid, list or yes/no question),
writes each candidate as one string ``[["cand1"], ["cand2"]]`` exactly as predicted (the evaluator reads only the
first string of a candidate, lower-cases both sides and compares whitespace as written), at most five per
question, with ``\\u`` escapes (the evaluator reads files in the platform charset). :func:`load_predictions`
reads such files as the evaluator does, and refuses, naming file, question and field, what the evaluator would
crash on or read differently from what the file says, and files that are not predictions (golden files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CANDIDATES",
    "GoldenBatches",
    "as_paths",
    "batch_name",
    "candidate_strings",
    "candidate_text",
    "check_candidates",
    "check_mapping",
    "load_golden",
    "load_golden_batches",
    "load_predictions",
    "question_id",
    "question_types",
    "ranked_candidates",
    "read_golden_batches",
    "read_golden_questions",
    "read_json",
    "read_json_object",
    "to_submission",
    "write_json",
    "write_submission",
]

#: Number of ranked candidates that count for a factoid question (BioASQ guidelines, since BioASQ 3).
MAX_CANDIDATES = 5

PathLike = str | os.PathLike[str]
#: One submitted answer: a string, or the submission form ``[string]`` (a one-string list; ``[]`` is no answer).
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


def candidate_text(candidate: Any, where: str) -> str | None:
    """The text of one candidate answer, as the official evaluator reads it; ``None`` for ``[]`` (no candidate).

    A candidate is a string or a one-string list ``["text"]`` (the submission form). The text is kept as written:
    the evaluator compares whitespace exactly (``Task1bData.java:294``, ``ExactAnswer.java:81``). ``[]`` takes no
    rank (the evaluator skips it, ``Task1bData.java:360-369``). A list of several synonyms is refused: since
    BioASQ 5 (``-e 5``) the evaluator reads only the first string of a candidate (``Task1bData.java:169-170,
    354-376``), so the others would silently not count.

    >>> candidate_text(" Factor Xa", "c"), candidate_text(["FXa"], "c"), candidate_text([], "c")
    (' Factor Xa', 'FXa', None)
    """
    if isinstance(candidate, str):
        return candidate
    if isinstance(candidate, Sequence) and all(isinstance(s, str) for s in candidate):
        if not candidate:
            return None
        if len(candidate) == 1:
            return candidate[0]
        raise ValueError(
            f"{where} is a list of {len(candidate)} synonyms {list(candidate)!r}: since BioASQ 5 the official "
            "evaluator reads only the first string of a candidate, so the others would not count; give one string "
            f"per candidate, e.g. {candidate[0]!r} (or {[candidate[0]]!r} in a submission), and the synonyms as "
            "further candidates if they should take ranks"
        )
    raise ValueError(
        f'{where} must be a string or a one-string list such as ["answer"], got {candidate!r}; '
        'write candidates as ["answer 1", "answer 2"] or, in a submission, [["answer 1"], ["answer 2"]]'
    )


def ranked_candidates(candidates: Any, qid: str) -> list[str]:
    """The candidate texts of question ``qid`` in rank order (:func:`candidate_text`; ``[]`` items dropped).

    All of them: the scorer counts the first :data:`MAX_CANDIDATES`, the writer writes the first ``top_k``.

    >>> ranked_candidates(["BRCA1", [], [" brca2"], ""], "q1")
    ['BRCA1', ' brca2', '']
    """
    check_candidates(candidates, qid)
    texts = (candidate_text(c, f"predictions[{qid!r}][{rank}]") for rank, c in enumerate(candidates))
    return [text for text in texts if text is not None]


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


def read_json(path: PathLike, expected: type | None = None) -> Any:
    """Parse a JSON file; a malformed file raises ``ValueError`` naming the file, line and column, and so does a
    value that is not an ``expected`` (e.g. ``dict``) when that is given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        with path.open(encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if expected is not None and not isinstance(value, expected):
        raise ValueError(f"{path} should hold a JSON {expected.__name__}, got {type(value).__name__}")
    return value


def read_json_object(path: PathLike) -> dict | None:
    """:func:`read_json` of a JSON object, ``None`` where the file is missing, unreadable, malformed or no object."""
    try:
        return read_json(path, dict)
    except (OSError, ValueError):
        return None


def write_json(
    path: PathLike,
    value: Any,
    ensure_ascii: bool = False,
    *,
    sort_keys: bool = False,
    default: Any = None,
    atomic: bool = False,
) -> Path:
    """Write ``value`` to ``path`` as indented UTF-8 JSON (parent folders created) and return the path.

    ``ensure_ascii=True`` writes non-ASCII characters as ``\\u`` escapes (for readers that use the platform
    charset, such as the official BioASQ evaluator); ``sort_keys`` and ``default`` go to ``json.dump``.
    ``atomic=True`` writes a hidden ``.<name>.*.tmp`` file next to ``path``, flushes it to disk and renames it over
    ``path``, so a crash leaves the old file or the new one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not atomic:
        with path.open("w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, ensure_ascii=ensure_ascii, sort_keys=sort_keys, default=default)
            f.write("\n")
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, ensure_ascii=ensure_ascii, sort_keys=sort_keys, default=default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


#: (golden file, question id) pairs already warned about as having no non-blank gold answer.
_WARNED_BLANK: set[tuple[str, str]] = set()


def read_golden_questions(path: PathLike, question_types: Iterable[str] | None = ("factoid",)) -> list[dict]:
    """The questions of one BioASQ golden/training JSON file, validated, keeping those of ``question_types``.

    Checks the ``questions`` list, each question's ``id`` and ``type``, and for factoid and list questions the
    ``exact_answer`` (a list of synonym lists; a flat list of strings is read as one answer's synonyms); a bad
    record raises ``ValueError`` naming the file, the question id and the field. A question whose gold answers
    are all blank is kept with a logged warning. ``question_types=None`` keeps every question.
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
            if not any(s.strip() for a in answers for s in a) and (str(path), qid) not in _WARNED_BLANK:
                # Real golden files have such questions (4B5 has [[" "]]); they count, and as in the official
                # evaluator only an identical blank candidate matches them. Said once per file and question.
                _WARNED_BLANK.add((str(path), qid))
                logger.warning(
                    "%s: question %r has no non-blank gold answer (exact_answer=%r); it counts, and only a candidate "
                    "written exactly so matches it (as in the official evaluator)",
                    path,
                    qid,
                    question.get("exact_answer"),
                )
            question = {**question, "exact_answer": answers}
        questions.append(question)
    return questions


def _check_answer_types(question_types: Iterable[str]) -> tuple[str, ...]:
    question_types = tuple(question_types)
    if not set(question_types) <= {"factoid", "list"}:
        raise ValueError(
            f"question_types must be among 'factoid' and 'list' (they have exact answers), got {question_types}"
        )
    return question_types


def _read_golden_files(
    paths: PathLike | Iterable[PathLike],
    question_types: Iterable[str] = ("factoid",),
    every_type: bool = True,
    check: Callable[[Path, dict[str, list[list[str]]]], None] | None = None,
) -> list[tuple[Path, list[dict], dict[str, list[list[str]]]]]:
    """``[(path, questions, references), ...]``: each golden file read and validated once.

    ``questions`` are the questions of the file (:func:`read_golden_questions`, file order): every type, or with
    ``every_type=False`` only those of ``question_types`` (the others are then not validated). ``references`` are
    ``{question id: exact_answer}`` of its ``question_types`` questions, whose ids must be unique across the files
    (the one copy of that check). ``check(path, references)``, when given, is called on each file as it is read,
    before its ids are checked against the other files'.
    """
    question_types = _check_answer_types(question_types)
    origin: dict[str, Path] = {}
    files = []
    for path in as_paths(paths, "paths"):
        questions = read_golden_questions(path, None if every_type else question_types)
        selected = [q for q in questions if q["type"] in question_types]
        if check is not None:
            check(path, {q["id"]: q["exact_answer"] for q in selected})
        references: dict[str, list[list[str]]] = {}
        for question in selected:
            qid = question["id"]
            if qid in origin:
                raise ValueError(f"{path}: question {qid!r} is also in {origin[qid]}; question ids must be unique")
            references[qid] = question["exact_answer"]
            origin[qid] = path
        files.append((path, questions, references))
    return files


@dataclasses.dataclass(frozen=True)
class GoldenBatches:
    """What :func:`read_golden_batches` reads from golden files, one batch per file (:func:`batch_name`).

    ``references``: ``{batch: {question id: exact_answer synonym lists}}`` of the questions with exact answers
    asked for (factoid by default); ``questions``: ``{batch: [question record, ...]}`` of every question of the
    file (all types, validated, in file order).
    """

    references: dict[str, dict[str, list[list[str]]]]
    questions: dict[str, list[dict]]

    @property
    def types(self) -> dict[str, str]:
        """``{question id: type}`` of every question, batch by batch in file order (see :func:`question_types`)."""
        return {q["id"]: q["type"] for questions in self.questions.values() for q in questions}


def read_golden_batches(
    paths: PathLike | Iterable[PathLike],
    question_types: Iterable[str] = ("factoid",),
    *,
    check: Callable[[str, dict[str, list[list[str]]]], None] | None = None,
) -> GoldenBatches:
    """Read one or more BioASQ golden files, each once: references by batch and every question of each batch.

    One batch per golden file, named by :func:`batch_name` (``4B1`` -> ``4b-1``); a batch may be given once, and
    the ids of the ``question_types`` questions (factoid by default, or list) must be unique across the files.
    ``check(batch, references)``, when given, is called on each batch as its file is read, before its ids are
    checked against the other batches' (a caller's own check of a file comes first).
    """
    paths = as_paths(paths, "paths")
    names: set[str] = set()
    for path in paths:
        name = batch_name(path)
        if name in names:
            raise ValueError(f"{path}: batch {name!r} is given twice; pass each golden file once")
        names.add(name)
    files = _read_golden_files(
        paths, question_types, check=None if check is None else lambda path, refs: check(batch_name(path), refs)
    )
    return GoldenBatches(
        references={batch_name(path): references for path, _, references in files},
        questions={batch_name(path): questions for path, questions, _ in files},
    )


def load_golden(paths: PathLike | Iterable[PathLike], question_types: Iterable[str] = ("factoid",)) -> dict:
    """References ``{question id: exact_answer synonym lists}`` from one or more BioASQ golden files.

    Only factoid questions by default (``question_types`` selects others with a list ``exact_answer``). Question ids
    must be unique across the files.
    """
    return {
        qid: answers
        for _, _, references in _read_golden_files(paths, question_types, every_type=False)
        for qid, answers in references.items()
    }


def load_golden_batches(paths: PathLike | Iterable[PathLike], question_types: Iterable[str] = ("factoid",)) -> dict:
    """``{batch name: references}`` with one batch per golden file (:func:`read_golden_batches`)."""
    return read_golden_batches(paths, question_types).references


def question_types(paths: PathLike | Iterable[PathLike]) -> dict[str, str]:
    """``{question id: type}`` of every question of one or more golden files, in file order.

    What :func:`write_submission` needs to list every question and :func:`load_predictions` to check a submission.
    Callers that also need the references read both at once with :func:`read_golden_batches`.
    """
    return {q["id"]: q["type"] for _, questions, _ in _read_golden_files(paths) for q in questions}


def _golden_sign(question: Mapping[str, Any]) -> str | None:
    """Why a record of a ``{"questions": [...]}`` file is a golden/training record, not a prediction (or None).

    Golden and training files give ``ideal_answer`` as a list (one per expert), submissions as a string or not at
    all. Golden files also carry synonym lists in ``exact_answer``, which :func:`candidate_text` refuses.
    """
    if isinstance(question.get("ideal_answer"), list):
        return "field 'ideal_answer' is a list of expert answers, as in golden and training files"
    return None


def _check_submission_question(path: Path, i: int, question: Any, gold_type: str | None) -> str | None:
    """The type by which the evaluator scores ``questions[i]`` (None: not a factoid/list/yesno question).

    Refuses, naming file, question and field, what the official evaluator crashes on or reads against the file.
    """
    if not isinstance(question, dict) or not isinstance(question.get("id"), str):
        raise ValueError(
            f"{path}: questions[{i}] must be an object with a string 'id' field, got {question!r}; "
            "the official evaluator fails on a question without an id"
        )
    qid = question["id"]
    where = f"{path}: question {qid!r} (questions[{i}])"
    own_type = question.get("type")
    if gold_type is not None and own_type is not None and own_type != gold_type:
        raise ValueError(
            f"{where}: field 'type' is {own_type!r} but the golden file has a {gold_type!r} question with this id; "
            "the official evaluator scores it by the golden type and ignores the file's. Write the golden type "
            "(or check that the file belongs to this batch)"
        )
    qtype = gold_type or own_type
    if "exact_answer" not in question:
        return qtype
    answer = question["exact_answer"]
    if answer is None:
        raise ValueError(
            f"{where}: field 'exact_answer' is null, on which the official evaluator fails; leave the field out "
            "(yes/no, summary) or write [] (factoid, list) for a question without an answer"
        )
    if qtype == "yesno":
        if not isinstance(answer, str):
            raise ValueError(
                f'{where}: field \'exact_answer\' of a yes/no question must be "yes" or "no", got {answer!r} '
                "(the official evaluator fails on a list there); leave the field out when there is no answer"
            )
        return qtype
    if qtype in ("factoid", "list") or (qtype is None and isinstance(answer, list)):
        qtype = qtype or "factoid"
        if not isinstance(answer, list):
            raise ValueError(
                f"{where}: field 'exact_answer' of a {qtype} question must be a list of candidates such as "
                f'[["cand1"], ["cand2"]] ([] for no answer), got {answer!r}'
            )
        for rank, item in enumerate(answer):
            if not isinstance(item, list) or not all(isinstance(s, str) for s in item):
                raise ValueError(
                    f"{where}: field 'exact_answer'[{rank}] must be a list of one string such as [\"cand\"], got "
                    f"{item!r}; the official evaluator (-e 5) fails on a flat list of strings and on deeper nesting: "
                    f'write [["cand1"], ["cand2"]]'
                )
    return qtype


def load_predictions(path: PathLike, golden_types: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Read predictions: our ``{question id: [answer, ...]}`` JSON or a BioASQ submission ``{"questions": [...]}``.

    Candidates are read as the official evaluator reads them (:func:`candidate_text`: text as written, ``[]`` no
    candidate, one string per candidate). A bare string value in our format is read as a single candidate.

    A submission is read as the official evaluator (``-e 5``) reads it, and refused with a message naming the file,
    the question and the field where the evaluator would fail or read something else than the file says: an entry
    without an id, a question listed twice (the evaluator takes the first), ``exact_answer`` null, flat
    (``["a", "b"]``) or nested deeper, a list for a yes/no question, a candidate with several synonyms, more than
    :data:`MAX_CANDIDATES` candidates (the evaluator counts them all). ``golden_types`` (``{id: type}`` from
    :func:`question_types`) adds the checks against the golden files: a question typed differently from the golden
    one, and golden factoid, list or yes/no questions missing from the file (the evaluator stops with a
    NullPointerException). Only factoid questions are returned. A golden or training file (expert ``ideal_answer``
    lists, synonym lists in ``exact_answer``) is refused as not being predictions. A file with non-ASCII characters
    is read (as UTF-8) with a warning: the evaluator reads files in the platform charset.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object, either {{question id: [answers]}} or a BioASQ submission "
            f"{{'questions': [...]}}, got {type(data).__name__}"
        )
    if isinstance(data.get("data"), list) and "questions" not in data:
        raise ValueError(
            f"{path} is a SQuAD-format file (a 'data' list of paragraphs), not predictions: pass the model's "
            "predictions ({question id: [answers]} or a BioASQ submission), e.g. predictions_<set>.json of run_qa"
        )
    predictions: dict[str, list[str]] = {}
    if not isinstance(data.get("questions"), list):
        for qid, answer in data.items():
            if isinstance(answer, str):
                answer = [answer]
            if isinstance(answer, list) and answer and all(isinstance(a, dict) for a in answer):
                raise ValueError(
                    f"{path}: question {qid!r}: the value is a list of objects {answer[0]!r}, as in an n-best file; "
                    "merge it per question first (biomamba-bioasq-eval --nbest) or give ranked answer strings"
                )
            if not isinstance(answer, list):
                raise ValueError(
                    f"{path}: question {qid!r}: the value must be a ranked list of answer strings such as "
                    f'["cand1", "cand2"], got {answer!r}'
                )
            try:
                predictions[qid] = ranked_candidates(answer, qid)
            except ValueError as err:
                raise ValueError(f"{path}: question {qid!r}: {err}") from None
        return predictions

    questions = data["questions"]
    for i, question in enumerate(questions):
        sign = _golden_sign(question) if isinstance(question, dict) else None
        if sign:
            raise ValueError(
                f"{path} is not a predictions file: question {question.get('id')!r} (questions[{i}]): {sign}. "
                "Is it a golden or training file? Give the system's predictions ({question id: [answers]} or a "
                "BioASQ submission with one string per candidate) and the golden files with --golden"
            )
    types = dict(golden_types or {})
    listed: dict[str, int] = {}
    for i, question in enumerate(questions):
        qtype = _check_submission_question(path, i, question, types.get(question.get("id")))
        qid = question["id"]
        if qid in listed:
            raise ValueError(
                f"{path}: question {qid!r} (questions[{i}]) is listed twice (first as questions[{listed[qid]}]); the "
                "official evaluator reads only the first: list each question once"
            )
        listed[qid] = i
        if qtype != "factoid":
            continue
        try:
            candidates = ranked_candidates(question.get("exact_answer", []), qid)
        except ValueError as err:
            raise ValueError(f"{path}: question {qid!r} (questions[{i}]): field 'exact_answer': {err}") from None
        if len(candidates) > MAX_CANDIDATES:
            raise ValueError(
                f"{path}: question {qid!r} (questions[{i}]): field 'exact_answer' has {len(candidates)} candidates; "
                f"BioASQ allows {MAX_CANDIDATES} and the official evaluator would count all of them: keep the best "
                f"{MAX_CANDIDATES}"
            )
        predictions[qid] = candidates
    missing = [qid for qid, qtype in types.items() if qtype != "summary" and qid not in listed]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} question(s) of the golden files are not in the submission (first: "
            f"{missing[0]!r}, a {types[missing[0]]} question); the official evaluator stops with a "
            "NullPointerException on a missing factoid, list or yes/no question. Write every golden question "
            "(biomamba-bioasq-eval PREDICTIONS --golden GOLDEN --write_submission OUT does), or pass only the golden "
            "files of the batches this submission covers"
        )
    if not path.read_bytes().isascii():
        logger.warning(
            "%s has non-ASCII characters: the official evaluator reads files in the platform charset (ASCII under a "
            "C locale with Java 17), where such answers lose credit; write \\u escapes (json.dump(ensure_ascii=True), "
            "as write_submission does)",
            path,
        )
    return predictions


def _submission_questions(questions: Iterable[Any]) -> list[tuple[str, str]]:
    result = []
    for i, question in enumerate(questions):
        if isinstance(question, str):
            result.append((question, "factoid"))
        elif isinstance(question, Mapping) and isinstance(question.get("id"), str):
            result.append((question["id"], str(question.get("type", "factoid"))))
        else:
            raise ValueError(
                f"questions[{i}] must be a question id or a golden question record with 'id' and 'type', got "
                f"{question!r}"
            )
    return result


def to_submission(
    predictions: Mapping[str, Sequence[Candidate]], questions: Iterable[Any], top_k: int = MAX_CANDIDATES
) -> dict[str, list[dict[str, Any]]]:
    """Predictions in the BioASQ submission JSON format, listing every question of ``questions`` in their order.

    ``questions`` are the golden question records (``read_golden_questions(path, None)``, with ``id`` and ``type``)
    or a ``{question id: type}`` dict (:func:`question_types`): the official evaluator stops on any factoid, list or
    yes/no question of the golden file missing from the submission. Question ids alone (an iterable of strings, or
    the keys of a references dict) are written as factoid questions; such a file passes the evaluator only against
    a golden file without list and yes/no questions.

    Factoid questions get their first ``top_k`` candidates, each as a one-string list with the text exactly as
    predicted (the evaluator lower-cases but compares whitespace as written, and reads only the first string of a
    candidate); no prediction gives ``"exact_answer": []``. List questions are written with ``"exact_answer": []``,
    yes/no and summary questions without ``exact_answer`` (the forms of an unanswered question the evaluator
    accepts: it scores them 0). Predictions for other ids are not written.

    >>> to_submission({"q1": ["BRCA1", [], " brca2 "], "q9": ["x"]}, {"q1": "factoid", "q2": "factoid", "y": "yesno"})
    {'questions': [{'id': 'q1', 'type': 'factoid', 'exact_answer': [['BRCA1'], [' brca2 ']]}, {'id': 'q2', 'type': 'factoid', 'exact_answer': []}, {'id': 'y', 'type': 'yesno'}]}
    """
    check_mapping(predictions, "predictions")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_CANDIDATES:
        raise ValueError(
            f"top_k must be an int from 1 to {MAX_CANDIDATES} (BioASQ counts {MAX_CANDIDATES}), got {top_k!r}"
        )
    if isinstance(questions, Mapping) and all(isinstance(t, str) for t in questions.values()):
        questions = [{"id": qid, "type": qtype} for qid, qtype in questions.items()]
    written = []
    for qid, qtype in _submission_questions(questions):
        entry: dict[str, Any] = {"id": qid, "type": qtype}
        if qtype == "factoid":
            candidates = ranked_candidates(predictions.get(qid, []), qid)
            entry["exact_answer"] = [[text] for text in candidates[:top_k]]
        elif qtype == "list":
            entry["exact_answer"] = []
        written.append(entry)
    return {"questions": written}


def write_submission(
    path: PathLike,
    predictions: Mapping[str, Sequence[Candidate]],
    questions: Iterable[Any],
    top_k: int = MAX_CANDIDATES,
) -> Path:
    """Write :func:`to_submission` to ``path`` as JSON with ``\\u`` escapes (ASCII) and return the path.

    The official evaluator reads files in the platform charset (ASCII under a C locale with Java 17): escapes keep
    answers such as ``α-synuclein`` intact everywhere.
    """
    return write_json(path, to_submission(predictions, questions, top_k=top_k), ensure_ascii=True)
