"""The model card: rendered from the files the training scripts recorded, with model-index results and a plot.

The metrics the card knows are the rows of :data:`MODEL_INDEX_TABLE`; the template is ``templates/model_card.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Trainer

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "state-spaces/mamba-130m-hf"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_INSTALL_COMMAND = "pip install biomamba_hf"
#: File names the card reads in a run folder.
RESULTS_FILE = "all_results.json"
TRAINER_STATE_FILE = "trainer_state.json"
RUN_ARGS_FILE = "run_args.json"
#: File names the card writes.
CARD_FILE = "README.md"
PLOT_FILE = "training_curves.png"

#: Trainer's metric prefixes accepted in front of a table key (``test_bioasq_4b_mrr`` reads as ``bioasq_4b_mrr``).
_TRAINER_PREFIXES = ("eval_", "test_", "predict_")
_REDACTED = "<redacted>"


@dataclass(frozen=True)
class ResultSpec:
    """What one key of ``all_results.json`` means, as a model-index entry of the card."""

    key: str
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


_BIOASQ_HOW = {
    "candidates": "up to 5 ranked answers per question, merged over all its snippets",
    "matching": "case-insensitive exact match against the golden synonyms",
    "averaging": "computed per test batch, averaged over the 5 batches",
    "missing_prediction": "scores 0",
}


def _bioasq_rows(test_set: str) -> tuple[ResultSpec, ...]:
    """The three model-index rows of one BioASQ factoid test set (``"4b"``, ``"5b"``, ...)."""
    common = dict(
        task_type="question-answering",
        task_name="Extractive question answering (BioASQ factoid)",
        dataset_type="bioasq",
        dataset_name=f"BioASQ {test_set} factoid",
        dataset_config=test_set,
        dataset_split="test",
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


def _pubmed_rows(split: str, loss_key: str, perplexity_key: str) -> tuple[ResultSpec, ...]:
    common = dict(
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
    *_pubmed_rows("validation", "eval_loss", "perplexity"),
    *_pubmed_rows("test", "test_loss", "test_perplexity"),
)

#: Rows of the training-recipe table: (argument in run_args.json, label on the card).
RECIPE_FIELDS: tuple[tuple[str, str], ...] = (
    ("model_name_or_path", "initialised from"),
    ("dataset_name", "dataset"),
    ("train_file", "training data"),
    ("validation_file", "validation data"),
    ("block_size", "sequence length (tokens)"),
    ("max_seq_length", "sequence length (tokens)"),
    ("doc_stride", "document stride (tokens)"),
    ("qa_layout", "QA input layout"),
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

_STAGES = {
    "pretraining": (
        "Continued pretraining",
        "Next-token prediction on biomedical text with 🤗 `Trainer` (`examples/run_clm.py`).",
    ),
    "qa": (
        "Fine-tuning for extractive QA",
        "Start/end span prediction on BioASQ factoid questions with 🤗 `Trainer` (`examples/run_qa.py`).",
    ),
}
ARCHITECTURE_PIPELINES = {
    "MambaForQuestionAnswering": "question-answering",
    "MambaForCausalLM": "text-generation",
}


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
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}). It is written by the training script: re-run it, or delete the "
            "file to leave its content out of the model card."
        ) from err
    if not isinstance(value, expected):
        raise ValueError(f"{path} should hold a JSON {expected.__name__}, got {type(value).__name__}.")
    return value


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


def collect_eval_results(runs: Iterable[RunRecord]) -> list[tuple[ResultSpec, float]]:
    """Every :data:`MODEL_INDEX_TABLE` row with a recorded value, in table order (first run that has it wins)."""
    runs = list(runs)
    found = []
    for spec in MODEL_INDEX_TABLE:
        for run in runs:
            value = lookup_metric(run.results, spec.key, run.path / RESULTS_FILE)
            if value is not None:
                found.append((spec, value))
                break
    return found


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


def _recipe_rows(run: RunRecord) -> list[tuple[str, str]]:
    args = dict(run.args)
    state = run.trainer_state
    for key in ("max_steps", "num_train_epochs"):  # trainer_state.json records these even without run_args.json
        if key not in args and key in state:
            args[key] = state[key]
    rows, seen_labels = [], set()
    for key, label in RECIPE_FIELDS:
        value = args.get(key)
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
        rows.append(("tokens per optimizer step", f"{math.prod(batch) * sequence_length:,}"))
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
        if isinstance(start, str) and _HUB_ID.fullmatch(start) and not Path(start).exists():
            return start, f"[`{start}`](https://huggingface.co/{start})"
        return None, f"a local checkpoint (`{_display(start)}`)"
    return None, "not recorded (no run_args.json)"


def _cell(value: float | None, digits: int) -> str:
    return "not measured" if value is None else f"{value:.{digits}f}"


def _description(stage_names: Sequence[str]) -> str:
    parts = {
        "pretraining": "continued next-token pretraining on PubMed abstracts",
        "qa": "fine-tuning for extractive question answering on BioASQ factoid questions",
    }
    if not stage_names:
        return "no training run was recorded with this checkpoint."
    return ", then ".join(parts[name] for name in stage_names) + "."


def render_model_card(
    model_dir: str | os.PathLike,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    qa_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    install_command: str = DEFAULT_INSTALL_COMMAND,
    plot_file: str | None = None,
    template_path: str | os.PathLike | None = None,
):
    """Render the card of the checkpoint in ``model_dir`` as a ``huggingface_hub.ModelCard`` (nothing is written).

    ``pretraining_dir`` / ``qa_dir`` are the output folders of the run_clm / run_qa runs that produced the
    checkpoint (either may be ``model_dir`` itself). With neither, ``model_dir`` is taken as the run of the stage its
    ``config.json`` architecture belongs to. ``repo_id`` names the model in usage snippets (default: the folder
    name). ``plot_file`` is a file name beside the card to show as the training-curve figure. ``base_model``
    defaults to the Hub id the earliest recorded run started from (``model_name_or_path`` in ``run_args.json``); a
    run started from scratch or from a local folder, or with no recorded arguments, gets none and the card says
    which (pass ``base_model`` to name it).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    architecture = (config.get("architectures") or ["MambaForCausalLM"])[0]
    if pretraining_dir is None and qa_dir is None:
        if ARCHITECTURE_PIPELINES.get(architecture) == "question-answering":
            qa_dir = model_dir
        else:
            pretraining_dir = model_dir
    stage_dirs = {name: Path(d) for name, d in (("pretraining", pretraining_dir), ("qa", qa_dir)) if d is not None}
    runs = {name: load_run(d) for name, d in stage_dirs.items()}
    if base_model is None:
        base_model, base_model_note = _recorded_base_model(runs.values())
    else:
        base_model_note = f"[`{base_model}`](https://huggingface.co/{base_model})"
    pipeline_tag = ARCHITECTURE_PIPELINES.get(architecture, "question-answering" if "qa" in runs else None)
    repo_id = repo_id or model_dir.resolve().name
    model_name = repo_id.split("/")[-1]

    found = collect_eval_results(runs.values())
    eval_results = [
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
            metric_args=dict(spec.how),
        )
        for spec, value in found
    ]
    values = {spec.key: value for spec, value in found}
    if datasets is None:
        datasets = [name for stage, name in (("pretraining", "pubmed"), ("qa", "bioasq")) if stage in runs]
    if tags is None:
        tags = ["mamba", "biomedical", "biomamba_hf"] + [
            tag for stage, tag in (("pretraining", "pubmed"), ("qa", "bioasq")) if stage in runs
        ]
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

    bioasq_rows, lm_rows, not_measured = [], [], []
    by_dataset: dict[tuple[str, str], list[ResultSpec]] = {}
    for spec in MODEL_INDEX_TABLE:
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
        {"title": _STAGES[name][0], "summary": _STAGES[name][1], "rows": _recipe_rows(run)}
        for name, run in runs.items()
    ]
    n_params = count_parameters(model_dir)
    facts = [
        (f"{n_params / 1e6:.1f}M parameters" if n_params >= 1e6 else f"{n_params:,} parameters") if n_params else None,
        f"{config['num_hidden_layers']} layers" if "num_hidden_layers" in config else None,
        f"d_model {config['hidden_size']}" if "hidden_size" in config else None,
        f"state size {config['state_size']}" if "state_size" in config else None,
        f"vocabulary {config['vocab_size']:,}" if "vocab_size" in config else None,
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or default_template_path()),
        model_name=model_name,
        repo_id=repo_id,
        base_model=base_model,
        base_model_note=base_model_note,
        license=license,
        description=_description(list(runs)),
        architecture=architecture,
        model_facts=", ".join(fact for fact in facts if fact),
        qa_layout=config.get("qa_layout"),
        install_command=install_command,
        pipeline_tag=pipeline_tag,
        stages=stages,
        plot_file=plot_file,
        bioasq_rows=bioasq_rows,
        lm_rows=lm_rows,
        not_measured=not_measured,
    )


def save_model_card(
    output_dir: str | os.PathLike,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    qa_dir: str | os.PathLike | None = None,
    plot: bool = True,
    **card_kwargs,
) -> Path:
    """Write ``README.md`` (and ``training_curves.png``) for the checkpoint in ``output_dir`` from recorded files.

    This is what the training scripts call at the end (or let ``Trainer`` call, see :func:`attach_model_card`).
    Arguments are those of :func:`render_model_card`. Returns the path of the card.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if pretraining_dir is None and qa_dir is None:
        architecture = (read_config(output_dir).get("architectures") or [""])[0]
        if ARCHITECTURE_PIPELINES.get(architecture) == "question-answering":
            qa_dir = output_dir
        else:
            pretraining_dir = output_dir
    plot_file = None
    if plot:
        histories = {}
        for name, run_dir in (("pretraining", pretraining_dir), ("qa", qa_dir)):
            if run_dir is not None:
                histories[_STAGES[name][0]] = load_run(run_dir).log_history
        written = plot_training_curves(
            histories, output_dir / PLOT_FILE, perplexity_stages=[_STAGES["pretraining"][0]]
        )
        plot_file = written.name if written else None
        if written is None and (output_dir / PLOT_FILE).exists():
            (output_dir / PLOT_FILE).unlink()  # a stale plot of an earlier run must not be shown
    card = render_model_card(
        output_dir, pretraining_dir=pretraining_dir, qa_dir=qa_dir, plot_file=plot_file, **card_kwargs
    )
    card_path = output_dir / CARD_FILE
    card.save(card_path)
    return card_path


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

    ``TrainingArguments`` are stored with ``to_dict()`` plus ``world_size``; other dataclasses with
    ``dataclasses.asdict``. Later dataclasses win on repeated names. Every ``*token*`` value (``hub_token``,
    ``token``) is replaced by ``"<redacted>"``: tokens never reach a file.
    """
    merged: dict[str, Any] = {}
    for argument in arguments:
        if hasattr(argument, "to_dict"):
            values = argument.to_dict()
            if hasattr(argument, "world_size"):
                values["world_size"] = argument.world_size
        elif dataclasses.is_dataclass(argument):
            values = dataclasses.asdict(argument)
        else:
            raise ValueError(f"save_run_arguments takes argument dataclasses, got {type(argument).__name__}.")
        merged.update(values)
    path = Path(output_dir) / RUN_ARGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(redact_secrets(merged), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


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
