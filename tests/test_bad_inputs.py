"""A corpus of malformed inputs (``tests/bad_inputs/``, one small file or folder each, plus a 1 MB question made on
the fly): each one must fail with a ``ValueError`` naming the file, the record and the field and saying how to fix it,
before any training starts, leaving no output behind.

An input that the code does not yet reject clearly belongs here too, as a strict xfail naming the file that must change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import example_script

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).with_name("bad_inputs")
QID = "56c073fcef6e394741000020"


def _huge_question(tmp_path: Path) -> Path:
    """A SQuAD file whose question is 1 MB of text (a context pasted into the question field)."""
    squad = json.loads((BAD / "squad_empty_id.json").read_text())
    qa = squad["data"][0]["paragraphs"][0]["qas"][0]
    qa.update(id=f"{QID}_000", question="Which gene is mutated in cystic fibrosis? " * 24_000)
    path = tmp_path / "squad_huge_question.json"
    path.write_text(json.dumps(squad))
    assert path.stat().st_size > 1_000_000
    return path


# (input, reader, pattern the ValueError message must match)
READER_CASES = [
    ("squad_truncated.json", "squad", r"squad_truncated.json is not valid JSON: Unterminated string .*at line 1 column \d+"),
    ("squad_wrong_schema.json", "squad", r"squad_wrong_schema.json: expected a SQuAD JSON object with a 'data' list .*got dict with keys \['questions', 'version'\]"),
    ("squad_answer_start_mismatch.json", "squad", rf"squad_answer_start_mismatch.json: qa '{QID}_000': answers\[0\].answer_start=5 does not point to the answer text 'CFTR' \(the context has 'c fi' there\); fix answer_start"),
    ("squad_non_utf8.json", "squad", r"squad_non_utf8.json is not UTF-8 text \(invalid start byte at byte \d+\)"),
    ("squad_duplicate_ids.json", "squad", rf"squad_duplicate_ids.json: qa '{QID}_000' is also in .*squad_duplicate_ids.json; qa ids must be unique"),
    ("squad_missing_question.json", "squad", rf"squad_missing_question.json: qa '{QID}_000': field 'question' must be a str, got None; give the question text"),
    ("squad_answers_not_a_list.json", "squad", rf"squad_answers_not_a_list.json: qa '{QID}_000': field 'answers' must be a list, got 'CFTR'"),
    ("squad_empty_id.json", "squad", r"squad_empty_id.json: data\[0\].paragraphs\[0\].qas\[0\]: field 'id' must be a non-empty string, got ''"),
    ("squad_empty_context.json", "squad", rf"squad_empty_context.json: .*'{QID}_000'.*field 'context'.*empty"),
    (_huge_question, "squad", rf"squad_huge_question.json: qa '{QID}_000': field 'question' is \d+ characters"),
    ("golden_questions_not_a_list.json", "golden", r"golden_questions_not_a_list.json: expected a BioASQ JSON object with a 'questions' list"),
    ("golden_bad_exact_answer.json", "golden", rf"golden_bad_exact_answer.json: question '{QID}' \(questions\[0\]\): field 'exact_answer' must be a list of synonym lists .*got 'CFTR'"),
    ("golden_missing_type.json", "golden", rf"golden_missing_type.json: question '{QID}' \(questions\[0\]\): field 'type' must be one of 'factoid', 'list', 'yesno', 'summary', got None"),
    ("golden_missing_id.json", "golden", r"golden_missing_id.json: questions\[0\] has no string 'id' field \(got None\)"),
    ("golden_duplicate_ids.json", "golden", rf"golden_duplicate_ids.json: question '{QID}' is also in .*golden_duplicate_ids.json; question ids must be unique"),
    ("golden_snippet_without_text.json", "golden", rf"golden_snippet_without_text.json: question '{QID}': field 'snippets\[0\].text' must be a string, got None"),
    ("testset_golden_missing_questions", "test_set", r"BioASQ-test-factoid-4b-1.json: 1 question\(s\) of batch '4b-1' are not factoid questions of .*4B1_golden.json \(first: '5713bf261174fb1755000011'\); is the golden file of the right batch\?"),
    ("predictions_not_a_list.json", "predictions", rf"predictions_not_a_list.json: question '{QID}': the value must be a ranked list of answer strings .*got 5"),
    ("predictions_submission_duplicate.json", "predictions", rf"predictions_submission_duplicate.json: question '{QID}' \(questions\[1\]\) is listed twice"),
]  # fmt: skip


def _read(reader: str, path: Path):
    from biomamba_hf.bioasq.evaluation import load_test_set
    from biomamba_hf.bioasq.formats import load_predictions
    from biomamba_hf.bioasq.squad import golden_to_squad, read_squad_bioasq

    readers = {
        "squad": read_squad_bioasq,
        "golden": lambda p: golden_to_squad(p, as_dataset=False),
        "test_set": load_test_set,
        "predictions": load_predictions,
    }
    return readers[reader](path)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("name", "reader", "message"), READER_CASES)
def test_malformed_data_files_are_refused_naming_file_record_and_field(name, reader, message, tmp_path):
    path = name(tmp_path) if callable(name) else BAD / name
    before = _listing(BAD), _listing(tmp_path)
    with pytest.raises(ValueError, match=message):
        _read(reader, path)
    assert (_listing(BAD), _listing(tmp_path)) == before  # nothing written anywhere


def test_predictions_for_unknown_question_ids_are_reported(tmp_path, capsys):
    """Not an error by design (the official evaluator ignores them too), but never silent: counted and warned about."""
    from biomamba_hf.bioasq.formats import load_golden, load_predictions
    from biomamba_hf.metrics.bioasq import bioasq_factoid
    from biomamba_hf.metrics.cli import main

    predictions = load_predictions(BAD / "predictions_unknown_ids.json")
    scores = bioasq_factoid(predictions, load_golden(BAD / "references_4b.json"))
    assert scores["num_unknown_predictions"] == 1 and scores["strict_acc"] == 1.0
    assert main([str(BAD / "predictions_unknown_ids.json"), "--golden", str(BAD / "references_4b.json")]) == 0
    assert "warning: 1 of 2 prediction ids are not golden question ids and were ignored" in capsys.readouterr().err


# ---------------------------------------------------------------- run_clm.py: bad corpora, configs, tokenizers


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: every error below must come first."""
    from transformers import Trainer

    def train(self, *args, **kwargs):
        raise AssertionError("training started before the bad input was reported")

    monkeypatch.setattr(Trainer, "train", train)


def _clm_command(tmp_path, tokenizer_dir, train_file, **overrides) -> list[str]:
    args = {
        "--model_type": "mamba",
        "--config_overrides": "hidden_size=32,num_hidden_layers=1",
        "--tokenizer_name": tokenizer_dir,
        "--train_file": train_file,
        "--block_size": 32,
        "--max_steps": 2,
        "--cache_dir": tmp_path / "cache",
        "--output_dir": tmp_path / "out",
        "--report_to": "none",
    }
    args.update(overrides)
    flat = [str(x) for key, value in args.items() if value is not None for x in (key, value)]
    return [*flat, "--do_train"]


@pytest.fixture(scope="module")
def good_corpus(tmp_path_factory):
    from helpers import SENTENCES

    path = tmp_path_factory.mktemp("good") / "train.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(SENTENCES * 3)))
    return path


CLM_CASES = [
    ("clm_missing_text_field.jsonl", {}, r"--train_file .*clm_missing_text_field.jsonl: no field 'text' in the records \(fields: \['abstract', 'id'\]\)\. Pass --text_column"),
    ("clm_text_not_a_string.jsonl", {}, r"--train_file .*clm_text_not_a_string.jsonl: record 0 \(id 'pmid:0'\): field 'text' holds a int, not a string"),
    ("clm_short.jsonl", {}, r"The training text is shorter than one block of --block_size 32 tokens: use a smaller --block_size or more text"),
    ("good", {"--block_size": 100_000}, r"The training text is shorter than one block of --block_size 100000 tokens"),
    ("clm_empty.jsonl", {}, r"--train_file .*clm_empty.jsonl.* (is empty|no record)"),
    ("clm_truncated.jsonl", {}, r"--train_file .*clm_truncated.jsonl: line 3 is not valid JSON"),
    ("clm_non_utf8.jsonl", {}, r"--train_file .*clm_non_utf8.jsonl is not UTF-8 text"),
    ("good", {"--tokenizer_name": BAD / "tokenizer_missing"}, r"tokenizer_missing.*(no tokenizer|tokenizer.json)"),
    ("good", {"--config_overrides": None, "--config_name": BAD / "model_config_impossible"}, r"model_config_impossible.*hidden_size.*-32"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "overrides", "message"), CLM_CASES)
def test_run_clm_refuses_bad_inputs_before_training(
    name, overrides, message, run_clm, tokenizer_dir, good_corpus, no_training, tmp_path
):
    train_file = good_corpus if name == "good" else BAD / name
    before = _listing(BAD)
    with pytest.raises(ValueError, match=message):
        run_clm.main(_clm_command(tmp_path, tokenizer_dir, train_file, **overrides))
    assert not (tmp_path / "out").exists()  # no partial output
    assert _listing(BAD) == before


def test_run_clm_refuses_a_config_file_with_impossible_values(run_clm, good_corpus, no_training, tmp_path):
    config = tmp_path / "config.yaml"
    text = (BAD / "clm_config_impossible.yaml").read_text()
    config.write_text(text.replace("TRAIN", str(good_corpus)).replace("OUT", str(tmp_path / "out")))
    with pytest.raises(ValueError, match=r"--block_size must be at least 2 tokens, got 0"):
        run_clm.main([str(config)])
    assert not (tmp_path / "out").exists()


def test_the_corpus_has_at_least_twenty_malformed_inputs():
    inputs = [p for p in BAD.iterdir() if p.name not in ("references_4b.json", "README.md")]
    assert len(inputs) + 1 >= 20  # + the 1 MB question, made on the fly
    used = {c.values[0] if hasattr(c, "values") else c[0] for c in READER_CASES + CLM_CASES}
    used |= {
        "predictions_unknown_ids.json",
        "clm_config_impossible.yaml",
        "tokenizer_missing",
        "model_config_impossible",
    }
    assert {p.name for p in inputs} <= used  # every file of the corpus is exercised


# ---------------------------------------------------------------- models, corpora and data folders named in errors


@pytest.fixture
def truncated_model(clm_dir, tmp_path):
    import shutil

    folder = tmp_path / "truncated_model"
    shutil.copytree(clm_dir, folder)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)  # an interrupted download or copy
    return folder


def test_a_truncated_safetensors_file_is_named(run_clm, truncated_model, good_corpus, no_training, tmp_path):
    from transformers import AutoModelForCausalLM

    from biomamba_hf.reliability import from_pretrained_safely

    message = rf"{truncated_model}/model.safetensors is truncated or corrupt \(it has \d+ bytes but its tensors need"
    with pytest.raises(ValueError, match=message):
        from_pretrained_safely(AutoModelForCausalLM, truncated_model)
    command = _clm_command(
        tmp_path, truncated_model, good_corpus, **{"--model_type": None, "--config_overrides": None}
    )
    with pytest.raises(ValueError, match=message + r".*Copy or download it again"):
        run_clm.main(["--model_name_or_path", str(truncated_model), *command])
    assert not (tmp_path / "out").exists()


def test_a_model_folder_without_config_json_is_named(clm_dir, tmp_path):
    from biomamba_hf.script_utils import check_model_source

    (tmp_path / "weights_only").mkdir()
    (tmp_path / "weights_only" / "model.safetensors").write_bytes((clm_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"--model_name_or_path .*weights_only: the folder has no config.json, so it "
                       r"is not a saved model.*save_pretrained"):  # fmt: skip
        check_model_source(str(tmp_path / "weights_only"), "--model_name_or_path")


def test_an_unknown_hub_id_while_offline_is_named_at_once(run_clm, good_corpus, tokenizer_dir, monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    command = _clm_command(tmp_path, tokenizer_dir, good_corpus, **{"--model_type": None, "--config_overrides": None})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"--model_name_or_path nobody/no-such-mamba: not a local folder, and "
                       r"HF_HUB_OFFLINE is set while the Hub id nobody/no-such-mamba is not in the cache\. Offline use "
                       r"needs a local folder"):  # fmt: skip
        run_clm.main(["--model_name_or_path", "nobody/no-such-mamba", *command])
    assert time.perf_counter() - start < 20  # no retries (transformers alone took ~55 s)
    assert not (tmp_path / "out").exists()


def test_a_lone_surrogate_in_a_jsonl_text_is_named_with_file_and_line(run_clm, tokenizer_dir, no_training, tmp_path):
    corpus = tmp_path / "surrogate.jsonl"
    corpus.write_text('{"text": "Aspirin inhibits COX-1."}\n{"text": "broken \\ud800 escape"}\n')
    with pytest.raises(ValueError, match=r"--train_file .*surrogate.jsonl: line 2: field 'text' holds a lone "
                       r"surrogate \(\"\\ud800\" at character 7\).*fix the escape"):  # fmt: skip
        run_clm.main(_clm_command(tmp_path, tokenizer_dir, corpus))
    assert not (tmp_path / "out").exists()


def test_run_qa_without_data_dir_says_how_to_set_it(monkeypatch, tmp_path):
    monkeypatch.delenv("BIOMAMBA_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with example_script("run_qa") as run_qa:
        with pytest.raises(ValueError, match=r"--train_file bioasq/train.json: relative paths are read from "
                           r"--data_dir, and neither --data_dir nor BIOMAMBA_DATA_DIR is set"):  # fmt: skip
            run_qa.main(["--model_name_or_path", "x", "--train_file", "bioasq/train.json", "--do_train",
                         "--output_dir", str(tmp_path / "out"), "--report_to", "none"])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_squad_training_files_with_empty_answers_say_how_many_become_no_answer_examples(tmp_path, caplog):
    from biomamba_hf.bioasq.squad import load_training_examples

    squad = json.loads((BAD / "squad_answer_start_mismatch.json").read_text())
    paragraph = squad["data"][0]["paragraphs"][0]
    paragraph["qas"][0]["answers"][0]["answer_start"] = paragraph["context"].index("CFTR")
    paragraph["qas"] += [
        {"id": f"{QID}_00{i}", "question": "Which gene is mutated in cystic fibrosis?", "answers": []} for i in (1, 2)
    ]
    path = tmp_path / "squad_some_empty.json"
    path.write_text(json.dumps(squad))
    with caplog.at_level("WARNING", logger="biomamba_hf.bioasq.squad"):
        rows, _ = load_training_examples(squad_files=[path])
    assert len(rows) == 3
    assert f"{path}: 2 of its 3 qas have an empty 'answers' list and become \"no answer\" examples" in caplog.text
