"""The model card: rendered from the files the training scripts recorded, with model-index results and a plot.

The metrics the card knows are the rows of :data:`MODEL_INDEX_TABLE`, each read from the run of its own task; the
template is ``templates/model_card.md``. A fine-tuned model's card shows a pretraining run only when the fine-tuning
run's recorded lineage (``run_args.json`` field ``lineage``) shows that it started from that run's weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bioasq.formats import read_json, write_json
from ..script_utils import RUN_ARGS_FILE, run_arguments_dict

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "apache-2.0"
#: ``None``: the card says that biomamba_hf is not on PyPI and how to install it from a source checkout or a wheel
#: built from one. Pass ``install_command=`` (e.g. ``pip install "biomamba_hf @ git+https://..."``) once it is
#: published somewhere.
DEFAULT_INSTALL_COMMAND: str | None = None
#: File names the card reads in a run folder.
RESULTS_FILE = "all_results.json"
TRAINER_STATE_FILE = "trainer_state.json"
#: The field of ``run_args.json`` that records the checkpoint a run started from (see :func:`describe_start`). It is
#: derived, not a command-line argument: comparisons of recorded and new arguments should compare it separately.
LINEAGE_FIELD = "lineage"
LINEAGE_FORMAT = 1
#: File names the card writes.
CARD_FILE = "README.md"
PLOT_FILE = "training_curves.png"

#: Trainer's metric prefixes accepted in front of a table key (``test_bioasq_4b_mrr`` reads as ``bioasq_4b_mrr``).
_TRAINER_PREFIXES = ("eval_", "test_", "predict_")
_REDACTED = "<redacted>"
#: Number of questions in PubMedQA's official PQA-L test split.
PUBMEDQA_TEST_QUESTIONS = 500


@dataclass(frozen=True)
class ResultSpec:
    """What one key of ``all_results.json`` means, as a model-index entry of the card.

    ``stage`` is the run the key is read from (``"pretraining"``, ``"qa"`` or ``"classification"``): a key recorded
    by another task's run (e.g. run_qa's ``eval_loss``) never fills it. ``count_key`` names the recorded number of
    examples scored, stored in the metric's ``args`` as ``examples_scored``.
    """

    key: str
    stage: str
    task_type: str
    task_name: str
    dataset_type: str
    dataset_name: str
    dataset_config: str | None
    dataset_split: str
    metric_type: str
    metric_name: str
    #: How the number was computed; stored as the model-index metric ``args``.
    how: Mapping[str, Any] = field(default_factory=dict)
    count_key: str | None = None


_BIOASQ_HOW = {
    "candidates": "up to 5 ranked answers per question, merged over all its snippets",
    "matching": "case-insensitive exact match against the golden synonyms",
    "averaging": "computed per test batch, averaged over the 5 batches",
    "missing_prediction": "scores 0",
}


def _bioasq_rows(test_set: str) -> tuple[ResultSpec, ...]:
    """The three model-index rows of one BioASQ factoid test set (``"4b"``, ``"5b"``, ...)."""
    common = dict(
        stage="qa",
        task_type="question-answering",
        task_name="Extractive question answering (BioASQ factoid)",
        dataset_type="bioasq",
        dataset_name=f"BioASQ {test_set} factoid",
        dataset_config=test_set,
        dataset_split="test",
        count_key=f"bioasq_{test_set}_num_questions",
    )
    return (
        ResultSpec(
            key=f"bioasq_{test_set}_strict_acc",
            metric_type="strict_accuracy",
            metric_name="Strict accuracy",
            how={**_BIOASQ_HOW, "definition": "the first answer matches"},
            **common,
        ),
        ResultSpec(
            key=f"bioasq_{test_set}_lenient_acc",
            metric_type="lenient_accuracy",
            metric_name="Lenient accuracy",
            how={**_BIOASQ_HOW, "definition": "any of the 5 answers matches"},
            **common,
        ),
        ResultSpec(
            key=f"bioasq_{test_set}_mrr",
            metric_type="mrr",
            metric_name="Mean reciprocal rank",
            how={**_BIOASQ_HOW, "definition": "mean of 1/rank of the first matching answer, 0 if none"},
            **common,
        ),
    )


def _pubmedqa_rows(split: str, prefix: str) -> tuple[ResultSpec, ...]:
    """Accuracy and macro-F1 of examples/run_pubmedqa.py on one split (keys ``<prefix>_accuracy`` / ``_macro_f1``)."""
    common = dict(
        stage="classification",
        task_type="text-classification",
        task_name="Yes/no/maybe question answering (PubMedQA)",
        dataset_type="pubmed_qa",
        dataset_name="PubMedQA (PQA-L)",
        dataset_config="pqa_labeled",
        dataset_split=split,
        count_key=f"{prefix}_samples",
    )
    how = {
        "input": "question, separator, then the abstract's contexts, cut to the run's max_seq_length",
        "split": (
            f"the official test questions ({PUBMEDQA_TEST_QUESTIONS})"
            if split == "test"
            else "instances held out of the labelled training instances (seeded, --dev_size)"
        ),
    }
    return (
        ResultSpec(
            key=f"{prefix}_accuracy",
            metric_type="accuracy",
            metric_name="Accuracy",
            how={**how, "definition": "fraction of questions whose predicted label (yes, no, maybe) is the gold one"},
            **common,
        ),
        ResultSpec(
            key=f"{prefix}_macro_f1",
            metric_type="f1",
            metric_name="Macro-F1",
            how={**how, "definition": "mean over yes, no and maybe of the per-class F1", "average": "macro"},
            **common,
        ),
    )


def _pubmed_rows(split: str, loss_key: str, perplexity_key: str) -> tuple[ResultSpec, ...]:
    common = dict(
        stage="pretraining",
        task_type="text-generation",
        task_name="Causal language modelling",
        dataset_type="pubmed",
        dataset_name="PubMed abstracts",
        dataset_config=None,
        dataset_split=split,
    )
    tokens = "real tokens only (padding and tokens without a target are not scored)"
    return (
        ResultSpec(
            key=loss_key,
            metric_type="cross_entropy",
            metric_name="Cross-entropy (nats/token)",
            how={"definition": "mean next-token negative log-likelihood", "tokens": tokens},
            **common,
        ),
        ResultSpec(
            key=perplexity_key,
            metric_type="perplexity",
            metric_name="Perplexity",
            how={"definition": "exp(mean next-token cross-entropy)", "tokens": tokens},
            **common,
        ),
    )


#: The one table from results keys to model-index entries. Order here is the order on the card.
MODEL_INDEX_TABLE: tuple[ResultSpec, ...] = (
    *_bioasq_rows("4b"),
    *_bioasq_rows("5b"),
    *_bioasq_rows("6b"),
    *_pubmedqa_rows("test", "pubmedqa_test"),
    *_pubmedqa_rows("validation", "pubmedqa_dev"),
    *_pubmed_rows("validation", "eval_loss", "perplexity"),
    *_pubmed_rows("test", "test_loss", "test_perplexity"),
)

#: Rows of the training-recipe table: (argument in run_args.json, label on the card). ``num_train_epochs`` is
#: replaced by the epochs that ran (``epoch`` in trainer_state.json) when that is recorded.
RECIPE_FIELDS: tuple[tuple[str, str], ...] = (
    ("model_name_or_path", "initialised from"),
    ("dataset_name", "dataset"),
    ("train_file", "training data"),
    ("validation_file", "validation data"),
    ("block_size", "sequence length (tokens)"),
    ("max_seq_length", "sequence length (tokens)"),
    ("max_question_length", "question length (tokens)"),
    ("doc_stride", "document stride (tokens)"),
    ("qa_layout", "QA input layout"),
    ("dev_size", "dev instances held out of training"),
    ("max_train_samples", "training instances kept (--max_train_samples)"),
    ("max_eval_samples", "evaluation instances kept (--max_eval_samples)"),
    ("max_steps", "max steps"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation steps"),
    ("world_size", "devices"),
    ("learning_rate", "peak learning rate"),
    ("lr_scheduler_type", "learning-rate schedule"),
    ("lr_scheduler_kwargs", "schedule arguments"),
    ("warmup_steps", "warmup steps"),
    ("warmup_ratio", "warmup ratio"),
    ("optim", "optimizer"),
    ("adam_beta1", "Adam beta1"),
    ("adam_beta2", "Adam beta2"),
    ("adam_epsilon", "Adam epsilon"),
    ("weight_decay", "weight decay"),
    ("max_grad_norm", "gradient clipping (max norm)"),
    ("bf16", "bf16"),
    ("fp16", "fp16"),
    ("seed", "seed"),
)

#: Stage name -> (section title, summary). The pretraining title depends on the start (see :func:`_stage_title`).
_STAGES = {
    "pretraining": (
        "Continued pretraining",
        "Next-token prediction on biomedical text with 🤗 `Trainer` (`examples/run_clm.py`).",
    ),
    "qa": (
        "Fine-tuning for extractive QA",
        "Start/end span prediction on BioASQ factoid questions with 🤗 `Trainer` (`examples/run_qa.py`).",
    ),
    "classification": (
        "Fine-tuning for PubMedQA classification",
        "Yes/no/maybe classification of PubMedQA (PQA-L) questions, read as `question <sep> contexts` (a linear\n"
        "head on the state of the last token), with 🤗 `Trainer` (`examples/run_pubmedqa.py`).",
    ),
}
#: The task (the card's ``pipeline_tag``) of each architecture a card can be rendered for.
ARCHITECTURE_PIPELINES = {
    "MambaForCausalLM": "text-generation",
    "MambaForQuestionAnswering": "question-answering",
    "MambaForSequenceClassification": "text-classification",
    "Mamba2ForCausalLM": "text-generation",
    "Mamba2ForQuestionAnswering": "question-answering",
    "Mamba2ForSequenceClassification": "text-classification",
}
#: The run (stage) that trains each task.
PIPELINE_STAGES = {
    "text-generation": "pretraining",
    "question-answering": "qa",
    "text-classification": "classification",
}


@dataclass(frozen=True)
class ModelFamily:
    """How the card names a model family: in its text, its tags, its paper and its causal-LM class."""

    name: str
    tag: str
    paper: str
    causal_lm: str


FAMILIES = {
    "mamba": ModelFamily("Mamba", "mamba", "https://arxiv.org/abs/2312.00752", "MambaForCausalLM"),
    "mamba2": ModelFamily("Mamba-2", "mamba2", "https://arxiv.org/abs/2405.21060", "Mamba2ForCausalLM"),
}


def model_family(config: Mapping[str, Any], architecture: str | None = None) -> ModelFamily | None:
    """The family of a checkpoint from its ``config.json`` (``model_type``), else from its architecture name."""
    if config.get("model_type") in FAMILIES:
        return FAMILIES[config["model_type"]]
    if architecture:
        for model_type, family in sorted(FAMILIES.items(), key=lambda item: -len(item[1].causal_lm)):
            if architecture.startswith(family.causal_lm.removesuffix("ForCausalLM") + "For"):
                return FAMILIES[model_type]
    return None


# ----------------------------------------------------------------------------------------------------------------
# Reading what the runs recorded
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What one training run left in its output folder."""

    path: Path
    results: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    trainer_state: dict[str, Any] = field(default_factory=dict)


def read_recorded_json(path: Path, expected: type) -> Any:
    """:func:`biomamba_hf.bioasq.formats.read_json` of a file a run recorded; its error says how to mend it."""
    try:
        return read_json(path, expected)
    except ValueError as err:
        raise ValueError(
            f"{err}. It is written by the training script: re-run it, or delete the file to leave its content out "
            "of the model card."
        ) from None


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read ``all_results.json``, ``trainer_state.json`` and ``run_args.json`` of a run folder (each optional).

    Raises:
        ValueError: if the folder has none of these files, if one is not valid JSON, or if a metric in
            ``all_results.json`` is not a number.
    """
    path = Path(run_dir)
    record = RunRecord(path=path)
    found = [name for name in (RESULTS_FILE, TRAINER_STATE_FILE, RUN_ARGS_FILE) if (path / name).is_file()]
    if not found:
        raise ValueError(
            f"{path} holds none of {RESULTS_FILE}, {TRAINER_STATE_FILE}, {RUN_ARGS_FILE}: pass the output_dir of a "
            "run of examples/run_clm.py or examples/run_qa.py."
        )
    if (path / RESULTS_FILE).is_file():
        raw = read_recorded_json(path / RESULTS_FILE, dict)
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"{path / RESULTS_FILE}: metric {key!r} is {value!r}, not a number. Metrics files must map "
                    "metric names to numbers; fix or remove that entry."
                )
            record.results[key] = value
    if (path / TRAINER_STATE_FILE).is_file():
        record.trainer_state = read_recorded_json(path / TRAINER_STATE_FILE, dict)
        history = record.trainer_state.get("log_history", [])
        if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
            raise ValueError(
                f"{path / TRAINER_STATE_FILE}: field 'log_history' should be a list of objects; re-save it with "
                "trainer.save_state()."
            )
        record.log_history = history
    if (path / RUN_ARGS_FILE).is_file():
        record.args = read_recorded_json(path / RUN_ARGS_FILE, dict)
    return record


def lookup_metric(results: Mapping[str, float], key: str, source: str | os.PathLike = RESULTS_FILE) -> float | None:
    """The value of ``key`` in ``results``, also found behind a Trainer prefix (``test_bioasq_4b_mrr``).

    Raises:
        ValueError: if the key is recorded more than once (e.g. with ``eval_`` and ``test_``) with different values.
    """
    # A prefixed name that is itself a table key (``test_perplexity``) belongs to its own row, never to ``key``'s.
    table_keys = {spec.key for spec in MODEL_INDEX_TABLE}
    candidates = [key] + [prefix + key for prefix in _TRAINER_PREFIXES if prefix + key not in table_keys]
    present = {name: results[name] for name in candidates if name in results}
    if len(set(present.values())) > 1:
        raise ValueError(
            f"{source}: metric {key!r} is recorded under several keys with different values {present}; keep one "
            "(the card cannot tell which one was meant)."
        )
    return next(iter(present.values()), None)


def collect_eval_results(runs: Mapping[str, RunRecord]) -> list[tuple[ResultSpec, float]]:
    """Every :data:`MODEL_INDEX_TABLE` row with a value recorded by the run of its own stage, in table order.

    ``runs`` maps a stage (``"pretraining"``, ``"qa"``, ``"classification"``) to its run: a metric recorded by
    another task's run never fills a row (run_qa's ``eval_loss`` is not a PubMed cross-entropy).
    """
    found = []
    for spec in MODEL_INDEX_TABLE:
        run = runs.get(spec.stage)
        if run is None:
            continue
        value = lookup_metric(run.results, spec.key, run.path / RESULTS_FILE)
        if value is not None:
            found.append((spec, value))
    return found


# ----------------------------------------------------------------------------------------------------------------
# Lineage: which checkpoint a run started from
# ----------------------------------------------------------------------------------------------------------------

#: Weight files fingerprinted in a checkpoint folder (``training_args.bin`` is not a weight file).
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weights_fingerprint(folder: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` of the weight files of a checkpoint folder (``{}`` when it has none)."""
    folder = Path(folder)
    digests = {}
    for path in sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()}):
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 24), b""):
                digest.update(block)
        digests[path.name] = digest.hexdigest()
    return digests


def describe_start(model_name_or_path: str | None, revision: str | None = None) -> dict[str, Any]:
    """The ``lineage`` record of a run started from ``model_name_or_path`` (stored in ``run_args.json``).

    Format (``format`` 1), by ``kind``:

    * ``"local"``: ``model_name_or_path`` as given, ``path`` (absolute) and ``weights_sha256`` (see
      :func:`weights_fingerprint`) of the folder when the run started;
    * ``"hub"``: ``model_name_or_path`` (a Hub id) and the ``revision`` asked for;
    * ``"random_init"``: no checkpoint.
    """
    if model_name_or_path is None:
        return {"format": LINEAGE_FORMAT, "kind": "random_init"}
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return {
            "format": LINEAGE_FORMAT,
            "kind": "local",
            "model_name_or_path": model_name_or_path,
            "path": str(path.resolve()),
            "weights_sha256": weights_fingerprint(path),
        }
    return {"format": LINEAGE_FORMAT, "kind": "hub", "model_name_or_path": model_name_or_path, "revision": revision}


def _start_text(lineage: Mapping[str, Any]) -> str:
    kind = lineage.get("kind")
    if kind == "random_init":
        return "a random initialisation"
    if kind == "hub":
        return f"the Hub checkpoint {lineage.get('model_name_or_path')} (revision {lineage.get('revision') or 'main'})"
    digests = lineage.get("weights_sha256") or {}
    weights = ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in digests.items()) or "no weight files"
    return f"the local checkpoint {lineage.get('path')} ({weights})"


def check_descent(run_dir: str | os.PathLike, pretraining_dir: str | os.PathLike) -> None:
    """Refuse to show ``pretraining_dir``'s run on the card of the model fine-tuned in ``run_dir`` unless the
    fine-tuning started from that run's weights.

    The ``lineage`` field of ``run_dir/run_args.json`` (written by :func:`save_run_arguments`) must name a local
    checkpoint whose weight files have the sha256 of those now in ``pretraining_dir`` (the folder may have moved).
    Runs recorded before lineage existed are matched on ``model_name_or_path`` resolving to ``pretraining_dir``.

    Raises:
        ValueError: saying which start checkpoint was recorded and what ``pretraining_dir`` holds.
    """
    run_dir, pretraining_dir = Path(run_dir), Path(pretraining_dir)
    args_file = run_dir / RUN_ARGS_FILE
    args = read_recorded_json(args_file, dict) if args_file.is_file() else {}
    lineage = args.get(LINEAGE_FIELD)
    fix = (
        "Pass as pretraining_dir (--pretraining_dir) the run_clm.py output folder the model was fine-tuned from, "
        "or leave it out (the card then shows the fine-tuning run only)."
    )
    if not isinstance(lineage, dict):
        start = args.get("model_name_or_path")
        if not start:
            raise ValueError(
                f"{args_file if args_file.is_file() else run_dir} records neither {LINEAGE_FIELD!r} nor "
                f"'model_name_or_path', so nothing shows that {run_dir} was fine-tuned from {pretraining_dir}. {fix}"
            )
        if Path(start).expanduser().resolve() != pretraining_dir.resolve():
            raise ValueError(
                f"{args_file} says the run started from {start}, not from pretraining_dir {pretraining_dir}: its "
                f"metrics would describe another model. {fix}"
            )
        logger.warning(
            "%s has no %r record (a run from before lineage was recorded): matched on model_name_or_path only, "
            "the weights were not compared.",
            args_file,
            LINEAGE_FIELD,
        )
        return
    found = weights_fingerprint(pretraining_dir)
    recorded = lineage.get("weights_sha256") or {}
    if lineage.get("kind") == "local" and recorded and found == recorded:
        return
    holds = ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in found.items()) if found else "no weight files"
    if lineage.get("kind") == "local" and Path(lineage.get("path", "")).resolve() == pretraining_dir.resolve():
        why = "it was retrained or overwritten after the fine-tuning started"
    else:
        why = "it is not the checkpoint the run started from"
    raise ValueError(
        f"{run_dir} was fine-tuned from {_start_text(lineage)} ({args_file}, field {LINEAGE_FIELD!r}), but "
        f"pretraining_dir {pretraining_dir} holds {holds}: {why}, so its metrics would describe another model. {fix}"
    )


def read_config(model_dir: Path) -> dict[str, Any]:
    config_file = model_dir / "config.json"
    return read_recorded_json(config_file, dict) if config_file.is_file() else {}


def count_parameters(model_dir: str | os.PathLike) -> int | None:
    """Number of parameters in a folder's safetensors weights, read from the file headers (no tensor is loaded)."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(file, framework="numpy") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


# ----------------------------------------------------------------------------------------------------------------
# Training-curve plot
# ----------------------------------------------------------------------------------------------------------------


def plot_training_curves(
    stages: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike, perplexity_stages: Iterable[str] = ()
) -> Path | None:
    """Plot loss (and perplexity = exp(loss) for ``perplexity_stages``) against step from Trainer log histories.

    ``stages`` maps a title to a ``trainer_state.json`` ``log_history``. One row per stage: training and evaluation
    loss on the left, perplexity (log scale) on the right when asked for. Returns the PNG path, or ``None`` (and
    writes nothing) when no history has a loss entry.
    """
    curves = {}
    for title, history in stages.items():
        train = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]
        evals = [(entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry and "step" in entry]
        if train or evals:
            curves[title] = (train, evals)
    if not curves:
        return None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perplexity_stages = set(perplexity_stages)
    fig, axes = plt.subplots(len(curves), 2, figsize=(10, 3.6 * len(curves)), squeeze=False)
    for row, (title, (train, evals)) in enumerate(curves.items()):
        loss_ax, ppl_ax = axes[row]
        for points, label, style in ((train, "train", "-"), (evals, "eval", "o-")):
            if points:
                steps, losses = zip(*points)
                loss_ax.plot(steps, losses, style, label=f"{label} loss", markersize=3)
                if title in perplexity_stages:
                    ppl_ax.plot(steps, [math.exp(min(loss, 50.0)) for loss in losses], style, label=label)
        loss_ax.set(title=f"{title}: loss", xlabel="optimizer step", ylabel="cross-entropy (nats)")
        loss_ax.legend()
        if title in perplexity_stages:
            ppl_ax.set(title=f"{title}: perplexity", xlabel="optimizer step", ylabel="exp(loss)", yscale="log")
            ppl_ax.legend()
        else:
            ppl_ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------


def default_template_path() -> Path:
    """``biomamba_hf/templates/model_card.md``: a link to the repository's ``model_card.md``, the one template."""
    return Path(__file__).resolve().parents[1] / "templates" / "model_card.md"


def _display(value: Any) -> str:
    """A recorded argument as shown on the card; local paths are shortened to their last component."""
    if isinstance(value, str) and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
        if value.startswith(("/", "~", ".")) or "\\" in value or value.count("/") > 1:
            return Path(value).name
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _epochs_run(run: RunRecord) -> float | None:
    """The epochs the run covered: ``epoch`` of trainer_state.json, else of all_results.json (both from Trainer)."""
    for source in (run.trainer_state, run.results):
        value = source.get("epoch")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def _recipe_rows(run: RunRecord) -> list[tuple[str, str]]:
    args = dict(run.args)
    state = run.trainer_state
    if "max_steps" not in args and "max_steps" in state:  # trainer_state.json records it even without run_args.json
        args["max_steps"] = state["max_steps"]
    epochs_run = _epochs_run(run)
    rows, seen_labels = [], set()
    for key, label in RECIPE_FIELDS:
        value = args.get(key)
        if key == "num_train_epochs":
            # What ran, not what was configured: with --max_steps, Trainer stops at a fraction of an epoch.
            if epochs_run is not None:
                rows.append(("epochs run", _display(round(epochs_run, 4))))
                seen_labels.add(label)
                continue
            label = "epochs (configured; the epochs run were not recorded)"
        if value is None or value == "" or label in seen_labels:
            continue
        if key in ("warmup_steps", "warmup_ratio", "max_steps") and value in (0, -1):
            continue
        if key == "warmup_steps" and isinstance(value, float) and value < 1:  # transformers 5: a float is a ratio
            label = "warmup ratio"
        if key in ("bf16", "fp16") and value is False:
            continue
        rows.append((label, _display(value)))
        seen_labels.add(label)
    sequence_length = args.get("block_size") or args.get("max_seq_length") or run.results.get("train_block_size")
    if sequence_length and "sequence length (tokens)" not in seen_labels:
        rows.append(("sequence length (tokens)", _display(sequence_length)))
    batch = [args.get("per_device_train_batch_size"), args.get("gradient_accumulation_steps", 1)]
    batch.append(args.get("world_size", 1))
    if "train_tokens_per_step" in run.results:  # run_clm.py records what it actually used
        rows.append(("tokens per optimizer step", f"{int(run.results['train_tokens_per_step']):,}"))
    elif sequence_length and all(isinstance(v, int) for v in batch):
        rows.append(("tokens per optimizer step (at most)", f"{math.prod(batch) * sequence_length:,}"))
    if "global_step" in state:
        rows.append(("optimizer steps run", str(state["global_step"])))
    # After a resume, transformers' train_loss and train_runtime cover the resumed call only: say which steps.
    resumed_at = run.results.get("train_start_step") or 0
    span = f" (steps {resumed_at + 1}-{state.get('global_step', '?')}, after a resume)" if resumed_at else ""
    for key, label in (("train_loss", "final mean training loss"), ("train_runtime", "training time (s)")):
        if key in run.results:
            rows.append((label + span, _display(round(run.results[key], 4))))
    return rows


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _recorded_base_model(runs: Iterable[RunRecord]) -> tuple[str | None, str]:
    """``(Hub id, description)`` of where the earliest run with recorded arguments started from.

    The Hub id is None for a run trained from scratch, one started from a local folder, or when no run recorded its
    arguments (``run_args.json``); the description then says which, so the card never guesses.
    """
    for run in runs:
        if not run.args:
            continue
        start = run.args.get("model_name_or_path")
        if start is None:
            return None, "none (random initialisation)"
        lineage = run.args.get(LINEAGE_FIELD) or {}
        if lineage.get("kind") == "hub" or (
            not lineage and isinstance(start, str) and _HUB_ID.fullmatch(start) and not Path(start).exists()
        ):
            return start, f"[`{start}`](https://huggingface.co/{start})"
        return None, f"a local checkpoint (`{_display(start)}`)"
    return None, "not recorded (no run_args.json)"


def _cell(value: float | None, digits: int) -> str:
    return "not measured" if value is None else f"{value:.{digits}f}"


def _from_scratch(run: RunRecord) -> bool:
    return bool(run.args) and "model_name_or_path" in run.args and run.args["model_name_or_path"] is None


def _stage_title(name: str, run: RunRecord) -> str:
    if name == "pretraining" and _from_scratch(run):
        return "Pretraining from random initialisation"
    return _STAGES[name][0]


def _description(runs: Mapping[str, RunRecord]) -> str:
    parts = {
        "pretraining": "continued next-token pretraining on PubMed abstracts",
        "qa": "fine-tuning for extractive question answering on BioASQ factoid questions",
        "classification": "fine-tuning for yes/no/maybe classification on PubMedQA (PQA-L)",
    }
    if not runs:
        return "no training run was recorded with this checkpoint."
    texts = [parts[name] for name in runs]
    if "pretraining" in runs and _from_scratch(runs["pretraining"]):
        texts[list(runs).index("pretraining")] = (
            "next-token pretraining from random initialisation on PubMed abstracts"
        )
    return ", then ".join(texts) + "."


def _check_folder(value: str | os.PathLike, name: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise ValueError(
            f"{name} {value} does not exist or is not a folder: pass the output_dir of the training run, or leave "
            f"{name} out."
        )
    return path


def resolve_stage_dirs(
    model_dir: str | os.PathLike,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    qa_dir: str | os.PathLike | None = None,
    classification_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """The run folder of each stage shown on the card of the checkpoint in ``model_dir``, in training order.

    The checkpoint's own task comes from its ``config.json`` architecture (:data:`ARCHITECTURE_PIPELINES`); its
    stage's folder defaults to ``model_dir``. ``pretraining_dir`` adds the run_clm run a fine-tuned model continued
    from (see :func:`check_descent`).

    Raises:
        ValueError: a folder that does not exist, a fine-tuning folder of another task than the checkpoint's, or
            a separate pretraining folder for a causal LM (its own run is its pretraining).
    """
    model_dir = Path(model_dir)
    architecture = (read_config(model_dir).get("architectures") or [""])[0]
    own_stage = PIPELINE_STAGES.get(ARCHITECTURE_PIPELINES.get(architecture, ""))
    given = {"pretraining": pretraining_dir, "qa": qa_dir, "classification": classification_dir}
    names = {"pretraining": "pretraining_dir", "qa": "qa_dir", "classification": "classification_dir"}
    dirs = {stage: _check_folder(value, names[stage]) for stage, value in given.items() if value is not None}
    if own_stage is None:
        if not dirs:
            dirs["pretraining"] = model_dir  # no known architecture: read the folder as a run_clm output
        return {stage: dirs[stage] for stage in _STAGES if stage in dirs}
    for stage in ("qa", "classification"):
        if stage in dirs and stage != own_stage:
            raise ValueError(
                f"{model_dir} holds a {architecture} ({ARCHITECTURE_PIPELINES[architecture]}), but {names[stage]} "
                f"{dirs[stage]} was given: its card shows the run of its own task only; pass "
                f"{names[own_stage]} (or nothing) instead."
            )
    if own_stage == "pretraining" and "pretraining" in dirs and dirs["pretraining"].resolve() != model_dir.resolve():
        raise ValueError(
            f"{model_dir} holds a {architecture}, whose card shows its own run_clm run; pretraining_dir "
            f"{dirs['pretraining']} is for the card of a model fine-tuned from a run_clm run. Leave it out."
        )
    dirs.setdefault(own_stage, model_dir)
    return {stage: dirs[stage] for stage in _STAGES if stage in dirs}


def _install_text(install_command: str | None) -> str:
    if install_command:
        return f"```bash\n{install_command}\n```"
    from .. import __version__

    return (
        "`biomamba_hf` is not published on PyPI: install it from a source checkout (the folder with its `setup.cfg`),\n"
        "directly or as a wheel built there:\n\n```bash\npip install -e .  # in the checkout\n"
        f"pip wheel --no-deps -w dist . && pip install dist/biomamba_hf-{__version__}-py3-none-any.whl\n```"
    )


def render_model_card(
    model_dir: str | os.PathLike,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    qa_dir: str | os.PathLike | None = None,
    classification_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    install_command: str | None = DEFAULT_INSTALL_COMMAND,
    plot_file: str | None = None,
    template_path: str | os.PathLike | None = None,
    _runs: Mapping[str, RunRecord] | None = None,
):
    """Render the card of the checkpoint in ``model_dir`` as a ``huggingface_hub.ModelCard`` (nothing is written).

    The card is for the checkpoint's own task (its ``config.json`` architecture: causal LM, extractive QA or
    sequence classification), with ``pipeline_tag``, usage and model-index results of that task, read from the run
    of that task (``model_dir`` itself unless ``qa_dir`` / ``classification_dir`` names it). ``pretraining_dir`` is
    the run_clm output folder a fine-tuned model continued from (not checked here: :func:`save_model_card` checks
    the lineage). ``repo_id`` names the model in usage snippets (default: the folder name). ``plot_file`` is a file
    name beside the card to show as the training-curve figure. ``base_model`` defaults to the Hub id the earliest
    recorded run started from (``run_args.json``); a run started from scratch or from a local folder, or with no
    recorded arguments, gets none and the card says which. ``install_command`` replaces the default instruction,
    which says that biomamba_hf is not on PyPI and installs it from a source checkout. ``_runs`` (for
    :func:`save_model_card`) are the runs of those folders already read, so that they are not read again.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    architecture = (config.get("architectures") or [None])[0]
    runs = _runs
    if runs is None:
        stage_dirs = resolve_stage_dirs(
            model_dir, pretraining_dir=pretraining_dir, qa_dir=qa_dir, classification_dir=classification_dir
        )
        runs = {name: load_run(d) for name, d in stage_dirs.items()}
    if base_model is None:
        base_model, base_model_note = _recorded_base_model(runs.values())
    else:
        base_model_note = f"[`{base_model}`](https://huggingface.co/{base_model})"
    pipeline_tag = ARCHITECTURE_PIPELINES.get(architecture or "")
    family = model_family(config, architecture)
    own_run = runs.get(PIPELINE_STAGES[pipeline_tag]) if pipeline_tag else None
    if family is None and own_run is not None:
        family = FAMILIES.get(own_run.args.get("model_type"))
    repo_id = repo_id or model_dir.resolve().name
    model_name = repo_id.split("/")[-1]

    found = collect_eval_results(runs)
    eval_results = []
    for spec, value in found:
        metric_args = dict(spec.how)
        count = runs[spec.stage].results.get(spec.count_key) if spec.count_key else None
        if count is not None:
            metric_args["examples_scored"] = count
        eval_results.append(
            EvalResult(
                task_type=spec.task_type,
                task_name=spec.task_name,
                dataset_type=spec.dataset_type,
                dataset_name=spec.dataset_name,
                dataset_config=spec.dataset_config,
                dataset_split=spec.dataset_split,
                metric_type=spec.metric_type,
                metric_name=spec.metric_name,
                metric_value=value,
                metric_args=metric_args,
            )
        )
    values = {spec.key: value for spec, value in found}
    stage_datasets = {"pretraining": "pubmed", "qa": "bioasq", "classification": "pubmed_qa"}
    if datasets is None:
        datasets = [stage_datasets[stage] for stage in runs]
    if tags is None:
        tags = [family.tag] if family else []
        tags += ["biomedical", "biomamba_hf"] + [stage_datasets[stage] for stage in runs]
    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=list(tags),
        model_name=model_name,
        eval_results=eval_results or None,
    )

    bioasq_rows, classification_rows, lm_rows, not_measured = [], [], [], []
    partial_test = None
    by_dataset: dict[tuple[str, str], list[ResultSpec]] = {}
    for spec in MODEL_INDEX_TABLE:
        if spec.stage in runs:
            by_dataset.setdefault((spec.dataset_name, spec.dataset_split), []).append(spec)
    for (dataset_name, split), specs in by_dataset.items():
        metric = {spec.metric_type: values.get(spec.key) for spec in specs}
        missing = [spec.metric_name for spec in specs if spec.key not in values]
        if missing:
            not_measured.append(f"{dataset_name} ({split}): {', '.join(missing)}")
        if len(missing) == len(specs):
            continue
        if specs[0].dataset_type == "bioasq":
            bioasq_rows.append(
                {
                    "name": f"{dataset_name} ({split})",
                    "strict_accuracy": _cell(metric.get("strict_accuracy"), 4),
                    "lenient_accuracy": _cell(metric.get("lenient_accuracy"), 4),
                    "mrr": _cell(metric.get("mrr"), 4),
                }
            )
        elif specs[0].dataset_type == "pubmed_qa":
            count = runs["classification"].results.get(specs[0].count_key)
            classification_rows.append(
                {
                    "name": f"{dataset_name} ({split})",
                    "accuracy": _cell(metric.get("accuracy"), 4),
                    "macro_f1": _cell(metric.get("f1"), 4),
                    "questions": "not recorded" if count is None else f"{int(count):,}",
                }
            )
            if split == "test" and count is not None and count != PUBMEDQA_TEST_QUESTIONS:
                partial_test = int(count)
        else:
            lm_rows.append(
                {
                    "name": f"{dataset_name} ({split})",
                    "cross_entropy": _cell(metric.get("cross_entropy"), 4),
                    "perplexity": _cell(metric.get("perplexity"), 3),
                }
            )

    if "pretraining" in runs and lm_rows:
        # run_clm.py --eval_before_train scores the starting checkpoint on the same validation text.
        initial = {key: runs["pretraining"].results.get(f"initial_{key}") for key in ("loss", "perplexity")}
        start = runs["pretraining"].args.get("model_name_or_path")
        if any(value is not None for value in initial.values()):
            lm_rows.append(
                {
                    "name": "PubMed abstracts (validation), "
                    + (f"starting checkpoint {_display(start)} before training" if start else "before training"),
                    "cross_entropy": _cell(initial["loss"], 4),
                    "perplexity": _cell(initial["perplexity"], 3),
                }
            )

    stages = [
        {"title": _stage_title(name, run), "summary": _STAGES[name][1], "rows": _recipe_rows(run)}
        for name, run in runs.items()
    ]
    n_params = count_parameters(model_dir)
    facts = [
        (f"{n_params / 1e6:.1f}M parameters" if n_params >= 1e6 else f"{n_params:,} parameters") if n_params else None,
        f"{config['num_hidden_layers']} layers" if "num_hidden_layers" in config else None,
        f"d_model {config['hidden_size']}" if "hidden_size" in config else None,
        f"state size {config['state_size']}" if "state_size" in config else None,
        f"{config['num_heads']} heads of {config['head_dim']}" if {"num_heads", "head_dim"} <= set(config) else None,
        f"vocabulary {config['vocab_size']:,}" if "vocab_size" in config else None,
    ]
    own_args = own_run.args if own_run is not None else {}
    labels = config.get("id2label") or {}
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or default_template_path()),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        base_model_note=base_model_note,
        license=license,
        description=_description(runs),
        architecture=architecture,
        family=family,
        model_facts=", ".join(fact for fact in facts if fact),
        qa_layout=config.get("qa_layout"),
        install_text=_install_text(install_command),
        pipeline_tag=pipeline_tag,
        causal_lm=family.causal_lm if family else "AutoModelForCausalLM",
        tied_embeddings=config.get("tie_word_embeddings") is True,
        labels=", ".join(f"`{labels[key]}`" for key in sorted(labels, key=int)) if labels else None,
        max_seq_length=own_args.get("max_seq_length") or 512,
        max_question_length=own_args.get("max_question_length") or 64,
        stage_names=list(runs),
        stages=stages,
        plot_file=plot_file,
        bioasq_rows=bioasq_rows,
        classification_rows=classification_rows,
        partial_test=partial_test,
        pubmedqa_test_questions=PUBMEDQA_TEST_QUESTIONS,
        lm_rows=lm_rows,
        not_measured=not_measured,
    )


def save_model_card(
    output_dir: str | os.PathLike,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    qa_dir: str | os.PathLike | None = None,
    classification_dir: str | os.PathLike | None = None,
    plot: bool = True,
    verify_lineage: bool = True,
    **card_kwargs,
) -> Path:
    """Write ``README.md`` (and ``training_curves.png``) for the checkpoint in ``output_dir`` from recorded files.

    This is what the training scripts call at the end (or let ``Trainer`` call, see :func:`attach_model_card`).
    Arguments are those of :func:`render_model_card`. With ``pretraining_dir``, the fine-tuning run must descend
    from it (:func:`check_descent`); ``verify_lineage=False`` is for :func:`~biomamba_hf.hub.push_to_hub`, which
    checks the original folders and renders the card from copies without weights. Returns the path of the card.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stage_dirs = resolve_stage_dirs(
        output_dir, pretraining_dir=pretraining_dir, qa_dir=qa_dir, classification_dir=classification_dir
    )
    if verify_lineage and "pretraining" in stage_dirs:
        for stage in ("qa", "classification"):
            if stage in stage_dirs and stage_dirs[stage].resolve() != stage_dirs["pretraining"].resolve():
                check_descent(stage_dirs[stage], stage_dirs["pretraining"])
    recorded = {name: load_run(d) for name, d in stage_dirs.items()}
    plot_file = None
    if plot:
        histories = {_stage_title(name, run): run.log_history for name, run in recorded.items()}
        perplexity_stages = [_stage_title("pretraining", recorded["pretraining"])] if "pretraining" in recorded else []
        written = plot_training_curves(histories, output_dir / PLOT_FILE, perplexity_stages=perplexity_stages)
        plot_file = written.name if written else None
        if written is None and (output_dir / PLOT_FILE).exists():
            (output_dir / PLOT_FILE).unlink()  # a stale plot of an earlier run must not be shown
    card = render_model_card(output_dir, plot_file=plot_file, _runs=recorded, **card_kwargs)
    card_path = output_dir / CARD_FILE
    card.save(card_path)
    return card_path


def card_kwargs_for_start(model_name_or_path: str | None) -> dict[str, Any]:
    """:func:`save_model_card` options for a fine-tuning run started from ``model_name_or_path``: a local run_clm
    output folder (a causal LM with ``all_results.json``) becomes ``pretraining_dir`` (its metrics and curve go on
    the card; its lineage is checked), a Hub id becomes ``base_model``; anything else adds nothing."""
    if not model_name_or_path:
        return {}
    folder = Path(model_name_or_path)
    if folder.is_dir():
        architecture = (read_config(folder).get("architectures") or [""])[0]
        is_clm_run = ARCHITECTURE_PIPELINES.get(architecture) == "text-generation"
        return {"pretraining_dir": model_name_or_path} if is_clm_run and (folder / RESULTS_FILE).is_file() else {}
    return {"base_model": model_name_or_path} if _HUB_ID.fullmatch(model_name_or_path) else {}


def attach_model_card(trainer: Trainer, **card_kwargs) -> Trainer:
    """Make ``trainer.create_model_card`` write the biomamba card, so ``trainer.push_to_hub()`` uploads it.

    ``Trainer.push_to_hub`` saves the model, calls ``self.create_model_card(model_name=..., **kwargs)`` (which
    writes ``README.md`` in ``args.output_dir``) and then uploads the folder; ``BiomambaTrainer.create_model_card``
    calls :func:`save_model_card` once this is set, so ``--push_to_hub`` and a local ``trainer.create_model_card()``
    both produce the card ``examples/push_to_hub.py`` produces. ``card_kwargs`` go to :func:`save_model_card`
    (e.g. ``pretraining_dir=`` for a QA run started from a local pretraining run). The repo id defaults to
    ``args.hub_model_id``. Returns the trainer.

    Raises:
        ValueError: if ``args.hub_token`` is set. ``Trainer`` pickles its arguments, token included, into
            ``training_args.bin`` and its ``push_to_hub`` uploads that file; give the token through ``HF_TOKEN`` or
            ``hf auth login`` instead, so it never reaches a file.
    """
    if trainer.args.hub_token:
        raise ValueError(
            "--hub_token would be saved in training_args.bin (Trainer pickles its arguments) and uploaded by "
            "--push_to_hub. Remove --hub_token and give the token with `hf auth login` or the HF_TOKEN variable."
        )
    if not hasattr(type(trainer), "model_card_kwargs"):
        raise TypeError(
            f"attach_model_card needs a biomamba_hf.trainer.BiomambaTrainer (its create_model_card writes the card), "
            f"got {type(trainer).__name__}"
        )
    trainer.model_card_kwargs = dict(card_kwargs)
    return trainer


def save_run_arguments(output_dir: str | os.PathLike, *arguments: Any) -> Path:
    """Record a script's argument dataclasses in ``run_args.json`` (read back for the card's training recipe).

    The dataclasses are merged by :func:`biomamba_hf.script_utils.run_arguments_dict` (``TrainingArguments`` with
    ``to_dict()`` plus ``world_size``, others with ``dataclasses.asdict``; later dataclasses win on repeated names).
    Every ``*token*`` value (``hub_token``, ``token``) is replaced by ``"<redacted>"``: tokens never reach a file.
    When the arguments have a
    ``model_name_or_path``, the field ``lineage`` records the checkpoint the run starts from
    (:func:`describe_start`: for a local folder, the sha256 of its weight files), so that a card can show that a
    fine-tuned model descends from a pretraining run (:func:`check_descent`).
    """
    merged = run_arguments_dict(*arguments)  # the one merge rule, shared with the rerun check
    # The checkpoint the run starts from, with the sha256 of a local folder's weights (see check_descent).
    if "model_name_or_path" in merged:
        merged[LINEAGE_FIELD] = describe_start(merged["model_name_or_path"], merged.get("model_revision"))
    return write_json(Path(output_dir) / RUN_ARGS_FILE, redact_secrets(merged), sort_keys=True, default=str)


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return key == "token" or key.endswith(("_token", "_secret", "password", "api_key")) or key.startswith("token_")


def redact_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (_REDACTED if _is_secret_key(str(key)) and val not in (None, "") else redact_secrets(val))
            for key, val in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(item) for item in value]
    return value
