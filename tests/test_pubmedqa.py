"""PubMedQA (PQA-L): loader and official test split, input encoding, metrics, examples/run_pubmedqa.py."""

from __future__ import annotations

import doctest
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import SENTENCES, data_dir, example_script

from biomamba_hf.data import pubmedqa
from biomamba_hf.data.pubmedqa import LABELS, classification_metrics, encode_pubmedqa, load_pubmedqa, read_pqal

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_pubmedqa.py"


def record(i, label="yes"):
    return {
        "QUESTION": f"Does treatment {i} reduce mortality?",
        "CONTEXTS": [SENTENCES[i % len(SENTENCES)], SENTENCES[(i + 1) % len(SENTENCES)]],
        "LABELS": ["BACKGROUND", "RESULTS"],
        "LONG_ANSWER": "It does.",
        "final_decision": label,
    }


def write_folder(path: Path, records: dict, test: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "ori_pqal.json").write_text(json.dumps(records), encoding="utf-8")
    (path / "test_ground_truth.json").write_text(json.dumps(test), encoding="utf-8")
    return path


@pytest.fixture
def small_folder(tmp_path):
    records = {str(1000 + i): record(i, LABELS[i % 3]) for i in range(20)}
    test = {pmid: r["final_decision"] for pmid, r in list(records.items())[:8]}
    return write_folder(tmp_path / "pubmedqa", records, test)


def test_splits_keep_the_official_test_ids_and_a_seeded_dev_split(small_folder):
    splits = load_pubmedqa(small_folder, dev_size=3, seed=1)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [9, 3, 8]
    assert [r["pubid"] for r in splits["test"]] == [str(1000 + i) for i in range(8)]
    ids = [r["pubid"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids)) == 20
    assert splits == load_pubmedqa(small_folder, dev_size=3, seed=1)  # deterministic
    assert splits["validation"] != load_pubmedqa(small_folder, dev_size=3, seed=2)["validation"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r.update(final_decision="perhaps"),
            r"record '1003': field 'final_decision' must be one of yes, no",
        ),
        (lambda r: r.pop("QUESTION"), r"record '1003': field 'QUESTION' must be a non-empty string"),
        (lambda r: r.update(CONTEXTS="text"), r"record '1003': field 'CONTEXTS' must be a non-empty list of strings"),
    ],
)
def test_malformed_records_name_the_file_record_and_field(tmp_path, change, message):
    records = {str(1000 + i): record(i) for i in range(5)}
    change(records["1003"])
    folder = write_folder(tmp_path / "p", records, {"1000": "yes"})
    with pytest.raises(ValueError, match=r"ori_pqal.json: " + message):
        load_pubmedqa(folder, dev_size=1)


def test_test_file_must_match_the_labelled_file(tmp_path):
    records = {str(1000 + i): record(i) for i in range(5)}
    with pytest.raises(ValueError, match=r"test_ground_truth.json: test record '9999' is not in ori_pqal.json"):
        load_pubmedqa(write_folder(tmp_path / "a", records, {"9999": "yes"}), dev_size=1)
    with pytest.raises(ValueError, match=r"test record '1000': answer 'no' differs from its final_decision 'yes'"):
        load_pubmedqa(write_folder(tmp_path / "b", records, {"1000": "no"}), dev_size=1)
    with pytest.raises(
        ValueError, match=r"missing: ori_pqal.json not found; a PubMedQA folder holds ori_pqal.json and"
    ):
        load_pubmedqa(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"dev_size=4 must leave training data: use a value from 0 to 3"):
        load_pubmedqa(write_folder(tmp_path / "c", records, {"1000": "yes"}), dev_size=4)


def test_encoding_keeps_the_question_and_cuts_the_contexts(tokenizer):
    from biomamba_hf import prepare_tokenizer_for_qa

    prepare_tokenizer_for_qa(tokenizer)
    question = "Does aspirin inhibit platelet aggregation?"
    question_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    ids = encode_pubmedqa(tokenizer, question, SENTENCES, max_seq_length=len(question_ids) + 6)
    assert len(ids) == len(question_ids) + 6
    assert ids[: len(question_ids)] == question_ids and ids[len(question_ids)] == tokenizer.sep_token_id
    full = encode_pubmedqa(tokenizer, question, SENTENCES[:2], max_seq_length=1000)
    assert tokenizer.decode(full[len(question_ids) + 1 :]) == " ".join(SENTENCES[:2])
    with pytest.raises(ValueError, match=r"max_seq_length=5 leaves no room for context after a question of 5 tokens"):
        encode_pubmedqa(tokenizer, question, SENTENCES, max_seq_length=5, max_question_length=5)


def reference_macro_f1(predictions, references, num_labels):
    scores = []
    for label in range(num_labels):
        tp = sum(p == r == label for p, r in zip(predictions, references))
        fp = sum(p == label != r for p, r in zip(predictions, references))
        fn = sum(r == label != p for p, r in zip(predictions, references))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / num_labels


def test_classification_metrics_match_precision_recall_definition():
    for predictions, references in itertools.product(itertools.product(range(3), repeat=4), repeat=2):
        if predictions[0] == 2 and references[0] == 1:  # thin out the 6,561 pairs a little
            continue
        result = classification_metrics(predictions, references, 3)
        assert result["accuracy"] == sum(p == r for p, r in zip(predictions, references)) / 4
        assert result["macro_f1"] == pytest.approx(reference_macro_f1(predictions, references, 3))
    assert classification_metrics([0, 1, 2], [0, 1, 2], 3) == {"accuracy": 1.0, "macro_f1": 1.0}
    with pytest.raises(ValueError, match=r"got 2 predictions for 3 references"):
        classification_metrics([0, 1], [0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"label 3 is outside 0..2"):
        classification_metrics([3], [0], 3)


def test_pubmedqa_docstring_examples():
    assert doctest.testmod(pubmedqa).failed == 0


# --------------------------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_pqal_counts_and_official_test_split():
    folder = data_dir() / "pubmedqa"
    records = read_pqal(folder / "ori_pqal.json")
    assert len(records) == 1000
    assert Counter(r["label"] for r in records) == {"yes": 552, "no": 338, "maybe": 110}
    splits = load_pubmedqa(folder, dev_size=50)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [450, 50, 500]
    official = json.loads((folder / "test_ground_truth.json").read_text())
    assert [r["pubid"] for r in splits["test"]] == list(official)
    assert all(official[r["pubid"]] == r["label"] for r in splits["test"])
    assert not {r["pubid"] for r in splits["train"] + splits["validation"]} & set(official)


@pytest.fixture(scope="module")
def run_pubmedqa():
    with example_script("run_pubmedqa") as module:
        yield module


@pytest.mark.real_data
@pytest.mark.slow
def test_run_pubmedqa_smoke_on_real_data(run_pubmedqa, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from biomamba_hf import MambaForSequenceClassification

    data = data_dir()
    output_dir = tmp_path / "out"
    results = run_pubmedqa.main(
        [
            str(ROOT / "examples" / "configs" / "pubmedqa.yaml"),
            "--data_dir", str(data),
            "--model_type", "mamba",
            "--config_overrides", "hidden_size=32,num_hidden_layers=2,state_size=8",
            "--tokenizer_name", str(data / "tokenizers" / "gpt-neox-20b"),
            "--max_seq_length", "64",
            "--max_train_samples", "32",
            "--max_eval_samples", "100",
            "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "64",
            "--max_steps", "3",
            "--eval_strategy", "no",
            "--disable_tqdm", "true",
            "--output_dir", str(output_dir),
        ]
    )  # fmt: skip
    recorded = json.loads((output_dir / "all_results.json").read_text())
    assert recorded == pytest.approx(results)
    for split in ("dev", "test"):
        for metric in ("accuracy", "macro_f1"):
            assert 0.0 <= recorded[f"pubmedqa_{split}_{metric}"] <= 1.0
    assert recorded["pubmedqa_dev_samples"] == 50 and recorded["pubmedqa_test_samples"] == 100
    # The test accuracy is that of the written predictions against the official answers (the first 100 test ids).
    predictions = json.loads((output_dir / "predictions_pubmedqa_test.json").read_text())
    official = dict(list(json.loads((data / "pubmedqa" / "test_ground_truth.json").read_text()).items())[:100])
    assert set(predictions) == set(official)
    accuracy = sum(predictions[pmid] == answer for pmid, answer in official.items()) / len(official)
    assert recorded["pubmedqa_test_accuracy"] == pytest.approx(accuracy)
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert isinstance(model, MambaForSequenceClassification)
    assert model.config.id2label == {0: "yes", 1: "no", 2: "maybe"}


@pytest.mark.parametrize("start", ["mamba2_folder", "mamba2_random_init"])
def test_run_pubmedqa_end_to_end_on_mamba2(run_pubmedqa, mamba2_clm_dir, tokenizer_dir, tmp_path, caplog, start):
    """A Mamba2ForCausalLM folder and a random Mamba-2 init train, score and save a Mamba-2 classifier; the log names
    the Mamba-2 code path once and nothing of Mamba-1."""
    from transformers import AutoModelForSequenceClassification

    from biomamba_hf import Mamba2ForSequenceClassification
    from biomamba_hf.ops.ssd import MAMBA2_FAST_PATH_NAME

    records = {str(1000 + i): record(i, LABELS[i % 3]) for i in range(24)}
    test = {pmid: r["final_decision"] for pmid, r in list(records.items())[:6]}
    write_folder(tmp_path / "data" / "pubmedqa", records, test)
    if start == "mamba2_folder":
        model_argv = ["--model_name_or_path", str(mamba2_clm_dir)]
    else:
        overrides = "hidden_size=32,expand=2,head_dim=16,num_heads=4,n_groups=1,state_size=16,num_hidden_layers=2"
        model_argv = [
            "--model_type",
            "mamba2",
            "--config_overrides",
            overrides,
            "--tokenizer_name",
            str(tokenizer_dir),
        ]
    output_dir = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = run_pubmedqa.main(
            [
                *model_argv,
                "--data_dir", str(tmp_path / "data"),
                "--dev_size", "4",
                "--max_seq_length", "48",
                "--per_device_train_batch_size", "8",
                "--max_steps", "2",
                "--do_train", "--do_eval", "--do_predict",
                "--report_to", "none",
                "--disable_tqdm", "true",
                "--output_dir", str(output_dir),
            ]
        )  # fmt: skip
    assert json.loads((output_dir / "all_results.json").read_text()) == pytest.approx(results)
    assert results["pubmedqa_dev_samples"] == 4 and results["pubmedqa_test_samples"] == 6
    assert 0.0 <= results["pubmedqa_test_accuracy"] <= 1.0
    assert set(json.loads((output_dir / "predictions_pubmedqa_test.json").read_text())) == set(test)
    model = AutoModelForSequenceClassification.from_pretrained(output_dir)
    assert isinstance(model, Mamba2ForSequenceClassification) and model.config.num_labels == 3
    code_paths = [r.getMessage() for r in caplog.records if "code path" in r.getMessage()]
    assert code_paths == [f"Mamba-2 code path: {MAMBA2_FAST_PATH_NAME}"], code_paths


@pytest.mark.parametrize(
    ("data_dir", "message"),
    [
        (
            None,
            r"--pubmedqa_dir pubmedqa: relative paths are read from --data_dir, and neither --data_dir nor "
            r"BIOMAMBA_DATA_DIR is set, so from the current folder .*\. Pass --data_dir \(e\.g\. --data_dir "
            r"\.\./shared/data\) or set BIOMAMBA_DATA_DIR to the folder holding the data\.",
        ),
        ("empty", r"--pubmedqa_dir pubmedqa: not found under --data_dir .*empty \(or BIOMAMBA_DATA_DIR\); check the"),
        ("typo", r"--data_dir .*typo is not a directory \(relative data paths are read from it\)\."),
    ],
)
def test_a_missing_pubmedqa_dir_says_where_it_was_looked_for_like_run_qa(
    run_pubmedqa, monkeypatch, tmp_path, data_dir, message
):
    monkeypatch.delenv("BIOMAMBA_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    argv = ["--model_name_or_path", "x", "--do_train", "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    if data_dir is not None:
        argv += ["--data_dir", str(tmp_path / data_dir)]
    with pytest.raises(ValueError, match=message):
        run_pubmedqa.main(argv)
    assert not (tmp_path / "out").exists()
