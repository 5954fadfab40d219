"""examples/run_qa.py, biomamba_hf.qa and biomamba_hf.lora: BioASQ fine-tuning, official evaluation files, LoRA, layouts."""

from __future__ import annotations

import doctest
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import SENTENCES, count_opens, data_dir, example_script, record_compiled_modules, tiny_config

from biomamba_hf import lora, ops, qa
from biomamba_hf.bioasq.evaluation import check_disjoint, load_test_references
from biomamba_hf.lora import add_lora
from biomamba_hf.metrics import bioasq_factoid_batches, load_predictions, merge_nbest, question_types
from biomamba_hf.qa import resolve_qa_layout
from biomamba_hf.trainer import padding_collator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "run_qa.py"
CONFIGS = ROOT / "examples" / "configs"
LONG_CONTEXT = " ".join(SENTENCES[:6])  # longer than one window at max_seq_length 64: several windows

# (question, gold synonym lists, snippets); every first snippet contains an answer.
TRAIN_QUESTIONS = [
    ("Which gene is mutated in cystic fibrosis?", [["CFTR"]], [SENTENCES[6], SENTENCES[7]]),
    ("What does imatinib target?", [["BCR-ABL", "BCR-ABL tyrosine kinase"]], [SENTENCES[2]]),
    ("Which receptor does the spike protein bind?", [["ACE2"]], [SENTENCES[5], SENTENCES[9]]),
    ("Which gene carries the repeat in Huntington's disease?", [["HTT"]], [SENTENCES[3]]),
    ("What does aspirin inhibit?", [["cyclooxygenase"]], [SENTENCES[0]]),
    ("Which cells secrete insulin?", [["beta cells"]], [SENTENCES[9]]),
]
TEST_QUESTIONS = {
    "4b-1": [
        ("Which gene raises the risk of breast cancer?", [["BRCA1"]], [SENTENCES[1], LONG_CONTEXT]),
        ("What does metformin lower?", [["hepatic glucose production"]], [SENTENCES[4]]),
        ("Which neurons degenerate in Parkinson's disease?", [["dopamine neurons"]], [SENTENCES[8], SENTENCES[0]]),
    ],
    "4b-2": [
        ("Which vitamin is required for coagulation?", [["Vitamin K"]], [SENTENCES[7]]),
        ("Which channel is mutated in cystic fibrosis?", [["CFTR", "CFTR chloride channel"]], [SENTENCES[6]]),
    ],
}


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def golden_question(qid, body, answers, snippets, qtype="factoid"):
    return {
        "id": qid,
        "type": qtype,
        "body": body,
        "exact_answer": answers,
        "snippets": [{"text": text, "document": "http://www.ncbi.nlm.nih.gov/pubmed/1"} for text in snippets],
    }


def squad_file(path: Path, questions, with_answers: bool, id_offset: int) -> Path:
    paragraphs = []
    for n, (body, answers, contexts) in enumerate(questions):
        qid = f"{id_offset + n:024x}"
        for k, context in enumerate(contexts):
            qa = {"id": f"{qid}_{k:03d}", "question": body}
            if with_answers:
                synonym = answers[0][0]
                start = context.find(synonym)
                qa["answers"] = [{"text": synonym, "answer_start": start}] if start >= 0 else []
            paragraphs.append({"context": context, "qas": [qa]})
    return write_json(path, {"version": "BioASQ", "data": [{"title": "BioASQ", "paragraphs": paragraphs}]})


@pytest.fixture(scope="module")
def bioasq_files(tmp_path_factory):
    """Golden training files, a SQuAD training file, a two-batch test set ("4b") and a prediction-only file ("8b")."""
    root = tmp_path_factory.mktemp("bioasq")
    train_golden = write_json(
        root / "train" / "7B_golden.json",
        {
            "questions": [
                golden_question(f"{0x700 + i:024x}", body, answers, snippets)
                for i, (body, answers, snippets) in enumerate(TRAIN_QUESTIONS)
            ]
            + [golden_question(f"{0x7FF:024x}", "Is aspirin a drug?", "yes", [SENTENCES[0]], qtype="yesno")]
        },
    )
    train_squad = squad_file(root / "train" / "BioASQ-train-factoid-6b.json", TRAIN_QUESTIONS[:3], True, 0x600)
    offset = 0x400
    for batch, questions in TEST_QUESTIONS.items():
        number = batch.split("-")[1]
        squad_file(root / "4b" / "test" / f"BioASQ-test-factoid-{batch}.json", questions, False, offset)
        write_json(
            root / "4b" / "golden" / f"4B{number}_golden.json",
            {
                "questions": [
                    golden_question(f"{offset + n:024x}", body, answers, snippets)
                    for n, (body, answers, snippets) in enumerate(questions)
                ]
                + [golden_question(f"{offset + 99:024x}", "Summarise X.", None, [SENTENCES[0]], qtype="summary")]
            },
        )
        offset += 0x10
    predict = squad_file(root / "8b" / "BioASQ-test-factoid-8b-1.json", TEST_QUESTIONS["4b-1"], False, 0x800)
    return {
        "root": root,
        "train_golden": train_golden,
        "train_squad": train_squad,
        "test_dir": root / "4b",
        "predict": predict,
    }


@pytest.fixture(scope="module")
def run_qa():
    with example_script("run_qa") as module:
        yield module


def common_args(output_dir, **overrides):
    args = {
        "--output_dir": output_dir,
        "--max_seq_length": 64,
        "--doc_stride": 16,
        "--max_question_length": 24,
        "--n_best_size": 5,
        "--max_answer_length": 8,
        "--per_device_train_batch_size": 8,
        "--per_device_eval_batch_size": 8,
        "--learning_rate": 1e-2,
        "--max_steps": 8,
        "--logging_steps": 2,
        "--save_strategy": "no",
        "--seed": 0,
        "--report_to": "none",
        "--disable_tqdm": "true",
        "--dataloader_num_workers": 0,
    }
    args.update(overrides)
    return [str(item) for pair in args.items() for item in pair if item is not None]


def read_results(output_dir) -> dict:
    return json.loads((Path(output_dir) / "all_results.json").read_text())


@pytest.fixture(scope="module")
def trained(run_qa, bioasq_files, clm_dir, tmp_path_factory):
    """One full run: train (golden + SQuAD files) from a causal-LM checkpoint, score before and after, predict."""
    output_dir = tmp_path_factory.mktemp("qa_run")
    argv = [
        "--model_name_or_path",
        str(clm_dir),
        "--train_golden_files",
        str(bioasq_files["train_golden"]),
        "--train_file",
        str(bioasq_files["train_squad"]),
        "--test_dirs",
        str(bioasq_files["test_dir"]),
        "--predict_files",
        str(bioasq_files["predict"]),
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--eval_before_train",
        *common_args(output_dir),
    ]
    returned = run_qa.main(argv)
    return output_dir, returned


@pytest.mark.slow
def test_run_qa_writes_every_output_and_the_scores_recompute(trained, bioasq_files):
    output_dir, returned = trained
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "all_results.json",
        "bioasq_4b_per_batch.json",
        "predictions_4b.json",
        "nbest_predictions_4b.json",
        "submission_4b.json",
        "initial_predictions_4b.json",
        "predictions_8b.json",
        "submission_8b.json",
        "trainer_state.json",
        "run_args.json",
        "README.md",
    ):
        assert (output_dir / name).is_file(), name
    results = read_results(output_dir)
    assert results == pytest.approx(returned)
    for prefix in ("", "initial_"):
        for key in ("strict_acc", "lenient_acc", "mrr", "micro_strict_acc", "micro_lenient_acc", "micro_mrr"):
            assert 0.0 <= results[f"{prefix}bioasq_4b_{key}"] <= 1.0
        assert results[f"{prefix}bioasq_4b_num_questions"] == 5  # factoid only: the summary questions are skipped
        assert results[f"{prefix}bioasq_4b_num_batches"] == 2

    # The recorded scores are those of the official metric on the written predictions and on the submission file.
    references = load_test_references(bioasq_files["test_dir"])
    for file_name in ("predictions_4b.json", "submission_4b.json"):
        recomputed = bioasq_factoid_batches(load_predictions(output_dir / file_name), references)
        for key in ("strict_acc", "lenient_acc", "mrr"):
            assert results[f"bioasq_4b_{key}"] == pytest.approx(recomputed["macro"][key])
            assert results[f"bioasq_4b_micro_{key}"] == pytest.approx(recomputed["micro"][key])
    # ... and of the console command the README shows, on the predictions file and the golden folder
    from biomamba_hf.metrics.cli import main as bioasq_eval

    cli_json = output_dir.parent / "cli_scores.json"
    golden = Path(bioasq_files["test_dir"]) / "golden"
    assert (
        bioasq_eval([str(output_dir / "predictions_4b.json"), "--golden", str(golden), "--output_json", str(cli_json)])
        == 0
    )
    cli_scores = json.loads(cli_json.read_text())
    for key in ("strict_acc", "lenient_acc", "mrr"):
        assert results[f"bioasq_4b_{key}"] == pytest.approx(cli_scores["macro"][key])
    per_batch = json.loads((output_dir / "bioasq_4b_per_batch.json").read_text())
    assert per_batch == json.loads(
        json.dumps(bioasq_factoid_batches(load_predictions(output_dir / "predictions_4b.json"), references))
    )

    # Top 5 per question = the documented merge of the per-context n-best lists.
    predictions = json.loads((output_dir / "predictions_4b.json").read_text())
    nbest = json.loads((output_dir / "nbest_predictions_4b.json").read_text())
    assert {qid: answers for qid, answers in predictions.items() if answers} == merge_nbest(nbest)
    assert all(len(answers) <= 5 for answers in predictions.values())
    contexts = {row_id.rsplit("_", 1)[0] for row_id in nbest}
    assert set(predictions) == contexts == {qid for batch in references.values() for qid in batch}

    # The submission lists every golden question, of every type (the official evaluator stops on a missing one).
    submission = json.loads((output_dir / "submission_4b.json").read_text())
    assert [q["id"] for q in submission["questions"]] == list(question_types(sorted(golden.glob("*_golden.json"))))
    factoid = [q for q in submission["questions"] if q["type"] == "factoid"]
    assert [q["id"] for q in factoid] == [qid for batch in references.values() for qid in batch]
    assert all(len(q["exact_answer"]) <= 5 and all(len(c) == 1 for c in q["exact_answer"]) for q in factoid)
    predict_ids = [q["id"] for q in json.loads((output_dir / "submission_8b.json").read_text())["questions"]]
    assert predict_ids == [f"{0x800 + n:024x}" for n in range(3)]

    # The model card reads the batch-averaged keys.
    card = (output_dir / "README.md").read_text()
    assert f"{results['bioasq_4b_mrr']:.4f}" in card and "BioASQ 4b" in card


@pytest.mark.slow
def test_run_qa_training_lowers_the_loss_and_saves_a_loadable_qa_model(trained):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    from biomamba_hf import MambaForQuestionAnswering

    output_dir, _ = trained
    losses = [
        entry["loss"]
        for entry in json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
        if "loss" in entry
    ]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    model = AutoModelForQuestionAnswering.from_pretrained(output_dir)
    assert isinstance(model, MambaForQuestionAnswering) and model.config.qa_layout == "question_first"
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert tokenizer.sep_token == "<|sep|>" and model.config.sep_token_id == tokenizer.sep_token_id
    run_args = json.loads((output_dir / "run_args.json").read_text())
    assert run_args["max_seq_length"] == 64 and run_args["doc_stride"] == 16
    answer = pipeline("question-answering", model=str(output_dir))(
        question="What lowers glucose?", context=SENTENCES[4]
    )
    assert SENTENCES[4][answer["start"] : answer["end"]] == answer["answer"]


@pytest.mark.slow
def test_logits_evaluation_matches_the_pipeline(trained, bioasq_files, tmp_path):
    """The Trainer path (batched, padded, longest first) gives the pipeline's candidates and probabilities."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments

    from biomamba_hf.bioasq.evaluation import load_test_set

    output_dir, _ = trained
    model = AutoModelForQuestionAnswering.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    rows = load_test_set(bioasq_files["test_dir"])[0]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to="none")
    trainer = Trainer(model=model, args=args, data_collator=padding_collator(tokenizer))
    options = {"max_seq_length": 64, "doc_stride": 16, "max_question_length": 24}
    by_logits = qa.predict_nbest(
        trainer, rows, tokenizer, layout="question_first", n_best_size=5, max_answer_length=8, **options
    )
    by_pipeline = qa.pipeline_nbest(model, tokenizer, rows, n_best_size=5, max_answer_length=8, **options)
    assert by_logits.keys() == by_pipeline.keys()
    assert any(
        len(
            qa.prepare_eval_features(
                {"id": [r["id"]], "question": [r["question"]], "context": [r["context"]]},
                tokenizer,
                layout="question_first",
                **options,
            )["input_ids"]
        )
        > 1
        for r in rows
    )  # a context of several windows is among them
    for row_id, candidates in by_logits.items():
        assert [c["text"] for c in candidates] == [c["text"] for c in by_pipeline[row_id]]
        assert [c["probability"] for c in candidates] == pytest.approx(
            [c["probability"] for c in by_pipeline[row_id]], rel=1e-4
        )


# --------------------------------------------------------------------------------------------------------------------
# LoRA and layouts
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_qa_lora_trains_only_adapters_and_head_and_saves_merged(
    run_qa, bioasq_files, clm_dir, tmp_path, monkeypatch
):
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    output_dir = tmp_path / "lora"
    argv = [
        "--model_name_or_path",
        str(clm_dir),
        "--train_golden_files",
        str(bioasq_files["train_golden"]),
        "--test_dirs",
        str(bioasq_files["test_dir"]),
        "--qa_layout",
        "repeat_context",
        "--use_lora",
        "--lora_r",
        "4",
        "--do_train",
        "--do_eval",
        *common_args(output_dir, **{"--max_steps": 4, "--max_seq_length": 96}),
    ]
    trained_results = run_qa.main(argv)
    saved = load_file(output_dir / "model.safetensors")
    assert not [name for name in saved if "lora_" in name or "base_layer" in name or "modules_to_save" in name]
    start = load_file(clm_dir / "model.safetensors")
    changed = {
        name.split(".")[-2] if name.endswith(("weight", "bias")) else name.split(".")[-1]
        for name in start
        if name in saved and not torch.equal(start[name], saved[name])
    }
    assert changed == {
        "in_proj",
        "x_proj",
        "embeddings",
    }  # merged adapters; out_proj, conv1d, dt_proj, A_log, D untouched
    assert "qa_outputs.weight" in saved
    model = AutoModelForQuestionAnswering.from_pretrained(output_dir)
    assert model.config.qa_layout == "repeat_context"

    # The saved folder scores exactly as the merged model did in memory, with the layout it recorded (also with
    # --compile_norms, which compiles the RMS norms of the model's three blocks) ...
    compiled_modules = record_compiled_modules(monkeypatch)
    reloaded = run_qa.main(
        [
            "--model_name_or_path",
            str(output_dir),
            "--test_dirs",
            str(bioasq_files["test_dir"]),
            "--do_eval",
            "--compile_norms",
            *common_args(tmp_path / "eval_only", **{"--max_seq_length": 96}),
        ]
    )
    assert compiled_modules == ["MambaRMSNorm"] * (model.config.num_hidden_layers + 1)
    for key in ("bioasq_4b_strict_acc", "bioasq_4b_mrr", "bioasq_4b_micro_mrr"):
        assert reloaded[key] == pytest.approx(trained_results[key])
    # ... and refuses another layout before loading the model.
    with pytest.raises(
        ValueError, match=r"fine-tuned for QA with qa_layout='repeat_context' but --qa_layout 'question_first'"
    ):
        run_qa.main(
            [
                "--model_name_or_path",
                str(output_dir),
                "--test_dirs",
                str(bioasq_files["test_dir"]),
                "--do_eval",
                "--qa_layout",
                "question_first",
                *common_args(tmp_path / "mismatch"),
            ]
        )


#: With mamba-ssm installed, transformers hands CPU tensors to its CUDA kernels: CPU training tests cannot run there
#: (the GPU test below covers such a machine).
cpu_training_only = pytest.mark.skipif(
    ops.cuda_kernels_available(),
    reason="mamba-ssm is installed: transformers would send these CPU tensors to its CUDA kernels",
)


def tiny_qa_model(vocab_size=64):
    from biomamba_hf import MambaForQuestionAnswering

    torch.manual_seed(0)
    return MambaForQuestionAnswering(tiny_config(vocab_size, use_mambapy=False))


@cpu_training_only
def test_add_lora_trains_exactly_the_adapters_and_the_head():
    model = add_lora(tiny_qa_model(), r=4, alpha=8)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ("lora_" in name) or ("modules_to_save" in name and "qa_outputs" in name) for name in trainable
    )
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if "lora_" in name}
    assert adapted == {"in_proj", "x_proj", "embeddings"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    input_ids = torch.randint(2, 64, (4, 12))
    for _ in range(3):
        loss = model(
            input_ids=input_ids, start_positions=torch.tensor([3, 4, 5, 6]), end_positions=torch.tensor([5, 6, 7, 8])
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == trainable  # every adapter weight and the head moved; nothing else did
    assert lora.unchanged_parameters(model, {n: before[n] for n in trainable}) == []


@cpu_training_only
def test_an_x_proj_adapter_trains_where_the_fused_kernel_would_bypass_it(monkeypatch):
    """With mamba-ssm, transformers' training step hands x_proj.weight to the fused mamba_inner_fn, bypassing an
    adapter. A stand-in for that kernel (it multiplies by raw weights, as the CUDA one does) shows the routing: mixers
    with an x_proj adapter take the unfused path and the adapter gets gradients; other models keep the fused path."""
    from transformers.models.mamba import modeling_mamba

    fused_calls = []

    def fused_stand_in(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, *a, **k):
        fused_calls.append(x_proj_weight)
        return xz[:, : xz.shape[1] // 2].transpose(1, 2) @ out_proj_weight.t()

    monkeypatch.setattr(modeling_mamba, "mamba_inner_fn", fused_stand_in)
    inputs = {
        "input_ids": torch.randint(2, 64, (2, 8)),
        "start_positions": torch.tensor([1, 2]),
        "end_positions": torch.tensor([2, 3]),
    }
    plain = tiny_qa_model().train()
    layers = plain.config.num_hidden_layers
    plain(**inputs).loss.backward()
    assert len(fused_calls) == layers

    fused_calls.clear()
    model = add_lora(tiny_qa_model(), r=4, alpha=8, target_modules=["x_proj"]).train()
    model(**inputs).loss.backward()
    assert fused_calls == []  # every mixer took the unfused path, which calls the x_proj module
    grads = {name: p.grad for name, p in model.named_parameters() if "x_proj.lora_" in name}
    assert len(grads) == 2 * layers and all(g is not None for g in grads.values())
    assert all(
        g.abs().sum() > 0 for name, g in grads.items() if "lora_B" in name
    )  # lora_B starts at 0: its grad moves

    plain(**inputs).loss.backward()  # a model without adapters still takes the fused path beside it
    merged = lora.merge_lora(model)
    merged(**inputs).loss.backward()  # and so does the merged one: its adapters are gone
    assert len(fused_calls) == 2 * layers


@pytest.mark.skipif(
    not (torch.cuda.is_available() and ops.cuda_kernels_available()),
    reason="needs a CUDA GPU with mamba-ssm and causal-conv1d",
)
def test_an_x_proj_adapter_trains_on_the_cuda_kernel_path(monkeypatch):
    """The same routing with the real fused kernel: it serves a model without adapters, adapted mixers leave it, and
    their x_proj adapters get gradients."""
    from transformers.models.mamba import modeling_mamba

    model = add_lora(tiny_qa_model(), r=4, alpha=8, target_modules=["x_proj"]).cuda().train()
    plain = tiny_qa_model().cuda().train()
    fused_outputs, current = [], modeling_mamba.mamba_inner_fn

    def spy(*args, **kwargs):
        output = current(*args, **kwargs)
        fused_outputs.append(output is not None)
        return output

    monkeypatch.setattr(modeling_mamba, "mamba_inner_fn", spy)
    inputs = {
        "input_ids": torch.randint(2, 64, (2, 16), device="cuda"),
        "start_positions": torch.tensor([1, 2], device="cuda"),
        "end_positions": torch.tensor([2, 3], device="cuda"),
    }
    layers = plain.config.num_hidden_layers
    plain(**inputs).loss.backward()
    assert fused_outputs == [True] * layers  # the fused kernel ran
    fused_outputs.clear()
    model(**inputs).loss.backward()
    assert fused_outputs == [False] * layers  # adapted mixers took the unfused path
    grads = {name: p.grad for name, p in model.named_parameters() if "x_proj.lora_B" in name}
    assert len(grads) == layers and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_transformers_still_bypasses_dt_proj_and_calls_x_proj():
    """Pins the facts behind add_lora's dt_proj refusal and x_proj default (fails when transformers changes)."""
    model = tiny_qa_model().train()
    calls = {"dt_proj": 0, "x_proj": 0, "in_proj": 0}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in calls:
            module.register_forward_hook(lambda *_, leaf=leaf: calls.__setitem__(leaf, calls[leaf] + 1))
    model(input_ids=torch.randint(2, 64, (2, 8)))
    assert calls == {"dt_proj": 0, "x_proj": 2, "in_proj": 2}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("out_proj", r"'out_proj' cannot take a LoRA adapter on Mamba: peft refuses it"),
        ("conv1d", r"'conv1d' cannot take a LoRA adapter on Mamba: peft refuses it"),
        ("dt_proj", r"'dt_proj' cannot take a LoRA adapter on Mamba: transformers' Mamba never calls dt_proj"),
        ("qa_outputs", r"'qa_outputs' is the task head, which is always trained in full"),
        ("q_proj", r"the model has no module named 'q_proj'; its adaptable modules are .*in_proj"),
    ],
)
def test_add_lora_refuses_modules_that_cannot_train(target, message):
    with pytest.raises(ValueError, match=message):
        add_lora(tiny_qa_model(), target_modules=["in_proj", target])


def test_resolve_qa_layout_records_and_protects_the_trained_layout():
    config = tiny_config(64)
    assert resolve_qa_layout(None, config) == "question_first" and config.qa_layout == "question_first"
    config = tiny_config(64)
    assert resolve_qa_layout("repeat_context", config) == "repeat_context" and config.qa_layout == "repeat_context"
    trained = tiny_config(64, qa_layout="repeat_context", architectures=["MambaForQuestionAnswering"])
    assert resolve_qa_layout(None, trained) == "repeat_context"
    with pytest.raises(ValueError, match=r"out/qa was fine-tuned for QA with qa_layout='repeat_context'"):
        resolve_qa_layout("question_first", trained, "out/qa")
    with pytest.raises(ValueError, match=r"--qa_layout 'both' is not a QA layout"):
        resolve_qa_layout("both", tiny_config(64))


# --------------------------------------------------------------------------------------------------------------------
# Input validation happens before any model is loaded
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_model(run_qa, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were validated")

    monkeypatch.setattr(run_qa, "load_model_and_tokenizer", fail)
    return run_qa


def test_malformed_golden_file_is_reported_before_loading_the_model(no_model, bioasq_files, tmp_path):
    bad = write_json(
        tmp_path / "5B1_golden.json",
        {"questions": [golden_question("bad0001", "Which?", None, [SENTENCES[0]])]},
    )
    with pytest.raises(
        ValueError, match=r"5B1_golden.json: question 'bad0001' \(questions\[0\]\): field 'exact_answer'"
    ):
        no_model.main(
            [
                "--model_name_or_path",
                "x",
                "--train_golden_files",
                str(bad),
                "--do_train",
                *common_args(tmp_path / "out"),
            ]
        )
    broken = tmp_path / "broken.json"
    broken.write_text('{"questions": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON"):
        no_model.main(
            ["--model_name_or_path", "x", "--train_file", str(broken), "--do_train", *common_args(tmp_path / "out")]
        )


def test_test_file_as_training_data_and_leaks_are_refused(no_model, bioasq_files, tmp_path):
    test_file = bioasq_files["test_dir"] / "test" / "BioASQ-test-factoid-4b-1.json"
    with pytest.raises(ValueError, match=r"BioASQ-test-factoid-4b-1.json: none of its 5 qas has an answer"):
        no_model.main(
            ["--model_name_or_path", "x", "--train_file", str(test_file), "--do_train", *common_args(tmp_path / "out")]
        )
    golden = bioasq_files["test_dir"] / "golden" / "4B2_golden.json"
    with pytest.raises(ValueError, match=r"is question '0{21}410' of the test set '4b': training on test questions"):
        no_model.main(
            [
                "--model_name_or_path",
                "x",
                "--train_golden_files",
                str(golden),
                "--test_dirs",
                str(bioasq_files["test_dir"]),
                "--do_train",
                "--do_eval",
                *common_args(tmp_path / "out"),
            ]
        )


def test_missing_inputs_and_bad_arguments_are_refused(no_model, bioasq_files, tmp_path):
    with pytest.raises(ValueError, match=r"--do_train needs training data: pass --train_golden_files"):
        no_model.main(["--model_name_or_path", "x", "--do_train", *common_args(tmp_path / "out")])
    with pytest.raises(ValueError, match=r"--do_eval \(and --eval_before_train\) score test sets: pass --test_dirs"):
        no_model.main(["--model_name_or_path", "x", "--do_eval", *common_args(tmp_path / "out")])
    with pytest.raises(ValueError, match=r"a BioASQ test-set folder needs 'test/'"):
        no_model.main(
            ["--model_name_or_path", "x", "--do_eval", "--test_dirs", str(tmp_path), *common_args(tmp_path / "out")]
        )
    with pytest.raises(
        ValueError, match=r"--qa_layout 'sideways' is not a QA layout; use one of question_first, repeat_context"
    ):
        no_model.main(
            ["--model_name_or_path", "x", "--do_eval", "--qa_layout", "sideways", *common_args(tmp_path / "o")]
        )
    with pytest.raises(ValueError, match=r"Nothing to do: pass --do_train, --do_eval and/or --do_predict"):
        no_model.main(["--model_name_or_path", "x", *common_args(tmp_path / "out")])
    with pytest.raises(ValueError, match=r"not used by the HfArgumentParser: \['--tokens_per_step', '4096'\]"):
        no_model.main(
            ["--model_name_or_path", "x", "--do_eval", "--tokens_per_step", "4096", *common_args(tmp_path / "o")]
        )
    with pytest.raises(ValueError, match=r"--hub_token would be saved in training_args.bin"):
        no_model.main(["--model_name_or_path", "x", "--do_eval", "--hub_token", "hf_x", *common_args(tmp_path / "o")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"already exists and is not empty"):
        no_model.main(
            [
                "--model_name_or_path",
                "x",
                "--train_golden_files",
                str(bioasq_files["train_golden"]),
                "--do_train",
                *common_args(tmp_path / "full"),
            ]
        )


def test_load_data_reads_each_golden_file_of_a_test_set_once(run_qa, bioasq_files, tmp_path, monkeypatch):
    golden = sorted((bioasq_files["test_dir"] / "golden").glob("*_golden.json"))
    opens = count_opens(monkeypatch)
    _, data_args, training_args = run_qa.parse_args(
        ["--model_name_or_path", "x", "--test_dirs", str(bioasq_files["test_dir"]), "--do_eval"]
        + common_args(tmp_path / "out")
    )
    _, test_sets, _ = run_qa.load_data(data_args, training_args)
    assert [opens[path.resolve()] for path in golden] == [1] * len(golden) == [1, 1]
    _, references, questions = test_sets["4b"]
    # The questions the submission lists: every golden question (the summary ones too), batch by batch.
    assert [q["id"] for q in questions] == list(question_types(golden))
    assert {q["id"] for q in questions} > {qid for batch in references.values() for qid in batch}


def test_check_disjoint_names_the_example_and_the_test_set():
    rows = [{"id": "q1_000", "question_id": "q1", "batch": "7b"}]
    check_disjoint(rows, {"q2": "4b"})
    with pytest.raises(
        ValueError, match=r"training example 'q1_000' \(batch '7b'\) is question 'q1' of the test set '5b'"
    ):
        check_disjoint(rows, {"q1": "5b"})


@pytest.mark.parametrize("module", [qa, lora])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


# --------------------------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("config", "test_set", "questions", "train_batches"),
    [
        ("bioasq_4b.yaml", "4b", 161, {"5b-1", "5b-2", "5b-3", "5b-4", "5b-5", "7b"}),
        ("bioasq_5b.yaml", "5b", 150, {"4b-1", "4b-2", "4b-3", "4b-4", "4b-5", "7b"}),
    ],
)
def test_protocol_configs_train_on_the_other_years(run_qa, tmp_path, config, test_set, questions, train_batches):
    model_args, data_args, training_args = run_qa.parse_args(
        [
            str(CONFIGS / config),
            "--data_dir",
            str(data_dir()),
            "--model_name_or_path",
            "x",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert training_args.do_train and training_args.do_eval and data_args.max_seq_length == 384
    train_rows, test_sets, _ = run_qa.load_data(data_args, training_args)  # also checks train/test disjointness
    assert list(test_sets) == [test_set]
    rows, references, golden_questions = test_sets[test_set]
    assert sum(len(batch) for batch in references.values()) == questions and len(references) == 5
    assert len(golden_questions) > questions  # every question of the golden files, of all types
    assert {row["batch"] for row in train_rows} == train_batches
    assert len(train_rows) > 700  # about 800 golden-derived contexts (5b + 7b: 811, 4b + 7b: 792)


@pytest.mark.real_data
@pytest.mark.slow
def test_run_qa_real_data_smoke_on_a_slice_of_4b(run_qa, tmp_path):
    data = data_dir()
    # A slice of batch 4b-1: its first 12 contexts and, in the golden file, the questions they belong to.
    squad = json.loads((data / "bioasq/4b/test/BioASQ-test-factoid-4b-1.json").read_text())
    paragraphs = squad["data"][0]["paragraphs"][:12]
    squad["data"] = [{"title": squad["data"][0]["title"], "paragraphs": paragraphs}]
    kept = {qa["id"].split("_")[0] for p in paragraphs for qa in p["qas"]}
    golden = json.loads((data / "bioasq/4b/golden/4B1_golden.json").read_text())
    golden["questions"] = [q for q in golden["questions"] if q["id"] in kept]
    write_json(tmp_path / "4b/test/BioASQ-test-factoid-4b-1.json", squad)
    write_json(tmp_path / "4b/golden/4B1_golden.json", golden)
    output_dir = tmp_path / "out"
    results = run_qa.main(
        [
            "--data_dir",
            str(data),
            "--model_type",
            "mamba",
            "--config_overrides",
            "hidden_size=32,num_hidden_layers=2,state_size=8",
            "--tokenizer_name",
            str(data / "tokenizers/gpt-neox-20b"),
            "--train_golden_files",
            "bioasq/7b/golden/7B_golden.json",
            "--test_dirs",
            str(tmp_path / "4b"),
            "--max_train_samples",
            "24",
            "--do_train",
            "--do_eval",
            *common_args(output_dir, **{"--max_steps": 2, "--max_seq_length": 96, "--doc_stride": 32}),
        ]
    )
    assert results["bioasq_4b_num_questions"] == len(kept) and results["bioasq_4b_num_batches"] == 1
    assert results["train_samples"] == 24 and results["train_windows"] >= 24
    predictions = json.loads((output_dir / "predictions_4b.json").read_text())
    assert set(predictions) == kept and all(len(p) <= 5 for p in predictions.values())
    assert 0.0 <= results["bioasq_4b_mrr"] <= 1.0


def test_only_a_causal_lm_run_counts_as_the_pretraining_stage_of_the_card(run_qa, trained, clm_dir, tmp_path):
    output_dir, _ = trained
    assert not run_qa.is_local_clm_run(str(output_dir))  # a QA run with results is not a pretraining run
    assert not run_qa.is_local_clm_run(str(clm_dir))  # no recorded results
    run = tmp_path / "clm_run"
    run.mkdir()
    shutil.copy(clm_dir / "config.json", run / "config.json")
    (run / "all_results.json").write_text(json.dumps({"perplexity": 12.5}))
    assert run_qa.is_local_clm_run(str(run))


# ---------------------------------------------------------------- Mamba-2 (issue 12): the script takes its checkpoints

MAMBA2_OVERRIDES = "hidden_size=32,expand=2,head_dim=16,num_heads=4,n_groups=1,state_size=16,num_hidden_layers=2"


@pytest.mark.parametrize("start", ["mamba2_folder", "mamba2_random_init"])
def test_run_qa_end_to_end_on_mamba2(run_qa, bioasq_files, mamba2_clm_dir, tokenizer_dir, tmp_path, caplog, start):
    """A Mamba2ForCausalLM folder (with LoRA on the family's default targets) and a random Mamba-2 init train, score
    and save a Mamba-2 QA model; the run log names the Mamba-2 code path once and nothing of Mamba-1."""
    from transformers import AutoModelForQuestionAnswering

    from biomamba_hf import Mamba2ForQuestionAnswering
    from biomamba_hf.ops.ssd import MAMBA2_FAST_PATH_NAME

    if start == "mamba2_folder":
        model_argv = ["--model_name_or_path", str(mamba2_clm_dir), "--use_lora"]
    else:
        model_argv = ["--model_type", "mamba2", "--config_overrides", f"{MAMBA2_OVERRIDES},chunk_size=4"]
        model_argv += ["--tokenizer_name", str(tokenizer_dir)]
    output_dir = tmp_path / "out"
    argv = [
        *model_argv,
        "--train_golden_files", str(bioasq_files["train_golden"]),
        "--test_dirs", str(bioasq_files["test_dir"]),
        "--do_train", "--do_eval",
        *common_args(output_dir, **{"--max_steps": 2}),
    ]  # fmt: skip
    with caplog.at_level("INFO"):
        results = run_qa.main(argv)
    assert read_results(output_dir) == pytest.approx(results)
    assert 0.0 <= results["bioasq_4b_strict_acc"] <= results["bioasq_4b_lenient_acc"] <= 1.0
    assert results["bioasq_4b_num_questions"] == 5
    model = AutoModelForQuestionAnswering.from_pretrained(output_dir)
    assert isinstance(model, Mamba2ForQuestionAnswering) and model.config.qa_layout == "question_first"
    messages = [record.getMessage() for record in caplog.records]
    code_paths = [m for m in messages if "code path" in m]
    assert code_paths == [f"run: Mamba-2 code path: {MAMBA2_FAST_PATH_NAME}"], code_paths
    if start == "mamba2_folder":  # the default targets are Mamba-2's (x_proj, Mamba-1's default, does not exist)
        assert "run: LoRA: ['in_proj', 'embeddings']" in messages


def test_lora_target_modules_default_to_the_model_family(run_qa):
    model_args, _, _ = run_qa.parse_args(["--model_name_or_path", "x", "--output_dir", "o", "--use_lora"])
    assert model_args.lora_targets is None  # add_lora / default_lora_targets pick per family
    model_args, _, _ = run_qa.parse_args(
        ["--model_name_or_path", "x", "--output_dir", "o", "--lora_target_modules", "in_proj, embeddings"]
    )
    assert model_args.lora_targets == ["in_proj", "embeddings"]
    assert lora.default_lora_targets(qa_model_for("mamba")) == ("in_proj", "x_proj", "embeddings")
    assert lora.default_lora_targets(qa_model_for("mamba2")) == ("in_proj", "embeddings")


def qa_model_for(model_type):
    from helpers import tiny_mamba2_config

    from biomamba_hf import Mamba2ForQuestionAnswering, MambaForQuestionAnswering

    if model_type == "mamba2":
        return Mamba2ForQuestionAnswering(tiny_mamba2_config(vocab_size=64))
    return MambaForQuestionAnswering(tiny_config(vocab_size=64))


@pytest.mark.parametrize("model_type", ["mamba", "mamba2"])
def test_resolve_layout_reads_the_layout_of_both_families(model_type):
    config = qa_model_for(model_type).config
    config.qa_layout = "repeat_context"
    assert qa.resolve_layout(config) == "repeat_context"
    del config.qa_layout  # a causal-LM config without a recorded layout: the default layout, not the pair template
    assert qa.resolve_layout(config) == "question_first"
