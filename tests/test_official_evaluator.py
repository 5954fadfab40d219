"""Our BioASQ submissions and scores against the official evaluator (github.com/BioASQ/Evaluation-Measures).

With ``BIOASQ_EVALUATION_JAR`` pointing to ``BioASQEvaluation.jar`` (its ``lib/`` beside it; fetch both with
``scripts/fetch_bioasq_evaluator.sh DIR``) and Java installed, the real jar scores our files
(``EvaluatorTask1b -phaseB -e 5 GOLDEN SYSTEM``; output fields 2-4 are factoid strict accuracy, lenient accuracy
and MRR) under a C locale, where Java 17 reads files as ASCII. Without it, the same rules are checked in Python:
``RULES`` records what the jar does with each kind of input (observed with the jar of commit 8c8e689 and read in its
source), and every rule case runs against our reader and scorer either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import data_dir

from biomamba_hf.bioasq.formats import (
    load_golden,
    load_predictions,
    question_types,
    read_golden_questions,
    write_submission,
)
from biomamba_hf.metrics import bioasq_factoid

JAR = os.environ.get("BIOASQ_EVALUATION_JAR")
KEYS = ("strict_acc", "lenient_acc", "mrr")


class EvaluatorFailed(Exception):
    """The jar stopped with an exception (it prints the stack trace and no scores)."""


def run_evaluator(golden: Path, system: Path) -> tuple[float, float, float]:
    jar = Path(JAR)
    if not jar.is_file() or not (jar.parent / "lib").is_dir():
        pytest.fail(
            f"BIOASQ_EVALUATION_JAR={JAR} is not the jar with lib/ beside it (scripts/fetch_bioasq_evaluator.sh)"
        )
    if shutil.which("java") is None:
        pytest.fail(
            "BIOASQ_EVALUATION_JAR is set but java is not on PATH (Debian: apt-get install default-jre-headless)"
        )
    classpath = f"{jar}{os.pathsep}{jar.parent / 'lib'}/*"
    # A C locale: Java 17 then reads both files as ASCII, so non-ASCII answers survive only as \u escapes.
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    command = ["java", "-cp", classpath, "evaluation.EvaluatorTask1b", "-phaseB", "-e", "5", str(golden), str(system)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    if proc.returncode != 0 or "Exception" in proc.stderr:
        raise EvaluatorFailed(
            proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit {proc.returncode}"
        )
    fields = proc.stdout.split()
    return float(fields[1]), float(fields[2]), float(fields[3])


def our_scores(golden: Path, system: Path) -> tuple[float, float, float]:
    scores = bioasq_factoid(load_predictions(system, question_types(golden)), load_golden(golden))
    return tuple(scores[key] for key in KEYS)


# --------------------------------------------------------------------------------------------------------------------
# The evaluator's rules, one case each
# --------------------------------------------------------------------------------------------------------------------

GOLDEN = {
    "questions": [
        {"id": "f1", "type": "factoid", "body": "?", "exact_answer": [["TNF", "TNF-alpha"], ["IL6"]]},
        {"id": "f2", "type": "factoid", "body": "?", "exact_answer": [[" fewer than 100"]]},
        {"id": "f3", "type": "factoid", "body": "?", "exact_answer": [["\u03b1-synuclein"]]},
        {"id": "l1", "type": "list", "body": "?", "exact_answer": [["a"], ["b"]]},
        {"id": "y1", "type": "yesno", "body": "?", "exact_answer": "yes"},
        {"id": "s1", "type": "summary", "body": "?"},
    ]
}
for _question in GOLDEN["questions"]:
    _question["ideal_answer"] = ["An expert's answer."]  # golden and training files give one per expert
# A submission in which all three factoid questions are right at rank 1.
BASE = [
    {"id": "f1", "type": "factoid", "exact_answer": [["tnf"]]},
    {"id": "f2", "type": "factoid", "exact_answer": [[" fewer than 100"]]},
    {"id": "f3", "type": "factoid", "exact_answer": [["\u03b1-synuclein"]]},
    {"id": "l1", "type": "list", "exact_answer": [["a"]]},
    {"id": "y1", "type": "yesno", "exact_answer": "yes"},
    {"id": "s1", "type": "summary"},
]
ALL_RIGHT, F1_WRONG = (1.0, 1.0, 1.0), (2 / 3, 2 / 3, 2 / 3)
_ABSENT = object()


def with_f1(exact_answer=_ABSENT, **fields):
    entry = {"id": "f1", "type": "factoid", **fields}
    if exact_answer is not _ABSENT:
        entry["exact_answer"] = exact_answer
    return [entry, *BASE[1:]]


def replaced(qid, **fields):
    return [{**q, **fields} if q["id"] == qid else q for q in BASE]


def without(qid, field=None):
    if field is None:
        return [q for q in BASE if q["id"] != qid]
    return [{k: v for k, v in q.items() if not (q["id"] == qid and k == field)} for q in BASE]


# (case, submission questions, what the jar gives: scores or "fails", what we do: "same" or a refusal pattern)
RULES = [
    # Matching: lower-cased on both sides (Task1bData.java:294), compared with String.equals (ExactAnswer.java:81).
    ("all right, Greek as \\u escapes", BASE, ALL_RIGHT, "same"),
    ("case does not matter", with_f1([["TNF-ALPHA"]]), ALL_RIGHT, "same"),
    ("Greek upper case", replaced("f3", exact_answer=[["\u0391-SYNUCLEIN"]]), ALL_RIGHT, "same"),
    ("whitespace is compared as written", with_f1([[" tnf "]]), F1_WRONG, "same"),
    ("a gold answer's leading space is needed", replaced("f2", exact_answer=[["fewer than 100"]]), F1_WRONG, "same"),
    # Ranks: every candidate counts (no cut at 5); [] takes no rank, a blank string does (Task1bData.java:354-376).
    ("right at rank 2 after a blank", with_f1([[""], ["tnf"]]), (2 / 3, 1.0, 5 / 6), "same"),
    ("right at rank 2 after a space", with_f1([[" "], ["il6"]]), (2 / 3, 1.0, 5 / 6), "same"),
    ("an empty candidate takes no rank", with_f1([[], ["tnf"]]), ALL_RIGHT, "same"),
    ("right at rank 5", with_f1([["a"], ["b"], ["c"], ["d"], ["IL6"]]), (2 / 3, 1.0, (2 + 1 / 5) / 3), "same"),
    ("7 candidates all count", with_f1([[c] for c in "abcdef"] + [["tnf"]]), (2 / 3, 1.0, (2 + 1 / 7) / 3), "has 7"),
    # -e 5 reads only the first string of a candidate (Task1bData.java:169-170).
    ("only the first synonym is read", with_f1([["wrong", "tnf"]]), F1_WRONG, "list of 2 synonyms"),
    # Unanswered questions: [] or no exact_answer score 0.
    ("factoid without exact_answer", with_f1(), F1_WRONG, "same"),
    ("factoid with []", with_f1([]), F1_WRONG, "same"),
    ("yes/no without exact_answer", without("y1", "exact_answer"), ALL_RIGHT, "same"),
    ("list with []", replaced("l1", exact_answer=[]), ALL_RIGHT, "same"),
    ("summary missing", without("s1"), ALL_RIGHT, "same"),
    # Missing questions: NullPointerException (QuestionAnswerEvaluator.java:93-116 on a null response).
    ("factoid missing", without("f1"), "fails", "not in the submission"),
    ("list missing", without("l1"), "fails", "not in the submission"),
    ("yes/no missing", without("y1"), "fails", "not in the submission"),
    # Shapes the jar fails on.
    ("flat exact_answer", with_f1(["tnf"]), "fails", r"exact_answer'\[0\] must be a list of one string"),
    ("nested too deep", with_f1([[["tnf"]]]), "fails", r"exact_answer'\[0\] must be a list of one string"),
    ("exact_answer null", with_f1(None), "fails", "is null"),
    ("yes/no with []", replaced("y1", exact_answer=[]), "fails", 'must be "yes" or "no"'),
    ("an entry without id first", [{"exact_answer": [["x"]]}, *BASE], "fails", "string 'id' field"),
    # Read otherwise than the file says: the type of the golden question counts (EvaluatorTask1b.java:190-191), the
    # first of two entries (Task1bData.java:523-533), a string read as a yes/no answer (Task1bData.java:219-233).
    ("typed list, scored as factoid", with_f1([["tnf"]], type="list"), ALL_RIGHT, "the golden file has a 'factoid'"),
    ("typed yesno", with_f1("yes", type="yesno"), F1_WRONG, "the golden file has a 'factoid'"),
    ("a string exact_answer", with_f1("tnf"), F1_WRONG, "must be a list of candidates"),
    ("listed twice, first counts", [{"id": "f1", "exact_answer": [["x"]]}, *BASE], F1_WRONG, "listed twice"),
    ("a number candidate", with_f1([[6]]), F1_WRONG, r"exact_answer'\[0\] must be a list of one string"),
    ("unknown questions are ignored", [*BASE, {"id": "zz", "exact_answer": [["x"]]}], ALL_RIGHT, "same"),
    # Not predictions: a golden file scores 1.0.
    ("the golden file itself", GOLDEN["questions"], ALL_RIGHT, "Is it a golden or training file"),
    (
        "golden answers without ideal_answer",
        [{k: v for k, v in q.items() if k != "ideal_answer"} for q in GOLDEN["questions"]],
        ALL_RIGHT,
        "list of 2 synonyms",
    ),
]


@pytest.mark.parametrize(("case", "questions", "official", "ours"), RULES, ids=[r[0] for r in RULES])
def test_rules_of_the_official_evaluator(case, questions, official, ours, tmp_path):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN), encoding="ascii")
    system = tmp_path / "system.json"
    system.write_text(json.dumps({"questions": questions}), encoding="ascii")  # \u escapes
    if JAR:
        if official == "fails":
            with pytest.raises(EvaluatorFailed):
                run_evaluator(golden, system)
        else:
            assert run_evaluator(golden, system) == pytest.approx(official, abs=1e-12)
    if ours == "same":
        assert our_scores(golden, system) == pytest.approx(official, abs=1e-12)
    else:
        with pytest.raises(ValueError, match=ours) as refusal:
            our_scores(golden, system)
        assert str(system) in str(refusal.value)


def test_raw_utf8_loses_greek_answers_in_the_evaluator_and_warns_here(tmp_path, caplog):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN), encoding="ascii")
    system = tmp_path / "system.json"
    system.write_text(json.dumps({"questions": BASE}, ensure_ascii=False), encoding="utf-8")
    if JAR:
        assert run_evaluator(golden, system) == pytest.approx(F1_WRONG)  # read as ASCII under a C locale
    assert our_scores(golden, system) == pytest.approx(ALL_RIGHT)
    assert "has non-ASCII characters" in caplog.text and "write \\u escapes" in caplog.text


def test_written_submissions_follow_the_rules(tmp_path):
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(GOLDEN), encoding="ascii")
    predictions = {"f1": ["x", "TNF", "b", "c", "d", "IL6"], "f2": [" fewer than 100"], "f3": ["\u03b1-Synuclein"]}
    path = write_submission(tmp_path / "s.json", predictions, read_golden_questions(golden, None))
    assert path.read_bytes().isascii()
    written = json.loads(path.read_text(encoding="ascii"))["questions"]
    assert written == [
        {"id": "f1", "type": "factoid", "exact_answer": [["x"], ["TNF"], ["b"], ["c"], ["d"]]},
        {"id": "f2", "type": "factoid", "exact_answer": [[" fewer than 100"]]},
        {"id": "f3", "type": "factoid", "exact_answer": [["\u03b1-Synuclein"]]},
        {"id": "l1", "type": "list", "exact_answer": []},
        {"id": "y1", "type": "yesno"},
        {"id": "s1", "type": "summary"},
    ]
    expected = (2 / 3, 1.0, (2 + 1 / 2) / 3)
    assert our_scores(golden, path) == pytest.approx(expected)
    assert tuple(bioasq_factoid(predictions, load_golden(golden))[k] for k in KEYS) == pytest.approx(expected)
    if JAR:
        assert run_evaluator(golden, path) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# Real golden files: the evaluator's scores of our submissions equal ours, batch by batch
# --------------------------------------------------------------------------------------------------------------------


def perturbed_predictions(golden: Path) -> dict[str, list[str]]:
    """Deterministic predictions with non-trivial scores: each factoid question gets one kind of answer in turn."""
    predictions = {}
    factoid = read_golden_questions(golden)
    for i, question in enumerate(factoid):
        answers = question["exact_answer"]
        first = answers[0][0]
        other = answers[-1][-1]  # another answer or synonym where there is one
        kind = 0 if first != first.strip() else i % 10  # " fewer than 100" (4B4) is credited only as written
        predictions[question["id"]] = [
            [first],  # right at rank 1, as written (leading spaces and Greek letters included)
            ["not it", other],  # right at rank 2
            ["a", "b", "c", "d", first.upper()],  # right at rank 5, upper case
            ["a", "b", "c", "d", "e", first],  # right at rank 6: not written, not scored
            ["certainly wrong"],  # wrong
            [],  # no answer
            [f" {first} "],  # padded: wrong for both
            [first.strip(), "x"],  # stripped: wrong only where the gold answer has surrounding spaces
            ["", first],  # a blank candidate takes rank 1
            ["x", "y", first.lower()],  # right at rank 3, lower case
        ][kind]
    return predictions


@pytest.mark.real_data
@pytest.mark.parametrize("batch", [f"{year}{n}" for year in ("4B", "5B") for n in range(1, 6)])
def test_official_scores_of_our_submissions_equal_ours(batch, tmp_path):
    golden = data_dir() / "bioasq" / f"{batch[0]}b" / "golden" / f"{batch}_golden.json"
    predictions = perturbed_predictions(golden)
    if batch == "4B4":  # the gold answer with a leading space, credited in its spaced form only
        assert predictions["57090c33cf1c325851000013"][0] == " fewer than 100"
    path = write_submission(tmp_path / f"submission_{batch}.json", predictions, read_golden_questions(golden, None))
    assert path.read_bytes().isascii()
    listed = [q["id"] for q in json.loads(path.read_text(encoding="ascii"))["questions"]]
    assert listed == list(question_types(golden))  # every question of the golden file, in its order
    scores = bioasq_factoid(predictions, load_golden(golden))
    ours = tuple(scores[key] for key in KEYS)
    assert 0 < ours[0] < ours[2] < ours[1] < 1  # strict < MRR < lenient: the cases above all show
    assert our_scores(golden, path) == pytest.approx(ours, abs=1e-12)  # the file scores as the predictions
    if JAR:
        assert run_evaluator(golden, path) == pytest.approx(ours, abs=1e-12)
