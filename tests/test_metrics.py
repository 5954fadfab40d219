"""BioASQ factoid measures: definitions, edge cases, properties, file formats, CLI and the evaluate module."""

from __future__ import annotations

import doctest
import json
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import count_opens, data_dir
from hypothesis import given, settings
from hypothesis import strategies as st

import biomamba_hf.bioasq.evaluation
import biomamba_hf.bioasq.formats
import biomamba_hf.bioasq.squad
import biomamba_hf.metrics.bioasq
from biomamba_hf.bioasq.formats import read_golden_batches
from biomamba_hf.metrics import (
    bioasq_factoid,
    bioasq_factoid_batches,
    clean_answer,
    evaluate_module_path,
    flatten_scores,
    load_golden,
    load_golden_batches,
    load_predictions,
    merge_candidates,
    merge_nbest,
    question_scores,
    question_types,
    read_golden_questions,
    to_submission,
    write_submission,
)
from biomamba_hf.metrics.cli import main

REFS = {"q1": [["BRCA1"]], "q2": [["Factor Xa", "FXa"], ["Xa"]], "q3": [["coilin"]]}


@pytest.mark.parametrize(
    "module",
    [biomamba_hf.metrics.bioasq, biomamba_hf.bioasq.formats, biomamba_hf.bioasq.squad, biomamba_hf.bioasq.evaluation],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# --------------------------------------------------------------------------------------------------------------------
# Definitions and edge cases
# --------------------------------------------------------------------------------------------------------------------


def scores_of(predictions, references=REFS):
    s = bioasq_factoid(predictions, references)
    return s["strict_acc"], s["lenient_acc"], s["mrr"]


def test_match_is_case_insensitive_and_compares_whitespace_as_written():
    # As the official evaluator: lower-cased on both sides, never stripped (the 4B4 gold answer " fewer than 100").
    assert scores_of({"q1": ["brca1"]}, {"q1": [["BRCA1"]]}) == (1.0, 1.0, 1.0)
    assert scores_of({"q1": ["  brca1\n"]}, {"q1": [["BRCA1"]]}) == (0.0, 0.0, 0.0)
    assert scores_of({"q1": ["fewer than 100"]}, {"q1": [[" fewer than 100"]]}) == (0.0, 0.0, 0.0)
    assert scores_of({"q1": [" Fewer than 100"]}, {"q1": [[" fewer than 100"]]}) == (1.0, 1.0, 1.0)
    # Exact match, not containment or token overlap.
    assert scores_of({"q1": ["BRCA1 gene", "BRCA"]}, {"q1": [["BRCA1"]]}) == (0.0, 0.0, 0.0)


def test_only_the_first_five_candidates_count():
    wrong = ["a", "b", "c", "d"]
    assert scores_of({"q1": [*wrong, "BRCA1"]}, {"q1": [["BRCA1"]]}) == (0.0, 1.0, 0.2)
    assert scores_of({"q1": [*wrong, "e", "BRCA1"]}, {"q1": [["BRCA1"]]}) == (0.0, 0.0, 0.0)


def test_blank_candidates_take_a_rank_and_empty_lists_do_not():
    # The evaluator ranks [""] and [" "] (Task1bData.java:365-368) but skips [] (no string read).
    assert scores_of({"q1": ["", "  ", "BRCA1"]}, {"q1": [["BRCA1"]]}) == (0.0, 1.0, pytest.approx(1 / 3))
    assert scores_of({"q1": [[], [], "BRCA1"]}, {"q1": [["BRCA1"]]}) == (1.0, 1.0, 1.0)
    assert bioasq_factoid({"q1": [[]]}, {"q1": [["BRCA1"]]})["num_answered"] == 0
    assert bioasq_factoid({"q1": [""]}, {"q1": [["BRCA1"]]})["num_answered"] == 1


def test_missing_predictions_score_zero_and_count():
    s = bioasq_factoid({"q1": ["BRCA1"]}, REFS)
    assert (s["strict_acc"], s["lenient_acc"], s["mrr"]) == (1 / 3, 1 / 3, 1 / 3)
    assert (s["num_questions"], s["num_answered"], s["num_unknown_predictions"]) == (3, 1, 0)


def test_synonyms_and_several_answers_all_count():
    # A synonym of the first answer, the second answer: both correct.
    assert question_scores({"q2": ["fxa"]}, {"q2": REFS["q2"]})["q2"]["strict_acc"] == 1.0
    assert question_scores({"q2": ["other", "XA"]}, {"q2": REFS["q2"]})["q2"]["mrr"] == 0.5
    # A flat list of strings is read as one answer's synonyms.
    assert scores_of({"q2": ["FXa"]}, {"q2": ["Factor Xa", "FXa"]}) == (1.0, 1.0, 1.0)


def test_a_candidate_is_one_string_and_synonym_lists_are_refused():
    assert scores_of({"q1": [["brca1"]]}, {"q1": [["BRCA1"]]}) == (1.0, 1.0, 1.0)
    # Since BioASQ 5 the evaluator reads only the first synonym: "brca1" would silently not count.
    with pytest.raises(ValueError, match=r"predictions\['q1'\]\[0\] is a list of 2 synonyms .* give one string"):
        bioasq_factoid({"q1": [["breast cancer 1", "brca1"]]}, {"q1": [["BRCA1"]]})


def test_duplicate_wrong_candidates_still_take_ranks():
    assert scores_of({"q1": ["x", "x", "BRCA1"]}, {"q1": [["BRCA1"]]}) == (0.0, 1.0, pytest.approx(1 / 3))


def test_unknown_predictions_are_ignored_but_counted():
    s = bioasq_factoid({"q1_000": ["BRCA1"], "q1": ["BRCA1"]}, {"q1": [["BRCA1"]]})
    assert (s["strict_acc"], s["num_unknown_predictions"]) == (1.0, 1)


def test_blank_gold_answer_matches_only_the_same_blank():
    # 4B5 has the gold answer [[" "]]; the evaluator credits exactly " " there, so do we.
    s = bioasq_factoid({"q1": ["", "x"], "q2": ["BRCA1"]}, {"q1": [[" "]], "q2": [["BRCA1"]]})
    assert (s["strict_acc"], s["lenient_acc"], s["num_questions"]) == (0.5, 0.5, 2)
    assert scores_of({"q1": ["x", " "]}, {"q1": [[" "]]}) == (0.0, 1.0, 0.5)


@pytest.mark.parametrize(
    ("predictions", "references", "match"),
    [
        ({"q1": "BRCA1"}, {"q1": [["BRCA1"]]}, r"predictions\['q1'\] must be a ranked list .* wrap a single answer"),
        ({"q1": [3]}, {"q1": [["BRCA1"]]}, r"predictions\['q1'\]\[0\] must be a string or a one-string list"),
        ({"q1": ["x"]}, {"q1": "BRCA1"}, r"references\['q1'\] must be a list of synonym lists"),
        ({"q1": ["x"]}, {"q1": [[1]]}, r"references\['q1'\]\[0\] must be a string or a list of synonym strings"),
        (["x"], {"q1": [["BRCA1"]]}, "predictions must be a dict keyed by BioASQ question id, got list"),
        ({}, {}, "references is empty"),
    ],
)
def test_bad_inputs_raise(predictions, references, match):
    with pytest.raises(ValueError, match=match):
        bioasq_factoid(predictions, references)


# --------------------------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------------------------

WORDS = st.sampled_from(["brca1", "BRCA1", " tnf ", "TNF", "il-6", "xa", "", "coilin"])
REFERENCES = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.lists(st.lists(WORDS, min_size=1, max_size=3), min_size=1, max_size=2),
    min_size=1,
    max_size=6,
)


@st.composite
def predictions_and_references(draw):
    references = draw(REFERENCES)
    ids = st.sampled_from([*references, "unknown"])
    predictions = draw(st.dictionaries(ids, st.lists(WORDS, max_size=7), max_size=len(references) + 1))
    return predictions, references


@settings(max_examples=150, deadline=None)
@given(predictions_and_references())
def test_scores_are_bounded_and_ordered(data):
    predictions, references = data
    s = bioasq_factoid(predictions, references)
    assert 0.0 <= s["strict_acc"] <= s["mrr"] <= s["lenient_acc"] <= 1.0
    assert s["num_questions"] == len(references)
    assert s["num_answered"] <= s["num_questions"]


@settings(max_examples=100, deadline=None)
@given(predictions_and_references(), st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_question_order(data, rng):
    predictions, references = data
    keys = list(references)
    rng.shuffle(keys)
    shuffled = {k: references[k] for k in keys}
    pred_keys = list(predictions)
    rng.shuffle(pred_keys)
    assert bioasq_factoid({k: predictions[k] for k in pred_keys}, shuffled) == pytest.approx(
        bioasq_factoid(predictions, references)
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=6), st.data())
def test_moving_a_correct_answer_up_never_lowers_mrr(wrong, data):
    position = data.draw(st.integers(0, len(wrong)))
    candidates = [*wrong[:position], "GOLD", *wrong[position:]]
    up = data.draw(st.integers(0, position))
    moved = [*wrong[:up], "GOLD", *wrong[up:]]
    references = {"q": [["gold"]]}
    before, after = bioasq_factoid({"q": candidates}, references), bioasq_factoid({"q": moved}, references)
    assert after["mrr"] >= before["mrr"]
    assert after["mrr"] == (1.0 / (up + 1) if up < 5 else 0.0)
    assert after["strict_acc"] == (1.0 if up == 0 else 0.0)


# --------------------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------------------


def test_batches_macro_and_micro_averages():
    refs = {"b1": {"a": [["x"]], "b": [["y"]], "c": [["z"]]}, "b2": {"d": [["w"]]}}
    out = bioasq_factoid_batches({"a": ["x"], "d": ["nope", "w"], "zz": ["?"]}, refs)
    assert out["batches"]["b1"]["strict_acc"] == pytest.approx(1 / 3)
    assert out["batches"]["b2"]["mrr"] == 0.5
    assert out["macro"]["strict_acc"] == pytest.approx((1 / 3 + 0.0) / 2)
    assert out["macro"]["mrr"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert out["micro"]["mrr"] == pytest.approx((1 + 0.5) / 4)
    assert out["macro"]["num_batches"] == 2 and out["micro"]["num_questions"] == 4
    assert out["num_unknown_predictions"] == 1
    flat = flatten_scores(out, "eval_")
    assert flat["eval_macro_mrr"] == out["macro"]["mrr"] and flat["eval_b2_num_answered"] == 1


def test_batches_reject_a_question_in_two_batches():
    with pytest.raises(ValueError, match="question 'a' is in both batch 'b1' and batch 'b2'"):
        bioasq_factoid_batches({}, {"b1": {"a": [["x"]]}, "b2": {"a": [["x"]]}})
    with pytest.raises(ValueError, match=r"references_by_batch\['b1'\] is empty"):
        bioasq_factoid_batches({}, {"b1": {}})


# --------------------------------------------------------------------------------------------------------------------
# Merging candidates from several contexts
# --------------------------------------------------------------------------------------------------------------------


def test_merge_sums_probabilities_case_insensitively_and_keeps_top_five():
    triples = [("q1_000", f"wrong{i}", 0.1 + i / 1000) for i in range(6)]
    triples += [("q1_001", "factor Xa", 0.06), ("q1_002", "Factor XA.", 0.07)]  # 0.13 in total
    merged = merge_candidates(triples)
    assert merged["q1"] == ["Factor XA", "wrong5", "wrong4", "wrong3", "wrong2"]
    assert merge_candidates(triples, reduce="max", top_k=2)["q1"] == ["wrong5", "wrong4"]


def test_merge_cleans_and_drops_long_or_broken_spans():
    merged = merge_candidates(
        [("q_000", "(FXa)", 0.9), ("q_001", "factor Xa (FXa", 0.8), ("q_002", "x" * 101, 0.7), ("q_003", "ok,", 0.1)]
    )
    assert merged == {"q": ["FXa", "ok"]}
    assert merge_candidates([("q_000", "ok,", 0.1)], clean=False) == {"q": ["ok,"]}
    assert merge_candidates([("q_000", "(", 0.1)]) == {"q": []}


def test_merge_nbest_reads_transformers_nbest_layout():
    nbest = {
        "q1_000": [{"text": "BRCA1", "probability": 0.4, "start_logit": 1.0}, {"text": "TP53", "probability": 0.5}],
        "q1_001": [{"text": "brca1", "probability": 0.3}],
    }
    assert merge_nbest(nbest) == {"q1": ["BRCA1", "TP53"]}
    logits = {"q1_000": [{"text": "TP53", "start_logit": -1.0}, {"text": "BRCA1", "start_logit": 2.0}]}
    assert merge_nbest(logits, score_key="start_logit", reduce="max") == {"q1": ["BRCA1", "TP53"]}
    with pytest.raises(ValueError, match=r"nbest\['q1_000'\]\[1\] must be a dict with 'text' and 'start_logit'"):
        merge_nbest(nbest, score_key="start_logit")


@pytest.mark.parametrize(
    ("triples", "kwargs", "match"),
    [
        ([("q_000", "x", -1.0)], {}, "score -1.0 is negative, but reduce='sum' adds up probabilities"),
        ([("q_000", "x", float("nan"))], {"reduce": "max"}, "score must be a finite number"),
        ([("q_000", "x")], {}, r"item 0 must be an \(id, text, score\) triple"),
        ([("q_000", "x", 1.0)], {"reduce": "mean"}, "reduce must be 'sum' or 'max', got 'mean'"),
        ([("q_000", "x", 1.0)], {"top_k": 0}, "top_k must be a positive int"),
    ],
)
def test_merge_rejects_bad_input(triples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        merge_candidates(triples, **kwargs)


def test_clean_answer_keeps_inner_parentheses():
    assert clean_answer("interleukin 6 (IL-6).") == "interleukin 6 (IL-6)"


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def golden_question(qid, exact_answer, qtype="factoid", **extra):
    # Golden files give one ideal answer per expert: a list.
    return {
        "id": qid,
        "type": qtype,
        "body": f"Question {qid}?",
        "exact_answer": exact_answer,
        "ideal_answer": [f"Answer to {qid}."],
        **extra,
    }


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def golden_files(tmp_path):
    first = write_json(
        tmp_path / "4B1_golden.json",
        {
            "questions": [
                golden_question("q1", [["BRCA1"]]),
                golden_question("q2", [["Factor Xa", "FXa"], ["Xa"]]),
                golden_question("y1", "yes", "yesno"),
                {"id": "s1", "type": "summary", "body": "Summary?"},
            ]
        },
    )
    second = write_json(tmp_path / "4B2_golden.json", {"questions": [golden_question("q3", [["coilin"]])]})
    return [first, second]


def test_load_golden_keeps_factoid_questions(golden_files):
    assert load_golden(golden_files) == REFS
    batches = load_golden_batches(golden_files)
    assert list(batches) == ["4b-1", "4b-2"] and batches["4b-2"] == {"q3": [["coilin"]]}
    assert load_golden(golden_files[0], question_types=["list"]) == {}


def test_load_golden_warns_about_blank_answers(tmp_path, caplog):
    path = write_json(tmp_path / "g.json", {"questions": [golden_question("q1", [[" "]])]})
    with caplog.at_level(logging.WARNING, logger="biomamba_hf.bioasq.formats"):
        assert load_golden(path) == {"q1": [[" "]]}
    assert "question 'q1' has no non-blank gold answer" in caplog.text
    assert "only a candidate written exactly so matches it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="biomamba_hf.bioasq.formats"):
        assert load_golden(path) == {"q1": [[" "]]}  # the same file read again (references, then question types)
    assert "no non-blank gold answer" not in caplog.text  # said once


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"questions": [', r"g\.json is not valid JSON: Expecting value at line 1 column 16"),
        ("[]", r"g\.json: expected a BioASQ JSON object with a 'questions' list"),
        ('{"questions": [{"type": "factoid"}]}', r"g\.json: questions\[0\] has no string 'id' field"),
        ('{"questions": [{"id": "q1"}]}', r"g\.json: question 'q1' \(questions\[0\]\): field 'type' must be one of"),
        (
            json.dumps({"questions": [golden_question("q7", "BRCA1")]}),
            r"g\.json: question 'q7' \(questions\[0\]\): field 'exact_answer' must be a list of synonym lists",
        ),
        (
            json.dumps({"questions": [golden_question("q7", [["ok"], [2]])]}),
            r"question 'q7' \(questions\[0\]\): field 'exact_answer'",
        ),
    ],
)
def test_load_golden_errors_name_file_record_and_field(tmp_path, content, match):
    path = tmp_path / "g.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_golden(path)


def test_load_golden_rejects_duplicate_questions(golden_files, tmp_path):
    again = write_json(tmp_path / "again_golden.json", {"questions": [golden_question("q1", [["x"]])]})
    with pytest.raises(ValueError, match=r"again_golden\.json: question 'q1' is also in .*4B1_golden\.json"):
        load_golden([*golden_files, again])
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_golden(tmp_path / "missing.json")


def test_submission_lists_every_question_with_at_most_five_candidates(tmp_path):
    predictions = {"q1": ["a", " b", [], "", "Ωmega", "e", "BRCA1"], "q9": ["unknown"]}
    submission = to_submission(predictions, REFS)
    assert [q["id"] for q in submission["questions"]] == ["q1", "q2", "q3"]
    # Written as predicted (whitespace, blanks), one string each, the first five; [] is no candidate.
    assert submission["questions"][0]["exact_answer"] == [["a"], [" b"], [""], ["Ωmega"], ["e"]]
    assert submission["questions"][1] == {"id": "q2", "type": "factoid", "exact_answer": []}
    path = write_submission(tmp_path / "out" / "submission.json", predictions, REFS)
    assert path.read_bytes().isascii() and "\\u03a9mega" in path.read_text()
    # Round trip: reading the submission back gives the same scores.
    assert bioasq_factoid(load_predictions(path), REFS) == {
        **bioasq_factoid(predictions, REFS),
        "num_unknown_predictions": 0,
    }
    with pytest.raises(ValueError, match="top_k must be an int from 1 to 5"):
        to_submission(predictions, REFS, top_k=6)


def test_submission_lists_the_questions_of_every_type_of_the_golden_files(golden_files, tmp_path):
    types = question_types(golden_files)
    assert types == {"q1": "factoid", "q2": "factoid", "y1": "yesno", "s1": "summary", "q3": "factoid"}
    path = write_submission(tmp_path / "s.json", {"q1": ["BRCA1"], "y1": ["yes"]}, types)
    assert json.loads(path.read_text())["questions"] == [
        {"id": "q1", "type": "factoid", "exact_answer": [["BRCA1"]]},
        {"id": "q2", "type": "factoid", "exact_answer": []},
        {"id": "y1", "type": "yesno"},  # unanswered: no exact_answer (the evaluator fails on [] there)
        {"id": "s1", "type": "summary"},
        {"id": "q3", "type": "factoid", "exact_answer": []},
    ]
    assert load_predictions(path, types) == {"q1": ["BRCA1"], "q2": [], "q3": []}
    records = [q for path in golden_files for q in read_golden_questions(path, None)]
    assert to_submission({}, records) == to_submission({}, types)


def test_load_predictions_formats_and_errors(tmp_path):
    ours = write_json(tmp_path / "p.json", {"q1": ["BRCA1", " x"], "q2": "FXa", "q3": [["IL6"], []]})
    assert load_predictions(ours) == {"q1": ["BRCA1", " x"], "q2": ["FXa"], "q3": ["IL6"]}
    submission = write_json(
        tmp_path / "s.json",
        {"questions": [{"id": "q1", "exact_answer": [["BRCA1"], [" brca-1"]]}, {"id": "y", "type": "yesno"}]},
    )
    assert load_predictions(submission) == {"q1": ["BRCA1", " brca-1"]}
    bad = write_json(tmp_path / "bad.json", {"q1": [{"text": "BRCA1"}]})
    with pytest.raises(ValueError, match=r"bad\.json: question 'q1': the value is a list of objects .* --nbest"):
        load_predictions(bad)
    bad = write_json(tmp_path / "bad.json", {"q1": 5})
    with pytest.raises(ValueError, match=r"bad\.json: question 'q1': the value must be a ranked list"):
        load_predictions(bad)
    bad = write_json(tmp_path / "bad.json", {"questions": [{"id": "q1", "type": "factoid", "exact_answer": "BRCA1"}]})
    with pytest.raises(ValueError, match=r"question 'q1' \(questions\[0\]\): field 'exact_answer' of a factoid"):
        load_predictions(bad)


def test_reading_a_submission_refuses_what_the_evaluator_reads_otherwise(golden_files, tmp_path):
    types = question_types(golden_files)
    full = [{"id": "q2", "type": "factoid"}, {"id": "y1", "type": "yesno"}, {"id": "q3", "type": "factoid"}]

    def refused(entry, match, golden_types=types):
        path = write_json(tmp_path / "s.json", {"questions": [entry, *full]})
        with pytest.raises(ValueError, match=match) as err:
            load_predictions(path, golden_types)
        assert str(path) in str(err.value)

    refused({"id": "q1", "exact_answer": [["BRCA1", "brca-1"]]}, r"question 'q1' .*list of 2 synonyms .*one string")
    refused({"id": "q1", "exact_answer": ["BRCA1"]}, r"'exact_answer'\[0\] must be a list of one string .*flat list")
    refused({"id": "q1", "exact_answer": [[c] for c in "abcdef"]}, r"has 6 candidates; BioASQ allows 5")
    refused({"id": "q1", "type": "list", "exact_answer": []}, r"'type' is 'list' but the golden file has a 'factoid'")
    refused({"id": "q1", "exact_answer": None}, r"'exact_answer' is null")
    refused({"id": "q1", "type": "factoid"}, r"2 question\(s\)|1 question\(s\)", {**types, "extra": "list"})
    path = write_json(tmp_path / "s.json", {"questions": [{"id": "y1", "type": "yesno", "exact_answer": []}]})
    with pytest.raises(ValueError, match=r"question 'y1' .* must be \"yes\" or \"no\""):
        load_predictions(path)
    path = write_json(tmp_path / "s.json", {"questions": full})
    with pytest.raises(
        ValueError, match=r"1 question\(s\) of the golden files are not in the submission \(first: 'q1'"
    ):
        load_predictions(path, types)


def test_cli_refuses_files_that_are_not_predictions(golden_files, tmp_path, capsys):
    assert main([str(golden_files[0]), "--golden", *map(str, golden_files)]) == 1
    assert f"{golden_files[0]} is the golden file" in capsys.readouterr().err
    copy = write_json(tmp_path / "copy.json", json.loads(golden_files[0].read_text()))
    assert main([str(copy), "--golden", str(golden_files[0])]) == 1
    err = capsys.readouterr().err
    assert "copy.json is not a predictions file" in err and "Is it a golden or training file" in err
    squad = write_json(tmp_path / "squad.json", {"version": "BioASQ4b", "data": []})
    assert main([str(squad), "--golden", str(golden_files[0])]) == 1
    assert "squad.json is a SQuAD-format file" in capsys.readouterr().err
    assert main([str(copy), "--nbest", "--golden", str(golden_files[0])]) == 1
    assert "drop --nbest" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def test_cli_scores_batches_and_writes_json_and_submission(golden_files, tmp_path, capsys):
    predictions = write_json(tmp_path / "p.json", {"q1": ["brca1"], "q2": ["x", "FXa"], "qq": ["?"]})
    out, sub = tmp_path / "scores.json", tmp_path / "submission.json"
    status = main(
        [str(predictions), "--golden", str(tmp_path), "--output_json", str(out), "--per_question"]
        + ["--write_submission", str(sub)]
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "4b-1" in captured.out and "macro (2 batches)" in captured.out
    assert "1 of 3 prediction ids are not golden question ids" in captured.err
    written = json.loads(out.read_text())
    expected = bioasq_factoid_batches(load_predictions(predictions), load_golden_batches(golden_files))
    assert written["macro"] == pytest.approx(expected["macro"])
    assert written["batches"]["4b-1"]["mrr"] == 0.75
    assert written["questions"]["4b-1"]["q2"]["mrr"] == 0.5
    assert [q["id"] for q in json.loads(sub.read_text())["questions"]] == ["q1", "q2", "y1", "s1", "q3"]


def test_cli_reads_each_golden_file_once(golden_files, tmp_path, monkeypatch, capsys):
    predictions = write_json(tmp_path / "p.json", {"q1": ["brca1"], "q3": ["coilin"]})
    opens = count_opens(monkeypatch)
    assert (
        main([str(predictions), "--golden", *map(str, golden_files), "--write_submission", str(tmp_path / "s.json")])
        == 0
    )
    assert {path.name: opens[path.resolve()] for path in golden_files} == {"4B1_golden.json": 1, "4B2_golden.json": 1}
    golden = read_golden_batches(golden_files)  # the one reader: references and every question's type
    assert golden.references == load_golden_batches(golden_files)
    assert (
        golden.types
        == question_types(golden_files)
        == {"q1": "factoid", "q2": "factoid", "y1": "yesno", "s1": "summary", "q3": "factoid"}
    )


def test_golden_batches_refuse_a_batch_or_question_given_twice(golden_files, tmp_path):
    with pytest.raises(ValueError, match=r"4B1_golden\.json: batch '4b-1' is given twice"):
        read_golden_batches([*golden_files, golden_files[0]])
    again = write_json(tmp_path / "4B3_golden.json", {"questions": [golden_question("q3", [["x"]])]})
    for reader in (read_golden_batches, load_golden_batches, load_golden, question_types):
        with pytest.raises(ValueError, match=r"4B3_golden\.json: question 'q3' is also in .*4B2_golden\.json"):
            reader([*golden_files, again])


def test_cli_merges_nbest_files(golden_files, tmp_path, capsys):
    nbest = {
        "q1_000": [{"text": "TP53", "probability": 0.6}, {"text": "BRCA1", "probability": 0.4}],
        "q1_001": [{"text": "brca1", "probability": 0.3}],
    }
    out = tmp_path / "scores.json"
    status = main([str(write_json(tmp_path / "nbest.json", nbest)), "--nbest", "--golden", str(golden_files[0])])
    assert status == 0
    args = [str(tmp_path / "nbest.json"), "--nbest", "--golden", str(golden_files[0]), "--output_json", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["batches"]["4b-1"]["strict_acc"] == 0.5  # BRCA1 0.7 > TP53 0.6
    capsys.readouterr()


def test_cli_reports_bad_input(tmp_path, capsys):
    predictions = write_json(tmp_path / "p.json", {"q1": ["x"]})
    (tmp_path / "4B1_golden.json").write_text("{not json", encoding="utf-8")
    assert main([str(predictions), "--golden", str(tmp_path / "4B1_golden.json")]) == 1
    assert "4B1_golden.json is not valid JSON" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(predictions), "--golden", str(empty)]) == 1
    assert "the directory has no *_golden.json file" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(golden_files, tmp_path, monkeypatch, capsys):
    predictions = write_json(tmp_path / "p.json", {"q1": ["BRCA1"]})
    argv = ["python -m biomamba_hf.metrics", str(predictions), "--golden", *map(str, golden_files)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("biomamba_hf.metrics", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "micro" in out and "0.3333" in out


# --------------------------------------------------------------------------------------------------------------------
# The evaluate module, loaded offline from its local folder in a fresh process
# --------------------------------------------------------------------------------------------------------------------

EVALUATE_SCRIPT = """
import json, sys
import evaluate
path, preds, refs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
plain = evaluate.load(path).compute(predictions=preds, references=refs)
batched = evaluate.load(path, "batches").compute(
    predictions=preds, references=[{**r, "batch": "b1" if r["id"] != "q3" else "b2"} for r in refs]
)
print(json.dumps({"plain": plain, "batched": batched}))
"""


@pytest.mark.slow
def test_evaluate_module_loads_offline_and_matches(tmp_path):
    # evaluate pairs predictions with references row by row: one row per reference question, q3 unanswered.
    predictions = {"q1": ["brca1", "x"], "q2": ["x", "Xa"], "q3": []}
    preds = [{"id": k, "prediction_text": v} for k, v in predictions.items()]
    refs = [{"id": k, "answers": v} for k, v in REFS.items()]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PYTHONPATH": str(Path(biomamba_hf.metrics.bioasq.__file__).parents[2]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", EVALUATE_SCRIPT, evaluate_module_path(), json.dumps(preds), json.dumps(refs)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["plain"] == pytest.approx(bioasq_factoid(predictions, REFS))
    expected = flatten_scores(
        bioasq_factoid_batches(predictions, {"b1": {k: REFS[k] for k in ("q1", "q2")}, "b2": {"q3": REFS["q3"]}})
    )
    assert result["batched"] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------------------------
# Real golden files
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize("year", ["4b", "5b"])
def test_cli_on_real_golden_files_scores_gold_answers_perfectly(year, tmp_path, capsys):
    golden = data_dir() / "bioasq" / year / "golden"
    references = load_golden(sorted(golden.glob("*_golden.json")))
    # Rank a wrong answer first and the first gold synonym second.
    predictions = {qid: ["not an answer", answers[0][0]] for qid, answers in references.items()}
    path = write_json(tmp_path / "p.json", predictions)
    assert main([str(path), "--golden", str(golden), "--output_json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["macro"]["num_batches"] == 5
    assert scores["micro"]["num_questions"] == {"4b": 161, "5b": 150}[year]
    # Every gold answer as written scores, the blank [[" "]] of 4B5 and the spaced " fewer than 100" of 4B4 too.
    assert scores["micro"]["strict_acc"] == 0.0
    assert scores["micro"]["lenient_acc"] == 1.0
    assert scores["micro"]["mrr"] == 0.5
    capsys.readouterr()
