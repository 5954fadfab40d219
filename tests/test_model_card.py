"""The model card is rendered from recorded result files only; its metadata parses and matches them exactly."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_config, tiny_mamba2_config
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from biomamba_hf import MambaForQuestionAnswering, MambaForSequenceClassification, hub, prepare_tokenizer_for_qa

REPO_ID = "LeoYML/biomamba-130m"
FAKE_TOKEN = "hf_" + "Q7xK2mV9pL4rT8wN3bY6cZ1dF5gH0jS2aE"

# What examples/run_clm.py and examples/run_qa.py record (Trainer.save_metrics / save_state / save_run_arguments).
CLM_RESULTS = {
    "epoch": 0.9982,
    "initial_loss": 2.5998,
    "initial_perplexity": 13.46,
    "eval_loss": 1.0723450183868408,
    "eval_runtime": 12.31,
    "eval_samples": 611,
    "perplexity": 2.922144510784612,
    "train_loss": 1.2345678,
    "train_runtime": 5021.337,
    "train_samples": 76800,
    "train_block_size": 2048,
    "train_tokens_per_step": 524288,
}
QA_RESULTS = {
    "bioasq_4b_strict_acc": 0.3416149068322981,
    "bioasq_4b_lenient_acc": 0.5093167701863354,
    "bioasq_4b_mrr": 0.4107142857142857,
    "bioasq_4b_num_questions": 161,
    "bioasq_5b_strict_acc": 0.36,
    "bioasq_5b_lenient_acc": 0.5266666666666666,
    "bioasq_5b_mrr": 0.4261111111111111,
    "bioasq_5b_num_questions": 150,
    "train_loss": 2.0471,
    "epoch": 3.0,
}
CLM_ARGS = {
    "model_name_or_path": "state-spaces/mamba-130m-hf",
    "train_file": "/data/someone/pubmed/train.jsonl.gz",
    "validation_file": "/data/someone/pubmed/dev.jsonl.gz",
    "block_size": 2048,
    "max_steps": 4800,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 2,
    "world_size": 8,
    "learning_rate": 0.0006,
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr": 1e-05},
    "warmup_ratio": 0.01,
    "warmup_steps": 0,
    "optim": "adamw_torch_fused",
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.1,
    "max_grad_norm": 1.0,
    "bf16": True,
    "fp16": False,
    "seed": 42,
    "hub_token": "<HUB_TOKEN>",
}


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def write_clm_run(run_dir: Path, results=CLM_RESULTS, args=CLM_ARGS, weights_from: Path | None = None) -> Path:
    """The files run_clm.py records; with ``weights_from``, also the checkpoint (weights, config, tokenizer)."""
    if weights_from is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        for file in weights_from.iterdir():
            shutil.copyfile(file, run_dir / file.name)
    log_history = [{"step": step, "loss": 3.2 - step / 2400, "learning_rate": 6e-4} for step in range(100, 4801, 100)]
    log_history += [{"step": step, "eval_loss": 2.4 - step / 3600} for step in range(1200, 4801, 1200)]
    write_json(run_dir / "all_results.json", results)
    write_json(run_dir / "trainer_state.json", {"global_step": 4800, "max_steps": 4800, "log_history": log_history})
    write_json(run_dir / "run_args.json", args)
    return run_dir


def save_tiny_model(run_dir: Path, tokenizer_dir: Path, model_class) -> None:
    """A tiny random ``model_class`` (Mamba or Mamba-2 head) saved with its tokenizer, as the scripts leave it."""
    from transformers import AutoTokenizer

    from biomamba_hf.data.pubmedqa import LABELS

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    if model_class.__name__.startswith("Mamba2"):
        config = tiny_mamba2_config((len(tokenizer) // 16 + 1) * 16)
    else:
        config = tiny_config(len(tokenizer) + 3)
    if model_class.__name__.endswith("ForSequenceClassification"):
        config.update(
            {"num_labels": 3, "id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
        )
    model = model_class(config)
    prepare_tokenizer_for_qa(tokenizer, model)
    model.save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)


def start_args(start: Path | str | None) -> dict:
    """``model_name_or_path`` and ``lineage`` of run_args.json for a run started from ``start`` (folder or Hub id)."""
    if start is None:
        return {"model_name_or_path": "/scratch/runs/clm"}  # recorded before lineage existed; a folder elsewhere
    return {"model_name_or_path": str(start), hub.LINEAGE_FIELD: hub.describe_start(str(start))}


def write_qa_run(
    run_dir: Path, tokenizer_dir: Path, results=QA_RESULTS, start: Path | None = None, model_class=None
) -> Path:
    """A tiny QA checkpoint (weights, config, tokenizer) with the files run_qa.py records beside it."""
    save_tiny_model(run_dir, tokenizer_dir, model_class or MambaForQuestionAnswering)
    write_json(run_dir / "all_results.json", results)
    write_json(
        run_dir / "trainer_state.json",
        {"global_step": 60, "max_steps": 60, "log_history": [{"step": s, "loss": 5.0 - s / 20} for s in (20, 40, 60)]},
    )
    write_json(
        run_dir / "run_args.json",
        {**start_args(start), "max_seq_length": 512, "doc_stride": 128, "learning_rate": 5e-05,
         "num_train_epochs": 3.0, "per_device_train_batch_size": 8, "world_size": 1, "seed": 42},
    )  # fmt: skip
    return run_dir


# What examples/run_pubmedqa.py records with --do_train --do_eval --do_predict --max_steps 3 (Trainer.save_metrics).
PUBMEDQA_RESULTS = {
    "epoch": 0.0984,
    "train_loss": 1.0931,
    "train_samples": 450,
    "pubmedqa_dev_accuracy": 0.46,
    "pubmedqa_dev_macro_f1": 0.2100456621004566,
    "pubmedqa_dev_loss": 1.0812,
    "pubmedqa_dev_samples": 50,
    "pubmedqa_test_accuracy": 0.552,
    "pubmedqa_test_macro_f1": 0.23711340206185566,
    "pubmedqa_test_loss": 1.0705,
    "pubmedqa_test_samples": 500,
}


def write_pubmedqa_run(
    run_dir: Path, tokenizer_dir: Path, results=PUBMEDQA_RESULTS, start: Path | None = None, model_class=None
) -> Path:
    """A tiny PubMedQA classifier with the files run_pubmedqa.py records beside it (3 steps: 0.0984 epochs)."""
    save_tiny_model(run_dir, tokenizer_dir, model_class or MambaForSequenceClassification)
    write_json(run_dir / "all_results.json", results)
    write_json(
        run_dir / "trainer_state.json",
        {"global_step": 3, "max_steps": 3, "epoch": 0.09836065573770492, "num_train_epochs": 1,
         "log_history": [{"step": s, "loss": 1.1 - s / 100} for s in (1, 2, 3)]},
    )  # fmt: skip
    write_json(
        run_dir / "run_args.json",
        {**start_args(start), "max_seq_length": 256, "max_question_length": 32, "dev_size": 50, "max_steps": 3,
         "num_train_epochs": 3.0, "learning_rate": 2e-05, "per_device_train_batch_size": 16, "world_size": 1,
         "seed": 42},
    )  # fmt: skip
    return run_dir


@pytest.fixture
def runs(tmp_path, tokenizer_dir, clm_dir):
    """A run_clm run (with its weights) and a QA run whose recorded lineage starts from it."""
    clm_run = write_clm_run(tmp_path / "clm", weights_from=clm_dir)
    return clm_run, write_qa_run(tmp_path / "qa", tokenizer_dir, start=clm_run)


def eval_results_by_key(card: ModelCard, model_name: str = "biomamba-130m") -> dict[tuple[str, str, str], object]:
    """The card's model-index, read from its raw YAML header with huggingface_hub's own parser."""
    metadata = yaml.safe_load(card.content.split("---\n")[1])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == model_name
    assert results == card.data.eval_results  # ModelCardData reads the same entries
    return {(r.dataset_name, r.dataset_split, r.metric_type): r for r in results}


def test_metadata_parses_and_equals_the_results_files(runs):
    clm_dir, qa_dir = runs
    path = hub.save_model_card(qa_dir, pretraining_dir=clm_dir, qa_dir=qa_dir, repo_id=REPO_ID)
    card = ModelCard(path.read_text(encoding="utf-8"))  # parsed the way the Hub parses it

    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "question-answering"
    assert card.data.base_model == "state-spaces/mamba-130m-hf"
    assert card.data.datasets == ["pubmed", "bioasq"]
    assert {"mamba", "biomedical", "pubmed", "bioasq"} <= set(card.data.tags)

    results = eval_results_by_key(card)
    expected = {
        ("BioASQ 4b factoid", "test", "strict_accuracy"): QA_RESULTS["bioasq_4b_strict_acc"],
        ("BioASQ 4b factoid", "test", "lenient_accuracy"): QA_RESULTS["bioasq_4b_lenient_acc"],
        ("BioASQ 4b factoid", "test", "mrr"): QA_RESULTS["bioasq_4b_mrr"],
        ("BioASQ 5b factoid", "test", "strict_accuracy"): QA_RESULTS["bioasq_5b_strict_acc"],
        ("BioASQ 5b factoid", "test", "lenient_accuracy"): QA_RESULTS["bioasq_5b_lenient_acc"],
        ("BioASQ 5b factoid", "test", "mrr"): QA_RESULTS["bioasq_5b_mrr"],
        ("PubMed abstracts", "validation", "cross_entropy"): CLM_RESULTS["eval_loss"],
        ("PubMed abstracts", "validation", "perplexity"): CLM_RESULTS["perplexity"],
    }
    assert {key: r.metric_value for key, r in results.items()} == expected  # exact: no rounding, nothing invented
    for (dataset, _, _), result in results.items():
        assert result.dataset_type == ("bioasq" if dataset.startswith("BioASQ") else "pubmed")
        assert result.metric_args["definition"]  # each metric says how it was computed
    assert results[("BioASQ 4b factoid", "test", "mrr")].dataset_config == "4b"
    assert "averaged over the 5 batches" in results[("BioASQ 5b factoid", "test", "mrr")].metric_args["averaging"]
    assert "real tokens only" in results[("PubMed abstracts", "validation", "perplexity")].metric_args["tokens"]


EXPECTED_BODY = r"""
<!-- This card was generated by biomamba_hf.hub.save_model_card from the files the training runs recorded
\(all_results.json, trainer_state.json, run_args.json\). Edit model_card.md in biomamba_hf, not this file. -->

# biomamba-130m

biomamba-130m is a \[Mamba\]\(https://arxiv.org/abs/2312.00752\) language model \(selective state-space model, no
attention\) adapted to biomedical text following the BioMamba recipe: continued next-token pretraining on PubMed abstracts, then fine-tuning for extractive question answering on BioASQ factoid questions.
It is packaged with `biomamba_hf`, which adds the `MambaForQuestionAnswering` head and an extractive
question-answering pipeline to 🤗 Transformers.

- \*\*Architecture:\*\* `MambaForQuestionAnswering` \([\d,]+ parameters, 2 layers, d_model 32, state size 8, vocabulary \d+\)
- \*\*Base model:\*\* \[`state-spaces/mamba-130m-hf`\]\(https://huggingface.co/state-spaces/mamba-130m-hf\)
- \*\*QA input layout:\*\* `question_first` \(recorded as `config.qa_layout`; the pipeline and the head read it\)
- \*\*Language:\*\* English \(biomedical literature\)
- \*\*License:\*\* apache-2.0

## Usage

`biomamba_hf` is not published on PyPI: install it from a source checkout \(the folder with its `setup.cfg`\),
directly or as a wheel built there:

```bash
pip install -e .  # in the checkout
pip wheel --no-deps -w dist . && pip install dist/biomamba_hf-[\w.]+-py3-none-any.whl
```

`import biomamba_hf` registers `MambaForQuestionAnswering` with `AutoModelForQuestionAnswering` and the
`"question-answering"` pipeline \(which transformers >= 5.3 no longer ships\).

```python
import biomamba_hf  # noqa: F401  \(registers the Mamba QA head and pipeline\)
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

qa = pipeline\("question-answering", model="LeoYML/biomamba-130m"\)
print\(qa\(question="Which gene is mutated in cystic fibrosis\?",
         context="Cystic fibrosis results from mutations in the CFTR chloride channel."\)\)

tokenizer = AutoTokenizer.from_pretrained\("LeoYML/biomamba-130m"\)
model = AutoModelForQuestionAnswering.from_pretrained\("LeoYML/biomamba-130m"\)
```

This checkpoint was fine-tuned for extractive QA; its language-modelling quality was not measured after
fine-tuning, so use the causal-LM checkpoint it was fine-tuned from for generation.

## Training recipe

### Continued pretraining

Next-token prediction on biomedical text with 🤗 `Trainer` \(`examples/run_clm.py`\).

\| setting \| value \|
\|---\|---\|
\| initialised from \| state-spaces/mamba-130m-hf \|
\| training data \| train.jsonl.gz \|
\| validation data \| dev.jsonl.gz \|
\| sequence length \(tokens\) \| 2048 \|
\| max steps \| 4800 \|
\| epochs run \| 0.9982 \|
\| batch size per device \| 16 \|
\| gradient accumulation steps \| 2 \|
\| devices \| 8 \|
\| peak learning rate \| 0.0006 \|
\| learning-rate schedule \| cosine_with_min_lr \|
\| schedule arguments \| \{"min_lr": 1e-05\} \|
\| warmup ratio \| 0.01 \|
\| optimizer \| adamw_torch_fused \|
\| Adam beta1 \| 0.9 \|
\| Adam beta2 \| 0.95 \|
\| weight decay \| 0.1 \|
\| gradient clipping \(max norm\) \| 1.0 \|
\| bf16 \| True \|
\| seed \| 42 \|
\| tokens per optimizer step \| 524,288 \|
\| optimizer steps run \| 4800 \|
\| final mean training loss \| 1.2346 \|
\| training time \(s\) \| 5021.337 \|

### Fine-tuning for extractive QA

Start/end span prediction on BioASQ factoid questions with 🤗 `Trainer` \(`examples/run_qa.py`\).

\| setting \| value \|
\|---\|---\|
\| initialised from \| clm \|
\| sequence length \(tokens\) \| 512 \|
\| document stride \(tokens\) \| 128 \|
\| max steps \| 60 \|
\| epochs run \| 3.0 \|
\| batch size per device \| 8 \|
\| devices \| 1 \|
\| peak learning rate \| 5e-05 \|
\| seed \| 42 \|
\| tokens per optimizer step \(at most\) \| 4,096 \|
\| optimizer steps run \| 60 \|
\| final mean training loss \| 2.0471 \|

### Training curves

!\[Training curves: loss and perplexity against optimizer step\]\(training_curves.png\)

## Evaluation

Every number below is read from the results files of the runs; nothing is typed by hand.

\*\*BioASQ factoid QA\*\* \(BioBERT's SQuAD-format test batches with the official golden answers\). For each question
the model proposes up to 5 ranked answers, merged over all snippets of the question. \*Strict accuracy\*: the first
answer matches a gold synonym; \*lenient accuracy\*: any of the 5 does; \*MRR\*: mean of 1/rank of the first matching
answer \(0 if none\). Matching is case-insensitive exact string match; a question without prediction scores 0; scores
are computed per test batch and averaged over the 5 batches, as BioBERT reports them.

\| test set \| strict accuracy \| lenient accuracy \| MRR \|
\|---\|---\|---\|---\|
\| BioASQ 4b factoid \(test\) \| 0.3416 \| 0.5093 \| 0.4107 \|
\| BioASQ 5b factoid \(test\) \| 0.3600 \| 0.5267 \| 0.4261 \|

\*\*Language modelling on PubMed abstracts.\*\* Cross-entropy is the mean next-token loss in nats per token over real
tokens only \(padding is never scored\); perplexity is its exponential.

\| split \| cross-entropy \| perplexity \|
\|---\|---\|---\|
\| PubMed abstracts \(validation\) \| 1.0723 \| 2.922 \|
\| PubMed abstracts \(validation\), starting checkpoint state-spaces/mamba-130m-hf before training \| 2.5998 \| 13.460 \|

\*\*Not measured\*\* for this checkpoint \(no value in the recorded results, so none is reported\):

- BioASQ 6b factoid \(test\): Strict accuracy, Lenient accuracy, Mean reciprocal rank
- PubMed abstracts \(test\): Cross-entropy \(nats/token\), Perplexity

## Limitations

- This is a small research model. Its answers are spans copied from the given context, not verified facts;
  it must not be used for clinical decisions.
- Mamba reads left to right, so when it reads "question, then context" each context token has seen the question but
  not the rest of the context; see the QA input layout above for how this checkpoint handles it.
- BioASQ test sets are small \(150-161 factoid questions each\): differences of a few points are within noise.
- The training text is biomedical literature in English; the model has not been evaluated on clinical notes or
  other languages.

## Citation

```bibtex
@article\{yue2024biomamba,
  title   = \{BioMamba: A Pre-trained Biomedical Language Representation Model Leveraging Mamba\},
  author  = \{Yue, Ling and Xing, Sixue and Lu, Yingzhou and Fu, Tianfan\},
  journal = \{arXiv preprint arXiv:2408.02600\},
  year    = \{2024\}
\}

@article\{gu2023mamba,
  title   = \{Mamba: Linear-Time Sequence Modeling with Selective State Spaces\},
  author  = \{Gu, Albert and Dao, Tri\},
  journal = \{arXiv preprint arXiv:2312.00752\},
  year    = \{2023\}
\}
```
?"""


def test_whole_card_matches_the_expected_text(runs):
    clm_dir, qa_dir = runs
    text = hub.save_model_card(qa_dir, pretraining_dir=clm_dir, qa_dir=qa_dir, repo_id=REPO_ID).read_text()
    metadata, body = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, flags=re.DOTALL).groups()
    assert re.fullmatch(EXPECTED_BODY, body, flags=re.DOTALL), body
    assert metadata.startswith("base_model: state-spaces/mamba-130m-hf\n")
    assert "/data/someone" not in text and "/scratch" not in text  # local paths are shortened to file names
    assert (qa_dir / "training_curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_metrics_are_omitted_and_listed_as_not_measured(tmp_path, tokenizer_dir):
    only_4b = {k: v for k, v in QA_RESULTS.items() if not k.startswith("bioasq_5b")}
    qa_dir = write_qa_run(tmp_path / "qa", tokenizer_dir, results=only_4b)
    card = ModelCard.load(hub.save_model_card(qa_dir, repo_id=REPO_ID))  # no pretraining run: QA stage only

    results = eval_results_by_key(card)
    assert sorted(results) == [
        ("BioASQ 4b factoid", "test", "lenient_accuracy"),
        ("BioASQ 4b factoid", "test", "mrr"),
        ("BioASQ 4b factoid", "test", "strict_accuracy"),
    ]
    assert card.data.datasets == ["bioasq"]
    assert card.data.base_model is None  # the QA run started from a local folder: no Hub id is guessed
    assert "- **Base model:** a local checkpoint (`clm`)" in card.text
    assert "- BioASQ 5b factoid (test): Strict accuracy, Lenient accuracy, Mean reciprocal rank" in card.text
    assert "PubMed abstracts" not in card.text  # the card of a QA run lists the QA metrics only
    assert "| BioASQ 5b factoid" not in card.text and "Language modelling on PubMed" not in card.text
    assert "### Continued pretraining" not in card.text and "### Fine-tuning for extractive QA" in card.text


def test_a_clm_checkpoint_gets_a_text_generation_card(tmp_path, clm_dir):
    run_dir = tmp_path / "clm"
    for file in clm_dir.iterdir():
        (run_dir / file.name).parent.mkdir(exist_ok=True)
        (run_dir / file.name).write_bytes(file.read_bytes())
    write_clm_run(run_dir)
    card = ModelCard.load(hub.save_model_card(run_dir, repo_id="someone/biomamba-clm"))

    assert card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == ["pubmed"]
    assert {key: r.metric_value for key, r in eval_results_by_key(card, "biomamba-clm").items()} == {
        ("PubMed abstracts", "validation", "cross_entropy"): CLM_RESULTS["eval_loss"],
        ("PubMed abstracts", "validation", "perplexity"): CLM_RESULTS["perplexity"],
    }
    assert "`MambaForCausalLM`" in card.text and "### Continued pretraining" in card.text
    assert "fine-tuned for extractive QA, so" not in card.text
    assert "| final mean training loss | 1.2346 |" in card.text

    # A run resumed at step 4000: transformers' train_loss and train_runtime cover steps 4001-4800 only.
    write_clm_run(run_dir, results={**CLM_RESULTS, "train_start_step": 4000})
    card = ModelCard.load(hub.save_model_card(run_dir, repo_id="someone/biomamba-clm"))
    assert "| final mean training loss (steps 4001-4800, after a resume) | 1.2346 |" in card.text
    assert "| training time (s) (steps 4001-4800, after a resume) | 5021.337 |" in card.text


def test_a_run_from_scratch_claims_no_base_model(tmp_path):
    args = {"model_type": "mamba", "block_size": 128, "warmup_steps": 0.05, "per_device_train_batch_size": 16}
    card = ModelCard.load(hub.save_model_card(write_clm_run(tmp_path, args=args), repo_id="a/demo"))
    assert card.data.base_model is None
    assert "- **Base model:** none (random initialisation)" in card.text
    assert "| PubMed abstracts (validation), before training | 2.5998 | 13.460 |" in card.text
    assert "| warmup ratio | 0.05 |" in card.text and "warmup steps" not in card.text
    assert "mamba-130m" not in card.text

    (tmp_path / "run_args.json").unlink()  # nothing recorded: the card must not guess
    card = ModelCard.load(hub.save_model_card(tmp_path, repo_id="a/demo"))
    assert card.data.base_model is None and "mamba-130m" not in card.text
    assert "- **Base model:** not recorded (no run_args.json)" in card.text
    card = ModelCard.load(hub.save_model_card(tmp_path, repo_id="a/demo", base_model="state-spaces/mamba-130m-hf"))
    assert card.data.base_model == "state-spaces/mamba-130m-hf"


def test_trainer_prefixed_keys_are_read_and_conflicts_are_refused(tmp_path, tokenizer_dir):
    prefixed = {"test_bioasq_4b_strict_acc": 0.25, "test_bioasq_4b_mrr": 0.3, "eval_bioasq_5b_mrr": 0.2}
    qa_dir = write_qa_run(tmp_path / "qa", tokenizer_dir, results=prefixed)
    card = ModelCard.load(hub.save_model_card(qa_dir, repo_id=REPO_ID))
    values = {key: r.metric_value for key, r in eval_results_by_key(card).items()}
    assert values == {
        ("BioASQ 4b factoid", "test", "strict_accuracy"): 0.25,
        ("BioASQ 4b factoid", "test", "mrr"): 0.3,
        ("BioASQ 5b factoid", "test", "mrr"): 0.2,
    }
    assert "| BioASQ 4b factoid (test) | 0.2500 | not measured | 0.3000 |" in card.text

    write_json(qa_dir / "all_results.json", {"eval_bioasq_4b_mrr": 0.3, "test_bioasq_4b_mrr": 0.4})
    with pytest.raises(ValueError, match=r"all_results.json: metric 'bioasq_4b_mrr' is recorded under several keys"):
        hub.save_model_card(qa_dir, repo_id=REPO_ID)


def test_validation_and_test_splits_stay_separate_rows(tmp_path):
    results = {**CLM_RESULTS, "test_loss": 1.1, "test_perplexity": 3.0041660239464334}
    card = ModelCard.load(hub.save_model_card(write_clm_run(tmp_path, results=results), repo_id="a/b"))
    assert {key: r.metric_value for key, r in eval_results_by_key(card, "b").items()} == {
        ("PubMed abstracts", "validation", "cross_entropy"): CLM_RESULTS["eval_loss"],
        ("PubMed abstracts", "validation", "perplexity"): CLM_RESULTS["perplexity"],
        ("PubMed abstracts", "test", "cross_entropy"): 1.1,
        ("PubMed abstracts", "test", "perplexity"): 3.0041660239464334,
    }
    assert "| PubMed abstracts (test) | 1.1000 | 3.004 |" in card.text
    assert "**Not measured**" not in card.text  # nothing of its own task is missing; BioASQ is not its task


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"bioasq_4b_mrr": "0.41"}', r"all_results.json: metric 'bioasq_4b_mrr' is '0.41', not a number"),
        (
            '{"bioasq_4b_mrr": 0.41,',
            r"all_results.json is not valid JSON: .* at line 1 column \d+\. .*re-run it, or delete the file",
        ),
        ("[0.41]", r"all_results.json should hold a JSON dict, got list"),
    ],
)
def test_broken_results_files_are_named_in_the_error(tmp_path, content, message):
    (tmp_path / "all_results.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        hub.save_model_card(tmp_path)


def test_a_folder_without_recorded_files_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"holds none of all_results.json, trainer_state.json, run_args.json"):
        hub.save_model_card(tmp_path)


def test_plot_is_left_out_without_a_log_history(tmp_path, tokenizer_dir):
    qa_dir = write_qa_run(tmp_path / "qa", tokenizer_dir)
    (qa_dir / "trainer_state.json").unlink()
    (qa_dir / "training_curves.png").write_bytes(b"stale plot of an earlier run")
    text = hub.save_model_card(qa_dir, repo_id=REPO_ID).read_text()
    assert "training_curves.png" not in text and "### Training curves" not in text
    assert not (qa_dir / "training_curves.png").exists()


def test_plot_has_one_row_per_stage(tmp_path):
    history = [{"step": 10, "loss": 2.0}, {"step": 10, "eval_loss": 1.5}, {"step": 20, "loss": 1.0}]
    path = hub.plot_training_curves({"a": history, "b": history}, tmp_path / "c.png", perplexity_stages=["a"])
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    assert (width, height) == (1000, 720)  # figsize (10, 3.6 per row) at dpi 100
    assert hub.plot_training_curves({"a": [{"step": 1, "learning_rate": 1e-3}]}, tmp_path / "d.png") is None
    assert not (tmp_path / "d.png").exists()


def test_run_arguments_are_recorded_without_tokens(tmp_path):
    from transformers import TrainingArguments

    @dataclasses.dataclass
    class ModelArguments:
        model_name_or_path: str = "state-spaces/mamba-130m-hf"
        token: str | None = FAKE_TOKEN
        block_size: int = 2048

    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), hub_token=FAKE_TOKEN, learning_rate=6e-4)
    path = hub.save_run_arguments(tmp_path, ModelArguments(), training_args)
    text = path.read_text()
    assert FAKE_TOKEN not in text
    recorded = json.loads(text)
    assert recorded["token"] == "<redacted>" and recorded["hub_token"] == "<redacted>"
    assert recorded["block_size"] == 2048 and recorded["learning_rate"] == 6e-4 and recorded["world_size"] == 1
    with pytest.raises(ValueError, match="save_run_arguments takes argument dataclasses, got dict"):
        hub.save_run_arguments(tmp_path, {"a": 1})


def test_the_run_arguments_record_rule_exists_once(tmp_path):
    """run_args.json's name and merge rule live in script_utils; the card writes what the rerun check compares."""
    from transformers import TrainingArguments

    from biomamba_hf import script_utils
    from biomamba_hf.hub import card

    assert (
        card.RUN_ARGS_FILE is script_utils.RUN_ARGS_FILE and card.run_arguments_dict is script_utils.run_arguments_dict
    )
    package = Path(script_utils.__file__).parent
    sources = {path.relative_to(package).as_posix(): path.read_text() for path in package.rglob("*.py")}
    assert [name for name, text in sources.items() if re.search(r"^RUN_ARGS_FILE\s*=", text, re.M)] == [
        "script_utils.py"
    ]
    assert [name for name, text in sources.items() if 'values["world_size"]' in text] == ["script_utils.py"]

    @dataclasses.dataclass
    class DataArguments:
        learning_rate: float = 1.0  # TrainingArguments, given last, wins
        paths: tuple = (Path("a"),)

    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=6e-4)
    recorded = json.loads(hub.save_run_arguments(tmp_path, DataArguments(), training_args).read_text())
    assert recorded.pop("lineage", None) is None  # no model_name_or_path
    expected = script_utils.run_arguments_dict(DataArguments(), training_args)
    assert recorded == card.redact_secrets(expected)
    assert recorded["learning_rate"] == 6e-4 and recorded["paths"] == ["a"]
    assert script_utils.changed_arguments(recorded, expected) == {}


@pytest.mark.slow
def test_trainer_create_model_card_and_push_to_hub_write_the_same_card(tmp_path, tokenizer_dir, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl
    from transformers import AutoTokenizer, TrainingArguments

    from biomamba_hf.trainer import BiomambaTrainer

    reference = write_qa_run(tmp_path / "reference", tokenizer_dir)
    output_dir = write_qa_run(tmp_path / "run", tokenizer_dir)
    model = MambaForQuestionAnswering.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    with_token = TrainingArguments(output_dir=str(output_dir), report_to=[], hub_token=FAKE_TOKEN)
    with pytest.raises(ValueError, match=r"--hub_token would be saved in training_args.bin .* HF_TOKEN"):
        hub.attach_model_card(BiomambaTrainer(model=model, args=with_token, processing_class=tokenizer))
    args = TrainingArguments(output_dir=str(output_dir), hub_model_id=REPO_ID, report_to=[])
    trainer = hub.attach_model_card(BiomambaTrainer(model=model, args=args, processing_class=tokenizer))
    expected = hub.save_model_card(reference, repo_id=REPO_ID).read_text()

    trainer.create_model_card(model_name="ignored", tags=["ignored"])  # what run_qa.py calls when not pushing
    assert (output_dir / "README.md").read_text() == expected

    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: uploads.append(kw))
    (output_dir / "README.md").write_text("stale")
    trainer.push_to_hub()  # what run_qa.py --push_to_hub calls
    assert (output_dir / "README.md").read_text() == expected
    assert len(uploads) == 1 and uploads[0]["repo_id"] == REPO_ID
    assert Path(uploads[0]["folder_path"]) == output_dir


# ----------------------------------------------------------------------------------------------------------------
# One card per task, named family, what ran, how to install (issue 14 section 2, issue 12 items 2 and 5)
# ----------------------------------------------------------------------------------------------------------------


def test_a_pubmedqa_card_is_a_text_classification_card_with_its_own_metrics(tmp_path, tokenizer_dir):
    run_dir = write_pubmedqa_run(tmp_path / "pubmedqa", tokenizer_dir, start="state-spaces/mamba-130m-hf")
    card = ModelCard.load(hub.save_model_card(run_dir, repo_id="someone/biomamba-pubmedqa"))

    assert card.data.pipeline_tag == "text-classification"
    assert card.data.base_model == "state-spaces/mamba-130m-hf"
    assert card.data.datasets == ["pubmed_qa"]
    results = eval_results_by_key(card, "biomamba-pubmedqa")
    assert {key: r.metric_value for key, r in results.items()} == {
        ("PubMedQA (PQA-L)", "test", "accuracy"): PUBMEDQA_RESULTS["pubmedqa_test_accuracy"],
        ("PubMedQA (PQA-L)", "test", "f1"): PUBMEDQA_RESULTS["pubmedqa_test_macro_f1"],
        ("PubMedQA (PQA-L)", "validation", "accuracy"): PUBMEDQA_RESULTS["pubmedqa_dev_accuracy"],
        ("PubMedQA (PQA-L)", "validation", "f1"): PUBMEDQA_RESULTS["pubmedqa_dev_macro_f1"],
    }  # the losses of the run (pubmedqa_*_loss) are not PubMed perplexities
    assert results[("PubMedQA (PQA-L)", "test", "f1")].metric_args["average"] == "macro"
    assert results[("PubMedQA (PQA-L)", "test", "accuracy")].metric_args["examples_scored"] == 500
    assert results[("PubMedQA (PQA-L)", "test", "accuracy")].task_type == "text-classification"

    text = card.text
    assert "run_clm.py" not in text and "Continued pretraining" not in text and "run_qa.py" not in text
    assert "### Fine-tuning for PubMedQA classification" in text and "`examples/run_pubmedqa.py`" in text
    assert re.search(
        r"model = AutoModelForSequenceClassification\.from_pretrained\(\"someone/biomamba-pubmedqa\"\)", text
    )
    assert "max_seq_length=256,\n    max_question_length=32," in text  # the lengths the run recorded
    assert 'pipeline("question-answering"' not in text and "AutoModelForQuestionAnswering" not in text
    assert "predicts one of `yes`, `no`, `maybe`" in text.replace("\n", " ")
    assert "| PubMedQA (PQA-L) (test) | 0.5520 | 0.2371 | 500 |" in text
    assert "| PubMedQA (PQA-L) (validation) | 0.4600 | 0.2100 | 50 |" in text
    assert "BioASQ" not in text and "PubMed abstracts" not in text and "**Not measured**" not in text
    # What ran (3 steps = 0.0984 epochs), not the configured 3.0 epochs.
    assert "| epochs run | 0.0984 |" in text and "| epochs | 3.0 |" not in text and "| max steps | 3 |" in text

    partial = {**PUBMEDQA_RESULTS, "pubmedqa_test_samples": 100}
    write_json(run_dir / "all_results.json", partial)
    text = ModelCard.load(hub.save_model_card(run_dir, repo_id="someone/biomamba-pubmedqa")).text
    assert "Only 100 of the 500 official test questions were\nscored (`--max_eval_samples`)" in text


def test_epochs_without_a_record_of_what_ran_are_labelled_as_configured(tmp_path, tokenizer_dir):
    run_dir = write_pubmedqa_run(tmp_path / "pubmedqa", tokenizer_dir, results={"pubmedqa_test_accuracy": 0.5})
    (run_dir / "trainer_state.json").unlink()
    text = hub.save_model_card(run_dir).read_text()
    assert "| epochs (configured; the epochs run were not recorded) | 3.0 |" in text
    assert "| epochs run |" not in text


ARCHITECTURES = [
    ("MambaForCausalLM", "text-generation", "Mamba"),
    ("MambaForQuestionAnswering", "question-answering", "Mamba"),
    ("MambaForSequenceClassification", "text-classification", "Mamba"),
    ("Mamba2ForCausalLM", "text-generation", "Mamba-2"),
    ("Mamba2ForQuestionAnswering", "question-answering", "Mamba-2"),
    ("Mamba2ForSequenceClassification", "text-classification", "Mamba-2"),
]


def model_class_named(name: str):
    import transformers

    import biomamba_hf

    return getattr(biomamba_hf, name, None) or getattr(transformers, name)


@pytest.mark.parametrize(("architecture", "pipeline_tag", "family"), ARCHITECTURES)
def test_each_architecture_gets_its_task_and_family(tmp_path, tokenizer_dir, architecture, pipeline_tag, family):
    assert hub.ARCHITECTURE_PIPELINES[architecture] == pipeline_tag
    run_dir = tmp_path / "run"
    save_tiny_model(run_dir, tokenizer_dir, model_class_named(architecture))
    write_json(run_dir / "trainer_state.json", {"global_step": 2, "epoch": 0.5, "log_history": []})
    card = ModelCard.load(hub.save_model_card(run_dir, repo_id="someone/tiny"))

    assert card.data.pipeline_tag == pipeline_tag
    tag, other = ("mamba2", "mamba") if family == "Mamba-2" else ("mamba", "mamba2")
    assert tag in card.data.tags and other not in card.data.tags
    paper = {"Mamba": "2312.00752", "Mamba-2": "2405.21060"}[family]
    assert card.text.startswith("\n<!--") and f"tiny is a [{family}](https://arxiv.org/abs/{paper})" in card.text
    assert f"- **Architecture:** `{architecture}`" in card.text
    # Nothing recorded where the model started: no base model is claimed (never mamba-130m for a Mamba-2 model).
    assert card.data.base_model is None and "mamba-130m" not in card.text
    assert "- **Base model:** not recorded (no run_args.json)" in card.text
    usage = {
        "text-generation": f'model = {family.replace("-", "")}ForCausalLM.from_pretrained("someone/tiny")',
        "question-answering": 'qa = pipeline("question-answering", model="someone/tiny")',
        "text-classification": 'model = AutoModelForSequenceClassification.from_pretrained("someone/tiny")',
    }
    assert [task for task, line in usage.items() if line in card.text] == [pipeline_tag]
    assert ("Dao, Tri and Gu, Albert" in card.text) == (family == "Mamba-2")
    if family == "Mamba-2":
        assert "heads of 16" in card.text  # Mamba-2's own shape facts


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["MambaForSequenceClassification", "Mamba2ForSequenceClassification",
                                          "Mamba2ForCausalLM"])  # fmt: skip
def test_usage_snippet_of_each_task_runs_as_written(tmp_path, tokenizer_dir, architecture, capsys):
    run_dir = tmp_path / "run"
    save_tiny_model(run_dir, tokenizer_dir, model_class_named(architecture))
    write_json(run_dir / "run_args.json", {"model_name_or_path": None, "max_seq_length": 64})
    snippets = re.findall(r"```python\n(.*?)```", hub.save_model_card(run_dir, repo_id=REPO_ID).read_text(), re.DOTALL)
    assert len(snippets) == 1
    exec(compile(snippets[0].replace(REPO_ID, str(run_dir)), "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    if architecture.endswith("ForSequenceClassification"):
        assert printed in ("yes", "no", "maybe")
    else:
        assert printed.startswith("Aspirin irreversibly inhibits")


def test_metrics_come_from_the_run_of_their_own_task(tmp_path, tokenizer_dir):
    # run_qa's own evaluation loss is not a PubMed cross-entropy; a classifier's test_loss is not a perplexity.
    qa_dir = write_qa_run(tmp_path / "qa", tokenizer_dir, results={**QA_RESULTS, "eval_loss": 0.5, "test_loss": 0.7})
    card = ModelCard.load(hub.save_model_card(qa_dir, repo_id=REPO_ID))
    assert all(r.dataset_type == "bioasq" for r in card.data.eval_results)
    assert "Cross-entropy" not in card.content and "Language modelling" not in card.text


def test_install_instruction_is_one_that_works(runs):
    clm_dir, qa_dir = runs
    text = hub.save_model_card(qa_dir, pretraining_dir=clm_dir).read_text()
    assert "pip install biomamba_hf\n" not in text  # not on PyPI: that line fails
    from biomamba_hf import __version__

    assert "`biomamba_hf` is not published on PyPI: install it from a source checkout" in text
    assert (
        f"pip install -e .  # in the checkout\npip wheel --no-deps -w dist . && pip install dist/biomamba_hf-{__version__}-py3-none-any.whl"
        in text
    )
    command = 'pip install "biomamba_hf @ git+https://example.org/biomamba_hf.git"'
    text = hub.save_model_card(qa_dir, pretraining_dir=clm_dir, install_command=command).read_text()
    assert f"```bash\n{command}\n```" in text and "not published on PyPI" not in text


# ----------------------------------------------------------------------------------------------------------------
# Lineage: a pretraining run is shown only on the card of a model fine-tuned from it
# ----------------------------------------------------------------------------------------------------------------


def test_run_arguments_record_the_start_checkpoint(tmp_path, clm_dir):
    import hashlib

    @dataclasses.dataclass
    class ModelArguments:
        model_name_or_path: str | None = None
        model_revision: str = "main"

    recorded = json.loads(hub.save_run_arguments(tmp_path / "a", ModelArguments(str(clm_dir))).read_text())
    sha = hashlib.sha256((clm_dir / "model.safetensors").read_bytes()).hexdigest()
    assert recorded["lineage"] == {
        "format": 1,
        "kind": "local",
        "model_name_or_path": str(clm_dir),
        "path": str(clm_dir.resolve()),
        "weights_sha256": {"model.safetensors": sha},
    }
    recorded = json.loads(
        hub.save_run_arguments(tmp_path / "b", ModelArguments("state-spaces/mamba2-130m")).read_text()
    )
    assert recorded["lineage"] == {
        "format": 1, "kind": "hub", "model_name_or_path": "state-spaces/mamba2-130m", "revision": "main"
    }  # fmt: skip
    recorded = json.loads(hub.save_run_arguments(tmp_path / "c", ModelArguments()).read_text())
    assert recorded["lineage"] == {"format": 1, "kind": "random_init"}
    assert recorded["model_name_or_path"] is None and recorded["model_revision"] == "main"  # arguments unchanged


def test_a_missing_pretraining_dir_is_refused(runs, tmp_path):
    _, qa_dir = runs
    missing = tmp_path / "no-such-run"
    with pytest.raises(
        ValueError, match=rf"pretraining_dir {re.escape(str(missing))} does not exist or is not a folder"
    ):
        hub.save_model_card(qa_dir, pretraining_dir=missing)
    assert not (qa_dir / "README.md").exists()


def test_a_pretraining_run_the_model_does_not_descend_from_is_refused(runs, tmp_path, mamba2_clm_dir):
    clm_run, qa_dir = runs
    sha = r"model\.safetensors sha256 [0-9a-f]{12}"
    other = write_clm_run(tmp_path / "other-clm", weights_from=mamba2_clm_dir)
    with pytest.raises(ValueError) as error:
        hub.save_model_card(qa_dir, pretraining_dir=other)
    assert re.search(
        rf"{re.escape(str(qa_dir))} was fine-tuned from the local checkpoint {re.escape(str(clm_run.resolve()))} "
        rf"\({sha}\) \({re.escape(str(qa_dir / 'run_args.json'))}, field 'lineage'\), but pretraining_dir "
        rf"{re.escape(str(other))} holds {sha}: it is not the checkpoint the run started from, so its metrics would "
        r"describe another model\. Pass as pretraining_dir",
        str(error.value),
    ), error.value
    assert not (qa_dir / "README.md").exists()

    # The same folder, retrained after the fine-tuning started: its weights (and metrics) are of another model.
    shutil.copyfile(mamba2_clm_dir / "model.safetensors", clm_run / "model.safetensors")
    with pytest.raises(ValueError, match="it was retrained or overwritten after the fine-tuning started"):
        hub.save_model_card(qa_dir, pretraining_dir=clm_run)


def test_descent_is_checked_on_the_weights_so_a_moved_run_still_matches(runs, tmp_path):
    clm_run, qa_dir = runs
    moved = Path(shutil.copytree(clm_run, tmp_path / "moved" / "clm"))
    card = ModelCard.load(hub.save_model_card(qa_dir, pretraining_dir=moved, repo_id=REPO_ID))
    assert "### Continued pretraining" in card.text


def test_a_run_from_the_hub_or_an_unrecorded_start_is_not_combined(tmp_path, tokenizer_dir, clm_dir):
    clm_run = write_clm_run(tmp_path / "clm", weights_from=clm_dir)
    from_hub = write_qa_run(tmp_path / "qa-hub", tokenizer_dir, start="state-spaces/mamba-130m-hf")
    with pytest.raises(ValueError, match=r"was fine-tuned from the Hub checkpoint state-spaces/mamba-130m-hf \(revision "
                       r"main\) .* but pretraining_dir .*/clm holds model\.safetensors sha256"):  # fmt: skip
        hub.save_model_card(from_hub, pretraining_dir=clm_run)
    legacy = write_qa_run(tmp_path / "qa-legacy", tokenizer_dir)  # run_args.json without lineage
    with pytest.raises(ValueError, match=r"run_args.json says the run started from /scratch/runs/clm, not from "
                       r"pretraining_dir .*/clm: its metrics would describe another model"):  # fmt: skip
        hub.save_model_card(legacy, pretraining_dir=clm_run)


def test_a_causal_lm_card_or_another_task_folder_is_refused(runs, tmp_path, tokenizer_dir):
    clm_run, qa_dir = runs
    with pytest.raises(ValueError, match=r"holds a MambaForCausalLM, whose card shows its own run_clm run"):
        hub.save_model_card(clm_run, pretraining_dir=qa_dir)
    pubmedqa = write_pubmedqa_run(tmp_path / "pubmedqa", tokenizer_dir)
    with pytest.raises(
        ValueError, match=r"holds a MambaForSequenceClassification \(text-classification\), but qa_dir"
    ):
        hub.save_model_card(pubmedqa, qa_dir=qa_dir)


@pytest.mark.slow
def test_run_pubmedqa_writes_a_classification_card_with_its_lineage(tmp_path, tokenizer_dir, mamba2_clm_dir):
    from helpers import example_script
    from test_pubmedqa import record, write_folder

    from biomamba_hf.data.pubmedqa import LABELS as PUBMEDQA_LABELS

    records = {str(1000 + i): record(i, PUBMEDQA_LABELS[i % 3]) for i in range(24)}
    write_folder(
        tmp_path / "data" / "pubmedqa", records, {p: r["final_decision"] for p, r in list(records.items())[:6]}
    )
    output_dir = tmp_path / "out"
    with example_script("run_pubmedqa") as run_pubmedqa:
        results = run_pubmedqa.main(
            [
                "--model_name_or_path", str(mamba2_clm_dir),
                "--data_dir", str(tmp_path / "data"),
                "--dev_size", "4", "--max_seq_length", "48", "--per_device_train_batch_size", "8",
                "--max_steps", "2", "--do_train", "--do_eval", "--do_predict",
                "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(output_dir),
            ]
        )  # fmt: skip
    lineage = json.loads((output_dir / "run_args.json").read_text())["lineage"]
    assert lineage["kind"] == "local" and lineage["weights_sha256"] == hub.weights_fingerprint(mamba2_clm_dir)
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "mamba2" in card.data.tags
    assert card.data.base_model is None and "mamba-130m" not in card.text
    assert "[Mamba-2](https://arxiv.org/abs/2405.21060)" in card.text and "run_clm.py" not in card.text
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values == {
        ("test", "accuracy"): results["pubmedqa_test_accuracy"],
        ("test", "f1"): results["pubmedqa_test_macro_f1"],
        ("validation", "accuracy"): results["pubmedqa_dev_accuracy"],
        ("validation", "f1"): results["pubmedqa_dev_macro_f1"],
    }
    epoch = json.loads((output_dir / "trainer_state.json").read_text())["epoch"]
    assert f"| epochs run | {round(epoch, 4)} |" in card.text
