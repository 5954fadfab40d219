"""BioASQ data: BioBERT's SQuAD-format files, golden-to-SQuAD conversion and test-set folders."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from helpers import count_opens, data_dir

from biomamba_hf.bioasq.evaluation import find_test_batches, load_test_references, load_test_set, read_test_set
from biomamba_hf.bioasq.squad import COLUMNS, find_answer_span, golden_to_squad, load_squad_bioasq, read_squad_bioasq
from biomamba_hf.metrics import load_golden, normalize_answer


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def squad_file(path: Path, paragraphs) -> Path:
    return write_json(path, {"version": "BioASQ6b", "data": [{"title": "BioASQ6b", "paragraphs": paragraphs}]})


def paragraph(context, *qas):
    return {"context": context, "qas": list(qas)}


def golden_file(path: Path, *questions) -> Path:
    return write_json(path, {"questions": list(questions)})


def factoid(qid, answers, snippets, body=None):
    return {
        "id": qid,
        "type": "factoid",
        "body": body or f"Question {qid}?",
        "exact_answer": answers,
        "snippets": [{"text": t, "document": "http://www.ncbi.nlm.nih.gov/pubmed/1"} for t in snippets],
    }


# --------------------------------------------------------------------------------------------------------------------
# SQuAD-format files
# --------------------------------------------------------------------------------------------------------------------


def test_load_squad_bioasq_columns_answers_and_ids(tmp_path):
    path = squad_file(
        tmp_path / "BioASQ-test-factoid-5b-2.json",
        [
            paragraph("Coilin marks Cajal bodies.", {"id": "abc_000", "question": "Which protein?"}),
            paragraph(
                "The marker is coilin.",
                {"id": "abc_001", "question": "Which protein?", "answers": [{"text": "coilin", "answer_start": 14}]},
            ),
        ],
    )
    ds = load_squad_bioasq(path)
    assert tuple(ds.column_names) == COLUMNS
    assert ds["question_id"] == ["abc", "abc"] and ds["batch"] == ["5b-2", "5b-2"]
    assert ds[0]["answers"] == {"text": [], "answer_start": []}
    assert ds[1]["answers"] == {"text": ["coilin"], "answer_start": [14]}
    assert ds[1]["title"] == "BioASQ6b"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"data": "x"}, r"t\.json: expected a SQuAD JSON object with a 'data' list"),
        ({"data": [{"title": "t"}]}, r"t\.json: data\[0\]: field 'paragraphs' must be a list, got None"),
        (
            {"data": [{"paragraphs": [{"qas": []}]}]},
            r"t\.json: data\[0\]\.paragraphs\[0\]: field 'context' must be a str, got None",
        ),
        (
            {"data": [{"paragraphs": [paragraph("c", {"question": "q"})]}]},
            r"t\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: field 'id' must be a non-empty string",
        ),
        (
            {"data": [{"paragraphs": [paragraph("c", {"id": "q_000"})]}]},
            r"t\.json: qa 'q_000': field 'question' must be a str, got None",
        ),
        (
            {"data": [{"paragraphs": [paragraph("c", {"id": "q_000", "question": "?", "answers": "c"})]}]},
            r"t\.json: qa 'q_000': field 'answers' must be a list",
        ),
        (
            {
                "data": [
                    {
                        "paragraphs": [
                            paragraph(
                                "The marker is coilin.",
                                {"id": "q_000", "question": "?", "answers": [{"text": "coilin", "answer_start": 3}]},
                            )
                        ]
                    }
                ]
            },
            r"t\.json: qa 'q_000': answers\[0\]\.answer_start=3 does not point to the answer text 'coilin' "
            r"\(the context has ' marke' there\)",
        ),
        (
            {
                "data": [
                    {
                        "paragraphs": [
                            paragraph("c", {"id": "q_000", "question": "?", "answers": [{"text": "c"}]}),
                        ]
                    }
                ]
            },
            r"t\.json: qa 'q_000': field 'answers\[0\]\.answer_start' must be a int, got None",
        ),
    ],
)
def test_squad_errors_name_file_record_and_field(tmp_path, content, match):
    path = write_json(tmp_path / "t.json", content)
    with pytest.raises(ValueError, match=match):
        read_squad_bioasq(path)


def test_squad_rejects_duplicate_qa_ids_and_bad_json(tmp_path):
    first = squad_file(tmp_path / "a.json", [paragraph("c", {"id": "q_000", "question": "?"})])
    second = squad_file(tmp_path / "b.json", [paragraph("d", {"id": "q_000", "question": "?"})])
    with pytest.raises(ValueError, match=r"b\.json: qa 'q_000' is also in .*a\.json"):
        read_squad_bioasq([first, second])
    (tmp_path / "bad.json").write_text('{"data": [}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON: Expecting value at line 1 column 11"):
        read_squad_bioasq(tmp_path / "bad.json")


# --------------------------------------------------------------------------------------------------------------------
# Golden -> SQuAD
# --------------------------------------------------------------------------------------------------------------------


def test_find_answer_span_rules():
    # First occurrence over all synonyms; the context's spelling; the longest at equal starts.
    assert find_answer_span("FXa, i.e. factor Xa", ["Factor Xa", "fxa"]) == (0, "FXa")
    assert find_answer_span("Factor Xa inhibitors", ["factor x", "factor xa"], whole_word=False) == (0, "Factor Xa")
    # Whole words, but plurals and non-alphanumeric edges are fine.
    assert find_answer_span("andexanet", ["xa"]) is None
    assert find_answer_span("two DAVFs were", ["DAVF"]) == (4, "DAVF")
    assert find_answer_span("locus 5p15.33", ["5p15.3"]) is None
    assert find_answer_span("see (p53)-null", ["(p53)"]) == (4, "(p53)")
    assert find_answer_span("nothing here", ["", " "]) is None


def test_golden_to_squad_builds_examples_and_reports(tmp_path):
    path = golden_file(
        tmp_path / "5B1_golden.json",
        factoid(
            "q1",
            [["Factor Xa"], ["FXa"]],
            [
                "Andexanet reverses factor Xa inhibitors.",
                " Andexanet reverses factor Xa inhibitors. ",  # a duplicate once stripped
                "Andexanet alfa is an antidote.",  # no answer
                "FXa is inhibited.",
                "",
            ],
        ),
        factoid("q2", [["coilin"]], ["Cajal bodies are nuclear."]),  # dropped: no snippet has the answer
        {"id": "y1", "type": "yesno", "body": "Is it?", "exact_answer": "yes"},
    )
    ds, report = golden_to_squad(path)
    assert tuple(ds.column_names) == COLUMNS
    assert ds["id"] == ["q1_000", "q1_001"]
    assert ds[0]["answers"] == {"text": ["factor Xa"], "answer_start": [19]}
    assert ds[1]["answers"] == {"text": ["FXa"], "answer_start": [0]}
    assert set(ds["batch"]) == {"5b-1"} and ds[0]["question"] == "Question q1?"
    assert (report.questions, report.questions_matched, report.questions_dropped, report.questions_other_type) == (
        2,
        1,
        1,
        1,
    )
    assert (report.snippets, report.snippets_duplicate, report.snippets_matched, report.snippets_dropped) == (
        6,
        2,
        2,
        2,
    )
    assert report.examples == 2 and report.dropped_question_ids == ["q2"]
    assert "2 questions: 1 matched, 1 dropped" in str(report)

    rows, report = golden_to_squad(path, keep_unanswerable=True, as_dataset=False)
    assert [r["id"] for r in rows] == ["q1_000", "q1_001", "q1_002", "q2_000"]
    assert rows[1]["answers"] == {"text": [], "answer_start": []}
    assert report.examples == 4 and report.questions_matched == 1


@pytest.mark.parametrize(
    ("question", "match"),
    [
        (
            {**factoid("q1", [["x"]], ["x"]), "body": None},
            r"g\.json: question 'q1': field 'body' must be the question",
        ),
        (
            {**factoid("q1", [["x"]], []), "snippets": [{"document": "d"}]},
            r"g\.json: question 'q1': field 'snippets\[0\]\.text' must be a string",
        ),
        ({**factoid("q1", [["x"]], []), "snippets": "x"}, r"g\.json: question 'q1': field 'snippets' must be a list"),
        (factoid("q1", "x", ["x"]), r"g\.json: question 'q1' \(questions\[0\]\): field 'exact_answer' must be a list"),
    ],
)
def test_golden_to_squad_errors_name_file_record_and_field(tmp_path, question, match):
    path = golden_file(tmp_path / "g.json", question)
    with pytest.raises(ValueError, match=match):
        golden_to_squad(path, as_dataset=False)


def test_golden_to_squad_rejects_a_question_in_two_files(tmp_path):
    first = golden_file(tmp_path / "a.json", factoid("q1", [["x"]], ["x"]))
    second = golden_file(tmp_path / "b.json", factoid("q1", [["x"]], ["x"]))
    with pytest.raises(ValueError, match=r"b\.json: question 'q1' is also in .*a\.json"):
        golden_to_squad([first, second], as_dataset=False)


# --------------------------------------------------------------------------------------------------------------------
# Test-set folders
# --------------------------------------------------------------------------------------------------------------------


def make_test_set(root: Path) -> Path:
    for i, qid in ((1, "q1"), (2, "q2")):
        squad_file(
            root / "test" / f"BioASQ-test-factoid-4b-{i}.json", [paragraph("c", {"id": f"{qid}_000", "question": "?"})]
        )
        golden_file(root / "golden" / f"4B{i}_golden.json", factoid(qid, [[f"a{i}"]], ["c"]))
    return root


def test_test_set_folder_pairs_batches(tmp_path):
    root = make_test_set(tmp_path / "4b")
    assert [(b.name, b.squad_path.name, b.golden_path.name) for b in find_test_batches(root)] == [
        ("4b-1", "BioASQ-test-factoid-4b-1.json", "4B1_golden.json"),
        ("4b-2", "BioASQ-test-factoid-4b-2.json", "4B2_golden.json"),
    ]
    rows, references = load_test_set(root)
    assert [r["id"] for r in rows] == ["q1_000", "q2_000"] and [r["batch"] for r in rows] == ["4b-1", "4b-2"]
    assert references == {"4b-1": {"q1": [["a1"]]}, "4b-2": {"q2": [["a2"]]}} == load_test_references(root)


def test_read_test_set_reads_each_file_once(tmp_path, monkeypatch):
    root = make_test_set(tmp_path / "4b")
    golden_file(
        root / "golden" / "4B2_golden.json",
        factoid("q2", [["a2"]], ["c"]),
        {"id": "y2", "type": "yesno", "body": "Yes?", "exact_answer": "yes"},
    )
    opens = count_opens(monkeypatch)
    rows, references, questions = read_test_set(root)
    assert {path.relative_to(root.resolve()).as_posix(): n for path, n in opens.items()} == {
        "test/BioASQ-test-factoid-4b-1.json": 1,
        "test/BioASQ-test-factoid-4b-2.json": 1,
        "golden/4B1_golden.json": 1,
        "golden/4B2_golden.json": 1,
    }
    assert (rows, references) == load_test_set(root)
    assert questions == [
        {"id": "q1", "type": "factoid"},
        {"id": "q2", "type": "factoid"},
        {"id": "y2", "type": "yesno"},
    ]


def test_test_set_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs 'test/' .* and 'golden/'"):
        find_test_batches(tmp_path)
    root = make_test_set(tmp_path / "4b")
    (root / "golden" / "4B2_golden.json").unlink()
    with pytest.raises(ValueError, match=r"BioASQ-test-factoid-4b-2\.json: no golden file for batch '4b-2'"):
        find_test_batches(root)
    # A golden file of the wrong batch: its questions are not those of the test file.
    golden_file(root / "golden" / "4B2_golden.json", factoid("q1", [["a1"]], ["c"]))
    with pytest.raises(ValueError, match=r"1 question\(s\) of batch '4b-2' are not factoid questions of .*4B2_golden"):
        load_test_references(root)


# --------------------------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------------------------

REAL_COUNTS = {"4b": (652, 161, 5), "5b": (495, 150, 5), "7b": (407, 162, 1)}


@pytest.mark.real_data
@pytest.mark.parametrize("year", sorted(REAL_COUNTS))
def test_real_test_sets_load_with_the_published_counts(year):
    contexts, questions, batches = REAL_COUNTS[year]
    rows, references = load_test_set(data_dir() / "bioasq" / year)
    assert (len(rows), len({r["question_id"] for r in rows}), len(references)) == (contexts, questions, batches)
    assert sum(len(r) for r in references.values()) == questions
    assert all(not r["answers"]["text"] and not r["answers"]["answer_start"] for r in rows)
    assert all(re.fullmatch(r"[0-9a-f]{24}_\d{3}", r["id"]) for r in rows)
    for batch, refs in references.items():
        assert {r["question_id"] for r in rows if r["batch"] == batch} == set(refs)


@pytest.mark.real_data
@pytest.mark.parametrize("year", sorted(REAL_COUNTS))
def test_real_golden_to_squad_spans_point_to_gold_answers(year):
    paths = sorted((data_dir() / "bioasq" / year / "golden").glob("*_golden.json"))
    rows, report = golden_to_squad(paths, as_dataset=False)
    references = load_golden(paths)
    assert report.questions == REAL_COUNTS[year][1] == len(references)
    assert report.questions_matched + report.questions_dropped == report.questions
    assert report.snippets_matched + report.snippets_dropped + report.snippets_duplicate == report.snippets
    assert report.examples == report.snippets_matched == len(rows)
    # Most questions give training data: the matching rule must not silently drop the set.
    assert report.questions_matched / report.questions > 0.65
    for row in rows:
        (text,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
        assert row["context"][start : start + len(text)] == text
        # Spans are found for the synonyms without surrounding whitespace (a snippet span cannot carry the
        # 4b golden answer " fewer than 100"'s leading space); scoring keeps whitespace as the evaluator does.
        gold = {normalize_answer(s).strip() for answer in references[row["question_id"]] for s in answer}
        assert normalize_answer(text) in gold
    ids = Counter(row["question_id"] for row in rows)
    assert [row["id"] for row in rows] == [f"{q}_{n:03d}" for q, count in ids.items() for n in range(count)]
