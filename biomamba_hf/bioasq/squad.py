"""BioASQ as SQuAD: BioBERT's SQuAD-format files, and official golden/training JSON converted to SQuAD examples.

Every row has the SQuAD columns plus ``question_id`` (the qa id before ``_<nnn>``) and ``batch`` (from the file name).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .formats import PathLike, as_paths, batch_name, question_id, read_golden_questions, read_json

if TYPE_CHECKING:
    import datasets

__all__ = [
    "MAX_QUESTION_CHARS",
    "GoldenConversionReport",
    "find_answer_span",
    "golden_to_squad",
    "load_squad_bioasq",
    "load_training_examples",
    "read_squad_bioasq",
    "squad_features",
]

COLUMNS = ("id", "title", "context", "question", "answers", "question_id", "batch")
#: Longest question accepted, in characters (BioASQ questions have a few hundred at most). A longer one is
#: almost always a context pasted into the question field, which the tokenizer would silently cut.
MAX_QUESTION_CHARS = 2000


def squad_features() -> datasets.Features:
    """The ``datasets.Features`` of every dataset built here (SQuAD schema + ``question_id`` + ``batch``)."""
    import datasets

    string = datasets.Value("string")
    return datasets.Features(
        {
            "id": string,
            "title": string,
            "context": string,
            "question": string,
            "answers": {"text": datasets.List(string), "answer_start": datasets.List(datasets.Value("int32"))},
            "question_id": string,
            "batch": string,
        }
    )


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_list(rows, features=squad_features())


# --------------------------------------------------------------------------------------------------------------------
# BioBERT's SQuAD-format files
# --------------------------------------------------------------------------------------------------------------------


def _field(value: Any, kind: type, where: str, field: str, hint: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: field {field!r} must be a {kind.__name__}, got {value!r}; {hint}")
    return value


def _read_squad_file(path: Path, seen: dict[str, Path]) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(
            f"{path}: expected a SQuAD JSON object with a 'data' list (BioBERT's BioASQ format), got "
            f"{type(data).__name__}{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}"
        )
    batch = batch_name(path)
    rows = []
    for i, article in enumerate(data["data"]):
        where = f"{path}: data[{i}]"
        if not isinstance(article, dict):
            raise ValueError(f"{where} must be a JSON object with 'title' and 'paragraphs', got {article!r}")
        title = article.get("title", "")
        _field(title, str, where, "title", "give each article a string title")
        paragraphs = _field(article.get("paragraphs"), list, where, "paragraphs", "list the contexts there")
        for j, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            if not isinstance(paragraph, dict):
                raise ValueError(f"{where} must be a JSON object with 'context' and 'qas', got {paragraph!r}")
            context = _field(paragraph.get("context"), str, where, "context", "each paragraph needs its text")
            qas = _field(paragraph.get("qas"), list, where, "qas", "list the paragraph's questions there")
            for k, qa in enumerate(qas):
                where = f"{path}: data[{i}].paragraphs[{j}].qas[{k}]"
                if not isinstance(qa, dict):
                    raise ValueError(f"{where} must be a JSON object with 'id' and 'question', got {qa!r}")
                qa_id = qa.get("id")
                if not isinstance(qa_id, str) or not qa_id.strip():
                    raise ValueError(f"{where}: field 'id' must be a non-empty string, got {qa_id!r}")
                where = f"{path}: qa {qa_id!r}"
                if qa_id in seen:
                    raise ValueError(f"{where} is also in {seen[qa_id]}; qa ids must be unique across files")
                seen[qa_id] = path
                if not context.strip():
                    raise ValueError(
                        f"{where}: field 'context' (data[{i}].paragraphs[{j}]) is empty; give the paragraph's "
                        "text, or remove the paragraph"
                    )
                question = _field(qa.get("question"), str, where, "question", "give the question text")
                if len(question) > MAX_QUESTION_CHARS:
                    raise ValueError(
                        f"{where}: field 'question' is {len(question)} characters, more than MAX_QUESTION_CHARS = "
                        f"{MAX_QUESTION_CHARS}; is a context pasted into it? Put the text in the paragraph's "
                        "'context' and keep only the question"
                    )
                answers = qa.get("answers", [])
                _field(answers, list, where, "answers", "use a list of {'text', 'answer_start'} objects")
                texts, starts = [], []
                for m, answer in enumerate(answers):
                    if not isinstance(answer, dict):
                        raise ValueError(f"{where}: answers[{m}] must be an object with 'text' and 'answer_start'")
                    text = _field(answer.get("text"), str, where, f"answers[{m}].text", "give the answer text")
                    start = _field(
                        answer.get("answer_start"), int, where, f"answers[{m}].answer_start", "give a char offset"
                    )
                    if start < 0 or context[start : start + len(text)] != text:
                        raise ValueError(
                            f"{where}: answers[{m}].answer_start={start} does not point to the answer text {text!r} "
                            f"(the context has {context[max(start, 0) : max(start, 0) + len(text)]!r} there); fix "
                            "answer_start to the character offset of the text in the context"
                        )
                    texts.append(text)
                    starts.append(start)
                rows.append(
                    {
                        "id": qa_id,
                        "title": title,
                        "context": context,
                        "question": question,
                        "answers": {"text": texts, "answer_start": starts},
                        "question_id": question_id(qa_id),
                        "batch": batch,
                    }
                )
    return rows


def read_squad_bioasq(paths: PathLike | Iterable[PathLike]) -> list[dict]:
    """The rows of :func:`load_squad_bioasq` as a list of dicts (no ``datasets`` needed).

    >>> import json, pathlib, tempfile
    >>> qa = {"id": "56c073fcef6e394741000020_000", "question": "Which gene?"}
    >>> squad = {"data": [{"title": "t", "paragraphs": [{"context": "BRCA1.", "qas": [qa]}]}]}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "BioASQ-test-factoid-4b-1.json"
    ...     _ = path.write_text(json.dumps(squad))
    ...     row = read_squad_bioasq(path)[0]
    >>> row["question_id"], row["batch"], row["answers"]
    ('56c073fcef6e394741000020', '4b-1', {'text': [], 'answer_start': []})
    """
    seen: dict[str, Path] = {}
    rows = []
    for path in as_paths(paths, "paths"):
        rows.extend(_read_squad_file(path, seen))
    return rows


def load_squad_bioasq(paths: PathLike | Iterable[PathLike]) -> datasets.Dataset:
    """Load BioBERT's SQuAD-format BioASQ files (with or without answers) into one ``datasets.Dataset``.

    Columns: ``id``, ``title``, ``context``, ``question``, ``answers`` (``{"text": [...], "answer_start": [...]}``,
    empty lists when the file has no answers), ``question_id`` (the qa id before ``_<nnn>``) and ``batch`` (from
    the file name: ``BioASQ-test-factoid-4b-1.json`` -> ``"4b-1"``). Each ``answer_start`` is checked against the
    context; qa ids must be unique across the files, contexts may not be blank and questions may have at most
    :data:`MAX_QUESTION_CHARS` characters.
    """
    return _to_dataset(read_squad_bioasq(paths))


# --------------------------------------------------------------------------------------------------------------------
# Official golden/training JSON -> SQuAD training examples
# --------------------------------------------------------------------------------------------------------------------


# What may follow a match that ends in a letter or digit: a non-word character, the end, or a plural ending.
_PLURAL_OR_WORD_END = re.compile(r"(?:e?s)?(?![^\W_])")


def find_answer_span(context: str, synonyms: Iterable[str], whole_word: bool = True) -> tuple[int, str] | None:
    """The first occurrence in ``context`` of any of ``synonyms``, case-insensitively: ``(start, text)`` or None.

    "First" is the smallest start offset over all synonyms (BioBERT labelled the first occurrence); at equal
    starts the longest match wins. ``text`` is the context's own spelling. With ``whole_word`` a match must not
    continue a word: a synonym that begins (ends) with a letter or digit may not be preceded (followed) by one,
    so that "xa" is not found inside "Andexanet", except for a plural ending: "meningioma" is found in
    "meningiomas" (the span stays "meningioma", the gold spelling).

    >>> find_answer_span("Andexanet reverses factor Xa inhibitors; FXa ...", ["fxa", "Factor Xa"])
    (19, 'factor Xa')
    >>> find_answer_span("ADAM10 cleaves APP in AD.", ["ad"])
    (22, 'AD')
    >>> find_answer_span("ADAM10 cleaves APP.", ["ad"], whole_word=False)
    (0, 'AD')
    >>> find_answer_span("Resection of meningiomas.", ["Meningioma"])
    (13, 'meningioma')
    """
    best: tuple[int, int] | None = None
    for synonym in synonyms:
        synonym = synonym.strip()
        if not synonym:
            continue
        for match in re.finditer(re.escape(synonym), context, flags=re.IGNORECASE):
            start, end = match.span()
            if whole_word and (
                (synonym[0].isalnum() and start > 0 and context[start - 1].isalnum())
                or (synonym[-1].isalnum() and not _PLURAL_OR_WORD_END.match(context, end))
            ):
                continue
            if best is None or start < best[0] or (start == best[0] and end > best[1]):
                best = (start, end)
            break  # later occurrences of this synonym start later
    if best is None:
        return None
    return best[0], context[best[0] : best[1]]


@dataclasses.dataclass
class GoldenConversionReport:
    """What :func:`golden_to_squad` kept and dropped. Snippet counts are over the questions converted."""

    files: list[str] = dataclasses.field(default_factory=list)
    #: questions of the selected type read from the files.
    questions: int = 0
    #: questions with at least one snippet containing a gold synonym (they give training examples).
    questions_matched: int = 0
    #: questions whose snippets never contain a gold synonym (or that have no snippets): no answered example.
    questions_dropped: int = 0
    #: questions of other types, skipped.
    questions_other_type: int = 0
    #: snippets of the questions read, duplicates included.
    snippets: int = 0
    #: snippets whose (stripped) text repeats an earlier snippet of the same question, or is empty: skipped.
    snippets_duplicate: int = 0
    #: unique snippets in which a gold synonym was found (one example each).
    snippets_matched: int = 0
    #: unique snippets in which no gold synonym was found (dropped, or kept unanswerable).
    snippets_dropped: int = 0
    #: examples written.
    examples: int = 0
    #: ids of the dropped questions, for inspection.
    dropped_question_ids: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.questions} questions: {self.questions_matched} matched, {self.questions_dropped} dropped "
            f"({self.questions_other_type} of other types skipped); {self.snippets} snippets: "
            f"{self.snippets_matched} matched, {self.snippets_dropped} without an answer, "
            f"{self.snippets_duplicate} duplicate or empty; {self.examples} examples"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _snippet_texts(question: dict, path: Path) -> list[str]:
    qid = question["id"]
    snippets = question.get("snippets", [])
    if not isinstance(snippets, list):
        raise ValueError(f"{path}: question {qid!r}: field 'snippets' must be a list of objects, got {snippets!r}")
    texts = []
    for n, snippet in enumerate(snippets):
        if not isinstance(snippet, dict) or not isinstance(snippet.get("text"), str):
            raise ValueError(
                f"{path}: question {qid!r}: field 'snippets[{n}].text' must be a string, got "
                f"{snippet.get('text') if isinstance(snippet, dict) else snippet!r}; every snippet needs its text"
            )
        texts.append(snippet["text"])
    return texts


def golden_to_squad(
    golden_paths: PathLike | Iterable[PathLike],
    *,
    whole_word: bool = True,
    keep_unanswerable: bool = False,
    as_dataset: bool = True,
) -> tuple[datasets.Dataset | list[dict], GoldenConversionReport]:
    """SQuAD-style examples from official BioASQ golden/training JSON files (factoid questions).

    Each snippet of a factoid question becomes a context with the question's ``body`` as question. Identical
    snippet texts of one question (after stripping whitespace) are kept once. The answer span is the first
    case-insensitive occurrence of any gold synonym (any inner list of ``exact_answer``) in the snippet, as found
    by :func:`find_answer_span` (``whole_word`` as there), with the context's own spelling as answer text; a
    snippet without one is dropped, or kept with empty answers when ``keep_unanswerable``. Example ids are
    ``"<question id>_<nnn>"`` (BioBERT's layout; ``nnn`` counts the question's examples from 000), ``title`` and
    ``batch`` are the batch name of the file (``4B1_golden.json`` -> ``"4b-1"``).

    Returns:
        ``(examples, report)``: a ``datasets.Dataset`` (or, with ``as_dataset=False``, a list of dicts) with the
        columns of :func:`load_squad_bioasq`, and a :class:`GoldenConversionReport` of what matched or was dropped.
    """
    report = GoldenConversionReport()
    rows = []
    seen: dict[str, Path] = {}
    for path in as_paths(golden_paths, "golden_paths"):
        report.files.append(str(path))
        batch = batch_name(path)
        all_questions = read_golden_questions(path, question_types=None)
        questions = [q for q in all_questions if q["type"] == "factoid"]
        report.questions_other_type += len(all_questions) - len(questions)
        for question in questions:
            qid = question["id"]
            if qid in seen:
                raise ValueError(f"{path}: question {qid!r} is also in {seen[qid]}; question ids must be unique")
            seen[qid] = path
            body = question.get("body")
            if not isinstance(body, str) or not body.strip():
                raise ValueError(f"{path}: question {qid!r}: field 'body' must be the question text, got {body!r}")
            synonyms = [s for answer in question["exact_answer"] for s in answer]
            texts = _snippet_texts(question, path)
            report.questions += 1
            report.snippets += len(texts)
            contexts: list[str] = []
            for text in texts:
                context = text.strip()
                if not context or context in contexts:
                    report.snippets_duplicate += 1
                else:
                    contexts.append(context)
            matched = written = 0
            for context in contexts:
                span = find_answer_span(context, synonyms, whole_word=whole_word)
                if span is None:
                    report.snippets_dropped += 1
                    if not keep_unanswerable:
                        continue
                    answers = {"text": [], "answer_start": []}
                else:
                    report.snippets_matched += 1
                    matched += 1
                    answers = {"text": [span[1]], "answer_start": [span[0]]}
                rows.append(
                    {
                        "id": f"{qid}_{written:03d}",
                        "title": batch,
                        "context": context,
                        "question": body.strip(),
                        "answers": answers,
                        "question_id": qid,
                        "batch": batch,
                    }
                )
                written += 1
            if matched:
                report.questions_matched += 1
            else:
                report.questions_dropped += 1
                report.dropped_question_ids.append(qid)
    report.examples = len(rows)
    return (_to_dataset(rows) if as_dataset else rows), report


def load_training_examples(
    golden_files: Sequence[PathLike] = (),
    squad_files: Sequence[PathLike] = (),
    *,
    keep_unanswerable: bool = False,
) -> tuple[list[dict], list[Any]]:
    """SQuAD-style training rows from BioASQ golden JSON (via ``golden_to_squad``) and SQuAD files with answers.

    Every file is read and validated before anything is returned. A SQuAD file in which no question has an answer
    (a test file) is refused. Returns ``(rows, reports)`` with one ``GoldenConversionReport`` per golden file.
    """
    rows: list[dict] = []
    reports = []
    for path in golden_files:
        converted, report = golden_to_squad(path, keep_unanswerable=keep_unanswerable, as_dataset=False)
        rows.extend(converted)
        reports.append(report)
    for path in squad_files:
        squad_rows = read_squad_bioasq(path)
        if squad_rows and not any(row["answers"]["text"] for row in squad_rows):
            raise ValueError(
                f"{path}: none of its {len(squad_rows)} qas has an answer (every 'answers' field is empty), so it "
                "cannot train a QA model; is it a test file? Pass it to --test_dirs or --predict_files instead, or "
                "give golden files with --train_golden_files."
            )
        unanswered = sum(1 for row in squad_rows if not row["answers"]["text"])
        if unanswered:
            logging.getLogger(__name__).warning(
                "%s: %d of its %d qas have an empty 'answers' list and become \"no answer\" examples (the model learns "
                "to point at the window's no-answer position for them); fill in their answers, or remove them, if they should not.",
                path,
                unanswered,
                len(squad_rows),
            )
        rows.extend(squad_rows)
    seen: dict[str, str] = {}
    for row in rows:
        if row["id"] in seen:
            raise ValueError(
                f"training example id {row['id']!r} occurs twice (batches {seen[row['id']]!r} and {row['batch']!r}); "
                "pass each training file once"
            )
        seen[row["id"]] = row["batch"]
    return rows, reports
