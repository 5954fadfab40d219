"""Reusable pieces of extractive-QA fine-tuning and BioASQ evaluation (``examples/run_qa.py``).

As transformers keeps ``postprocess_qa_predictions`` in ``utils_qa.py`` next to its ``run_qa.py``, the logic of the
script lives here so that it can be tested and reused:

* :class:`QATrainingArguments`: the package's training arguments (``--overwrite_output_dir``, ``--eval_before_train``,
  ``--compile_norms``);
* :class:`QATrainer`: ``Trainer`` that trains nothing more when it resumes from a checkpoint at ``max_steps``;
* :func:`resolve_qa_layout`: the input layout of a run, refusing to retrain a checkpoint with another layout;
* :func:`load_training_examples` / :func:`check_disjoint`: SQuAD rows from golden and SQuAD files, with a leak check
  against the test questions;
* :func:`prepare_train_features` / :func:`prepare_eval_features`: ``Dataset.map`` functions building model windows
  (:func:`biomamba_hf.qa.prepare_qa_features`), and :class:`QADataCollator` to pad them;
* :func:`add_lora` / :func:`merge_lora`: LoRA through peft on the Mamba modules that actually train, with the QA head
  trained in full (``modules_to_save``);
* :func:`postprocess_predictions` (from logits) and :func:`pipeline_nbest` (through the QA pipeline): the n-best
  answers of every context; :func:`merge_question_predictions`: one ranked top-5 per question;
* :func:`score_test_set` / :func:`write_prediction_files`: BioASQ metrics per batch, batch average and micro average,
  and the prediction, n-best and submission files.

How candidates become a question's top 5 (the rule of :func:`biomamba_hf.metrics.merge_candidates`, BioBERT's): each
context (snippet or abstract) of a question gives its ``n_best_size`` best spans with probability
``p(start) * p(end)`` (softmax over the context tokens of a window, see :func:`biomamba_hf.qa.extract_answers`);
spans are tidied (:func:`biomamba_hf.metrics.clean_answer`), grouped case-insensitively per question with their
probabilities summed over contexts, and the five highest are the question's ranked answers.

This module imports transformers (the arguments subclass ``TrainingArguments``, via :mod:`biomamba_hf.training`); ``datasets`` and ``peft`` are imported
inside the functions that need them. ``import biomamba_hf`` does not import this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .modeling import QA_LAYOUTS
from .qa import extract_answers, prepare_qa_features
from .training import BiomambaTrainer, BiomambaTrainingArguments

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "QADataCollator",
    "QATrainer",
    "QATrainingArguments",
    "add_lora",
    "merge_lora",
    "pipeline_nbest",
    "postprocess_predictions",
    "predict_nbest",
    "prepare_eval_features",
    "prepare_train_features",
    "resolve_data_path",
    "resolve_qa_layout",
    "route_adapted_mixers_off_the_fused_path",
]

#: Mamba modules LoRA adapts by default: the ones whose adapters train on every code path we know.
DEFAULT_LORA_TARGETS = ("in_proj", "x_proj", "embeddings")
#: Modules LoRA cannot adapt on Mamba, and why.
_LORA_REFUSED = {
    "out_proj": "peft refuses it on Mamba models: the fused CUDA path (mamba_inner_fn) multiplies by "
    "out_proj.weight directly, so an adapter there would be silently skipped",
    "conv1d": "peft refuses it on Mamba models: the convolution runs through causal_conv1d kernels that read "
    "conv1d.weight directly",
    "dt_proj": "transformers' Mamba never calls dt_proj as a module: the fused CUDA path and the PyTorch path both "
    "multiply by dt_proj.weight directly, so an adapter there would never train",
}
#: The head of each task model, trained in full next to the adapters.
_HEADS = ("qa_outputs", "score")


@dataclass
class QATrainingArguments(BiomambaTrainingArguments):
    """The package's training arguments (``--overwrite_output_dir``, ``--eval_before_train``, ``--compile_norms``,
    ``--hub_token`` refused, CPU multi-process set-up) for the fine-tuning scripts; ``--eval_before_train`` scores the
    starting checkpoint on the test sets (metrics prefixed ``initial_``)."""


class QATrainer(BiomambaTrainer):
    """``Trainer`` for QA fine-tuning; like every trainer of the package it does not train past ``max_steps`` when it
    resumes, and compiles the norms with ``--compile_norms`` (see :class:`biomamba_hf.training.BiomambaTrainer`)."""


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------


def resolve_data_path(path: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    """``path`` as given when absolute (or when there is no ``data_dir``), else relative to ``data_dir``.

    >>> str(resolve_data_path("bioasq/4b", "data")), str(resolve_data_path("/x/4b", "data"))
    ('data/bioasq/4b', '/x/4b')
    """
    path = Path(os.path.expanduser(str(path)))
    if path.is_absolute() or data_dir is None:
        return path
    return Path(data_dir) / path


def resolve_qa_layout(requested: str | None, config, source: str = "the checkpoint") -> str:
    """The QA layout of a run: ``requested`` (or the checkpoint's own, or ``"question_first"``), recorded in ``config``.

    A checkpoint already fine-tuned for QA (``architectures`` names a ``...ForQuestionAnswering`` class) keeps the
    layout it was trained with: asking for another one is an error, since its head reads spans where that layout put
    them.
    """
    if requested is not None and requested not in QA_LAYOUTS:
        raise ValueError(f"--qa_layout {requested!r} is not a QA layout; use one of {', '.join(QA_LAYOUTS)}.")
    trained = getattr(config, "qa_layout", None)
    is_qa_checkpoint = any(
        name.endswith("ForQuestionAnswering") for name in (getattr(config, "architectures", None) or [])
    )
    if is_qa_checkpoint and trained is not None:
        if requested is not None and requested != trained:
            raise ValueError(
                f"{source} was fine-tuned for QA with qa_layout={trained!r} but --qa_layout {requested!r} was asked "
                f"for. Its head reads answer spans where {trained!r} puts them: drop --qa_layout (or pass "
                f"--qa_layout {trained}), or start from a causal-LM checkpoint to train a {requested!r} model."
            )
        layout = trained
    else:
        layout = requested or "question_first"
    config.qa_layout = layout
    return layout


# --------------------------------------------------------------------------------------------------------------------
# Features and collation
# --------------------------------------------------------------------------------------------------------------------


def prepare_train_features(
    examples: Mapping[str, list], tokenizer, *, layout: str, max_seq_length: int, doc_stride: int, max_question_length
) -> dict[str, list]:
    """``Dataset.map(batched=True)`` function: training windows with ``start_positions`` / ``end_positions``.

    The first answer of each example is the target; windows without the whole answer (and examples without an
    answer) point at the separator, the "no answer here" position.
    """
    starts = [a["answer_start"][0] if a["answer_start"] else None for a in examples["answers"]]
    texts = [a["text"][0] if a["text"] else None for a in examples["answers"]]
    features = prepare_qa_features(
        tokenizer,
        examples["question"],
        examples["context"],
        layout=layout,
        max_seq_len=max_seq_length,
        doc_stride=doc_stride,
        max_question_len=max_question_length,
        answer_starts=starts,
        answer_texts=texts,
    )
    keys = ("input_ids", "attention_mask", "start_positions", "end_positions", "token_type_ids")
    return {key: features[key] for key in keys if key in features}


def prepare_eval_features(
    examples: Mapping[str, list], tokenizer, *, layout: str, max_seq_length: int, doc_stride: int, max_question_length
) -> dict[str, list]:
    """``Dataset.map(batched=True)`` function: prediction windows with ``example_id`` and ``offset_mapping``."""
    features = prepare_qa_features(
        tokenizer,
        examples["question"],
        examples["context"],
        layout=layout,
        max_seq_len=max_seq_length,
        doc_stride=doc_stride,
        max_question_len=max_question_length,
    )
    out = {key: features[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in features}
    out["example_id"] = [examples["id"][i] for i in features["example_index"]]
    out["offset_mapping"] = features["offset_mapping"]
    return out


@dataclass
class QADataCollator:
    """Pad QA windows on the right (Mamba reads left to right: right padding leaves real positions unchanged).

    ``input_ids`` are padded with ``pad_token_id``, ``attention_mask`` / ``token_type_ids`` with 0; scalar fields
    (``start_positions``, ``end_positions``, ``labels``) are stacked; other fields (``example_id``,
    ``offset_mapping``) are dropped.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = 8

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        if self.pad_token_id is None:
            raise ValueError("QADataCollator needs a pad_token_id: call prepare_tokenizer_for_qa on the tokenizer.")
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, torch.Tensor] = {}
        for key, pad in (("input_ids", self.pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in features[0]:
                batch[key] = torch.tensor([list(f[key]) + [pad] * (length - len(f[key])) for f in features])
        for key in ("start_positions", "end_positions", "labels"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features])
        return batch


# --------------------------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------------------------


def _leaf_names(model) -> set[str]:
    from torch import nn

    kinds = (nn.Linear, nn.Embedding, nn.Conv1d)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, kinds)}


def add_lora(
    model,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
):
    """Wrap ``model`` (a Mamba task model) with LoRA adapters on ``target_modules``; its head trains in full.

    ``target_modules`` are module names inside each Mamba block (``in_proj``, ``x_proj``) or of the backbone
    (``embeddings``). Refused with a ``ValueError`` that says why: ``out_proj`` and ``conv1d`` (peft refuses them on
    Mamba), ``dt_proj`` (transformers multiplies by its weight directly, so an adapter would never train), the head
    (``qa_outputs`` / ``score``, always trained in full through ``modules_to_save``) and names the model does not
    have. Returns the ``peft`` model.

    With mamba-ssm's CUDA kernels, transformers' fused training path (``mamba_inner_fn``) reads ``x_proj.weight``
    itself, so an ``x_proj`` adapter would get no gradient there: mixers whose ``x_proj`` has an adapter are routed to
    transformers' unfused path, which calls the module (see :func:`route_adapted_mixers_off_the_fused_path`). As a
    safety net, ``examples/run_qa.py`` logs the adapters whose weights did not change after training.
    """
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in target_modules if t.strip()]
    if not targets:
        raise ValueError(f"--lora_target_modules is empty; use e.g. {','.join(DEFAULT_LORA_TARGETS)}.")
    if r < 1:
        raise ValueError(f"--lora_r must be a positive rank, got {r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}.")
    available = _leaf_names(model)
    heads = [head for head in _HEADS if hasattr(model, head)]
    for target in targets:
        if target in _LORA_REFUSED:
            raise ValueError(
                f"--lora_target_modules: {target!r} cannot take a LoRA adapter on Mamba: {_LORA_REFUSED[target]}. "
                f"Use the modules that train: {','.join(DEFAULT_LORA_TARGETS)}."
            )
        if target in heads:
            raise ValueError(
                f"--lora_target_modules: {target!r} is the task head, which is always trained in full "
                "(modules_to_save); remove it from the list."
            )
        if target not in available:
            raise ValueError(
                f"--lora_target_modules: the model has no module named {target!r}; its adaptable modules are "
                f"{', '.join(sorted(available - set(_LORA_REFUSED) - set(heads)))}."
            )
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=heads,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    adapted = 0
    for name, module in peft_model.named_modules():
        if name.endswith(".x_proj") and hasattr(module, "base_layer"):
            setattr(module.base_layer.weight, _ADAPTED_X_PROJ, True)
            adapted += 1
    if adapted:
        route_adapted_mixers_off_the_fused_path()
        logger.info(
            "%d mixers with an x_proj adapter train on transformers' unfused Mamba path (the fused mamba-ssm kernel "
            "would bypass the adapter)",
            adapted,
        )
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA on %s (r=%d, alpha=%d): %d of %d parameters train", targets, r, alpha, trainable, total)
    return peft_model


def merge_lora(model):
    """Fold the adapters into the weights and return the plain model (loads with ``AutoModelFor...`` alone)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for name, parameter in model.named_parameters():
        if name.endswith("x_proj.weight") and hasattr(parameter, _ADAPTED_X_PROJ):
            delattr(parameter, _ADAPTED_X_PROJ)  # no adapter left: the fused path serves this mixer again
    return model


#: Set on the base weight of an ``x_proj`` that carries a LoRA adapter.
_ADAPTED_X_PROJ = "_biomamba_x_proj_has_adapter"


def route_adapted_mixers_off_the_fused_path() -> None:
    """Make transformers' Mamba training step skip the fused ``mamba_inner_fn`` for mixers whose ``x_proj`` carries a
    LoRA adapter (marked by :func:`add_lora`); idempotent.

    The fused function receives ``x_proj.weight`` and multiplies by it itself, bypassing the adapter. When it returns
    ``None``, transformers' ``MambaMixer`` goes on with its unfused path (as it does without mamba-ssm), which calls
    the ``x_proj`` module and still uses the CUDA kernels for the convolution and the scan. Other mixers keep the fused
    path. The hook point is the module-level ``mamba_inner_fn`` that ``MambaMixer.forward`` looks up at call time in
    transformers 5.x.
    """
    from transformers.models.mamba import modeling_mamba

    fused = modeling_mamba.mamba_inner_fn
    if getattr(fused, "_biomamba_lora_aware", False):
        return

    def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs):
        if getattr(x_proj_weight, _ADAPTED_X_PROJ, False):
            return None
        return fused(xz, conv1d_weight, conv1d_bias, x_proj_weight, *args, **kwargs)

    mamba_inner_fn._biomamba_lora_aware = True
    mamba_inner_fn.__wrapped__ = fused
    modeling_mamba.mamba_inner_fn = mamba_inner_fn


def snapshot_trainable(model) -> dict[str, torch.Tensor]:
    """A detached copy of every trainable parameter, to find out later which ones training changed."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def unchanged_parameters(model, snapshot: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of parameters of ``snapshot`` whose values are still exactly the same in ``model``."""
    import torch

    current = dict(model.named_parameters())
    return [name for name, before in snapshot.items() if torch.equal(current[name].detach().cpu(), before.cpu())]


# --------------------------------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------------------------------


def postprocess_predictions(
    examples: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    start_logits,
    end_logits,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, list[dict[str, Any]]]:
    """The n-best answers of every example (context) from the logits of its windows.

    ``features`` are the rows of :func:`prepare_eval_features` (``example_id``, ``offset_mapping``), in the order of
    the rows of ``start_logits`` / ``end_logits`` (arrays ``(num_features, length)``, padded at the end with any
    value: only positions with an offset are read). Returns ``{example id: [{"text", "probability", "start",
    "end"}, ...]}`` best first, the ``nbest_predictions.json`` layout of BioBERT and transformers; an example
    without a candidate gets an empty list.
    """
    import numpy as np

    if len(features) != len(start_logits) or len(features) != len(end_logits):
        raise ValueError(
            f"got {len(features)} features but {len(start_logits)} start and {len(end_logits)} end logit rows; "
            "pass the logits of exactly these features, in order"
        )
    windows: dict[str, list[int]] = {}
    for index, feature in enumerate(features):
        windows.setdefault(feature["example_id"], []).append(index)
    nbest = {}
    for example in examples:
        indices = windows.get(example["id"], [])
        if not indices:
            raise ValueError(f"example {example['id']!r} has no window among the features; build them from these rows")
        answers = extract_answers(
            example["context"],
            [np.asarray(start_logits[i])[: len(features[i]["offset_mapping"])] for i in indices],
            [np.asarray(end_logits[i])[: len(features[i]["offset_mapping"])] for i in indices],
            [features[i]["offset_mapping"] for i in indices],
            top_k=n_best_size,
            max_answer_len=max_answer_length,
        )
        nbest[example["id"]] = [
            {"text": a["answer"], "probability": a["score"], "start": a["start"], "end": a["end"]} for a in answers
        ]
    return nbest


def pipeline_nbest(
    model,
    tokenizer,
    examples: Sequence[Mapping[str, Any]],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_question_length: int = 64,
    batch_size: int = 8,
    device=None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`postprocess_predictions`'s output computed through ``pipeline("question-answering")`` instead.

    Slower (no cross-process batching) but independent of the Trainer; useful to check a saved checkpoint.
    """
    from transformers import pipeline

    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=device)
    inputs = [{"question": e["question"], "context": e["context"]} for e in examples]
    outputs = qa(
        inputs,
        top_k=n_best_size,
        max_answer_len=max_answer_length,
        max_seq_len=max_seq_length,
        doc_stride=doc_stride,
        max_question_len=max_question_length,
        batch_size=batch_size,
    )
    nbest = {}
    for example, answers in zip(examples, outputs):
        answers = [answers] if isinstance(answers, dict) else answers
        nbest[example["id"]] = [
            {"text": a["answer"], "probability": a["score"], "start": a["start"], "end": a["end"]}
            for a in answers
            if a["answer"]
        ]
    return nbest


def predict_nbest(
    trainer,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    *,
    layout: str,
    max_seq_length: int,
    doc_stride: int,
    max_question_length: int,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    metric_key_prefix: str = "test",
) -> dict[str, list[dict[str, Any]]]:
    """The n-best answers of every row (SQuAD columns ``id``, ``question``, ``context``) with ``trainer.predict``.

    Windows are built with :func:`prepare_eval_features`, run longest first (less padding per batch; the Trainer
    gathers them across processes) and turned into answers by :func:`postprocess_predictions`.
    """
    import datasets
    import numpy as np

    columns = {key: [row[key] for row in rows] for key in ("id", "question", "context")}
    features = prepare_eval_features(
        columns,
        tokenizer,
        layout=layout,
        max_seq_length=max_seq_length,
        doc_stride=doc_stride,
        max_question_length=max_question_length,
    )
    order = sorted(range(len(features["input_ids"])), key=lambda i: -len(features["input_ids"][i]))
    model_keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in features]
    dataset = datasets.Dataset.from_dict({key: [features[key][i] for i in order] for key in model_keys})
    output = trainer.predict(dataset, metric_key_prefix=metric_key_prefix)
    start_sorted, end_sorted = output.predictions[:2]
    start_logits = np.empty(len(order), dtype=object)
    end_logits = np.empty(len(order), dtype=object)
    for position, index in enumerate(order):
        start_logits[index] = start_sorted[position]
        end_logits[index] = end_sorted[position]
    feature_rows = [
        {"example_id": example_id, "offset_mapping": offsets}
        for example_id, offsets in zip(features["example_id"], features["offset_mapping"])
    ]
    return postprocess_predictions(
        rows,
        feature_rows,
        start_logits,
        end_logits,
        n_best_size=n_best_size,
        max_answer_length=max_answer_length,
    )
