"""Extractive QA for a left-to-right model: input layouts, windowing, features, span post-processing, n-best
prediction (as transformers' ``utils_qa.py``). Layouts and windows: docs/modules.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .modeling import QA_LAYOUTS, check_qa_layout, get_qa_layout

PAIR_LAYOUT = "pair"
#: Model types read left to right with the package's QA layouts (``config.qa_layout``), not a tokenizer pair template.
LAYOUT_MODEL_TYPES = frozenset({"mamba", "mamba2"})


def resolve_layout(config) -> str:
    """The layout to use for a model config: its ``qa_layout`` for Mamba and Mamba-2 (and any config that records
    one), ``"pair"`` for other architectures."""
    if getattr(config, "model_type", None) in LAYOUT_MODEL_TYPES or getattr(config, "qa_layout", None) is not None:
        return get_qa_layout(config)
    return PAIR_LAYOUT


def _check_layout(layout: str) -> None:
    check_qa_layout(layout, "layout=", allowed=(*QA_LAYOUTS, PAIR_LAYOUT))


def _window_starts(num_tokens: int, budget: int, doc_stride: int) -> list[int]:
    overlap = min(doc_stride, budget // 2)
    step = max(budget - overlap, 1)
    starts = [0]
    while starts[-1] + budget < num_tokens:
        starts.append(starts[-1] + step)
    return starts


def _token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token (indices into ``offsets``) overlapping the characters ``[char_start, char_end)``."""
    first = last = None
    for i, (s, e) in enumerate(offsets):
        if e > char_start and s < char_end:
            if first is None:
                first = i
            last = i
        elif s >= char_end:
            break
    return None if first is None else (first, last)


def prepare_qa_features(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    layout: str = "question_first",
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_question_len: int = 64,
    answer_starts: Sequence[int | None] | None = None,
    answer_texts: Sequence[str | None] | None = None,
    align_to_words: bool = False,
) -> dict[str, list[Any]]:
    """Tokenize (question, context) pairs into model windows.

    Returns a dict of lists, one entry per window (a "feature"): ``input_ids``, ``attention_mask``,
    ``example_index`` (which input pair it came from), ``offset_mapping`` (character span in the context for tokens
    answers may be read from, ``None`` elsewhere; with ``align_to_words`` and a fast tokenizer, the span of the whole
    word the token belongs to, so that answers never end inside a word), ``null_index`` (the "no answer in this
    window" position) and, when answers are given, ``start_positions`` / ``end_positions``. A window that does not contain the whole answer is labelled with the position of the first
    separator (the "no answer in this window" target; the first token, ``[CLS]``, for the pair layout). Questions are
    cut to ``max_question_len`` tokens; the context is windowed here for every layout. No padding is added: pad with
    the collator.

    Raises:
        ValueError: for an empty question or context, an unknown layout, or a window too small for the question.
    """
    _check_layout(layout)
    if len(questions) != len(contexts):
        raise ValueError(
            f"Got {len(questions)} questions but {len(contexts)} contexts; pass one context per question."
        )
    if (answer_starts is None) != (answer_texts is None):
        raise ValueError("Pass both answer_starts and answer_texts, or neither.")
    for i, (question, context) in enumerate(zip(questions, contexts)):
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"Question {i} is empty: every example needs a non-empty `question` string.")
        if not isinstance(context, str) or not context.strip():
            raise ValueError(f"Context {i} is empty: every example needs a non-empty `context` string.")

    features: dict[str, list[Any]] = {
        "input_ids": [],
        "attention_mask": [],
        "example_index": [],
        "offset_mapping": [],
        "null_index": [],
    }
    if answer_starts is not None:
        features["start_positions"] = []
        features["end_positions"] = []

    if layout == PAIR_LAYOUT:
        template = _pair_template(tokenizer)
        num_special = sum(1 for kind, _, _ in template if kind is None)
        copies = 1
    else:
        if tokenizer.sep_token_id is None:
            raise ValueError(
                "The tokenizer has no separator token. Call `biomamba_hf.prepare_tokenizer_for_qa(tokenizer, model)` "
                "before building QA features (and save the tokenizer with the model)."
            )
        copies = 2 if layout == "repeat_context" else 1
        sep = (None, tokenizer.sep_token_id, None)
        template = [(0, None, None), sep, (1, None, None)] + ([sep, (1, None, None)] if copies == 2 else [])
        num_special = copies
    with_types = any(type_id is not None for _, _, type_id in template)
    if with_types:
        features["token_type_ids"] = []
    # Question and context are tokenized apart and the context is windowed here, not by the tokenizer's overflow
    # (tokenizers 0.23.1-0.23.2 return at most one overflowing window: huggingface/tokenizers#2091). Whole contexts
    # are longer than the model's maximum on purpose: verbose=False keeps the tokenizer from warning about it.
    question_ids = tokenizer(list(questions), add_special_tokens=False, verbose=False)["input_ids"]
    encoded = tokenizer(list(contexts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    for i, (q_ids, c_ids, c_offsets) in enumerate(zip(question_ids, encoded["input_ids"], encoded["offset_mapping"])):
        read_offsets = _word_offsets(encoded, i, c_offsets) if align_to_words else c_offsets
        q_ids = q_ids[:max_question_len]
        budget = (max_seq_len - len(q_ids) - num_special) // copies
        if budget < 1:
            raise ValueError(
                f"max_seq_len={max_seq_len} leaves no room for context after a question of {len(q_ids)} tokens "
                f"with layout {layout!r}; raise max_seq_len or lower max_question_len."
            )
        span = None
        if answer_starts is not None and answer_starts[i] is not None and answer_texts[i]:
            span = _token_span(c_offsets, answer_starts[i], answer_starts[i] + len(answer_texts[i]))
        # "No answer in this window" points at the first separator (Mamba layouts) or the first token ([CLS]).
        null_index = 0 if layout == PAIR_LAYOUT else len(q_ids)
        for start in _window_starts(len(c_ids), budget, doc_stride):
            chunk = c_ids[start : start + budget]
            ids, type_ids = [], []
            for segment, token_id, type_id in template:  # the last context copy is the one answers are read from
                if segment is None:
                    ids.append(token_id)
                    type_ids.append(type_id)
                    continue
                if segment == 1:
                    read_from = len(ids)
                part = q_ids if segment == 0 else chunk
                ids.extend(part)
                type_ids.extend([type_id] * len(part))
            offsets = [None] * len(ids)
            offsets[read_from : read_from + len(chunk)] = [tuple(o) for o in read_offsets[start : start + budget]]
            features["input_ids"].append(ids)
            features["attention_mask"].append([1] * len(ids))
            if with_types:
                features["token_type_ids"].append(type_ids)
            features["example_index"].append(i)
            features["offset_mapping"].append(offsets)
            features["null_index"].append(null_index)
            if answer_starts is not None:
                if span is not None and span[0] >= start and span[1] < start + len(chunk):
                    features["start_positions"].append(read_from + span[0] - start)
                    features["end_positions"].append(read_from + span[1] - start)
                else:
                    features["start_positions"].append(null_index)
                    features["end_positions"].append(null_index)
    return features


def _word_offsets(encoded, index: int, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``offsets`` with every token's span widened to its word's (from the fast tokenizer's word ids), as
    transformers' QA pipeline did with ``align_to_words=True``; tokens without a word (or a slow tokenizer) keep
    their own span."""
    try:
        word_ids = encoded.word_ids(index)
    except (ValueError, AttributeError):  # a slow tokenizer has no word ids
        return list(offsets)
    spans: dict[int, tuple[int, int]] = {}
    for word, (s, e) in zip(word_ids, offsets):
        if word is not None:
            first, last = spans.get(word, (s, e))
            spans[word] = (min(first, s), max(last, e))
    return [spans[word] if word is not None else tuple(o) for word, o in zip(word_ids, offsets)]


def _pair_template(tokenizer) -> list[tuple[int | None, int | None, int | None]]:
    """The tokenizer's own pair template (e.g. ``[CLS] q [SEP] c [SEP]``), read from a probe encoding.

    A list of ``(segment, token_id, token_type_id)``: ``segment`` 0 (question) or 1 (context) stands for that
    sequence's tokens, ``None`` for one special token ``token_id``.
    """
    probe = tokenizer("question", "context")
    token_types = probe.get("token_type_ids")
    template = []
    for k, segment in enumerate(probe.sequence_ids(0)):
        type_id = token_types[k] if token_types is not None else None
        if segment is None:
            template.append((None, probe["input_ids"][k], type_id))
        elif not template or template[-1][0] != segment:
            template.append((segment, None, type_id))
    if [segment for segment, _, _ in template if segment is not None] != [0, 1]:
        raise ValueError(
            f"{type(tokenizer).__name__} does not encode a (question, context) pair as two consecutive sequences; "
            "use a tokenizer with a pair template (e.g. BERT's [CLS] A [SEP] B [SEP])."
        )
    return template


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def extract_answers(
    context: str,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offset_mappings: Sequence[Sequence[tuple[int, int] | None]],
    *,
    top_k: int = 1,
    max_answer_len: int = 15,
    null_indices: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Rank answer spans of one context from the logits of all its windows.

    For each window, start and end logits are normalised with a softmax over the tokens answers may be read from;
    a span's score is ``p(start) * p(end)`` (``end - start + 1 <= max_answer_len`` tokens, every candidate of every
    window considered exactly). Spans are mapped to characters of ``context`` with the offset mappings, stripped of
    surrounding whitespace, de-duplicated across overlapping windows (best score kept) and returned best first as
    dicts ``{"score", "start", "end", "answer"}`` with ``context[start:end] == answer``.

    With ``null_indices`` (each window's "no answer" position, ``null_index`` of :func:`prepare_qa_features`: the
    separator after the question for the Mamba layouts, ``[CLS]`` for the pair layout, where training puts windows
    without an answer) the softmax of each window also covers that position, and the null answer
    ``{"answer": "", "start": 0, "end": 0}`` competes with the spans, scored ``p(start = null) * p(end = null)`` of the
    window least sure there is no answer (as transformers' ``handle_impossible_answer``). Its score means something
    only for a model trained with no-answer examples (run_qa's ``--keep_unanswerable``, or SQuAD 2.0-style data).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}.")
    best: dict[tuple[int, int], float] = {}
    null_score = math.inf
    windows = zip(start_logits, end_logits, offset_mappings, null_indices or [None] * len(offset_mappings))
    for starts, ends, offsets, null_index in windows:
        readable = np.array([k for k, o in enumerate(offsets) if o is not None], dtype=np.int64)
        if readable.size == 0:
            continue
        starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
        if null_index is None:
            log_start, log_end = _log_softmax(starts[readable]), _log_softmax(ends[readable])
        else:  # normalise over the readable tokens and the null position; the null score is its last entry
            with_null = np.append(readable, null_index)
            log_start, log_end = _log_softmax(starts[with_null]), _log_softmax(ends[with_null])
            null_score = min(null_score, float(log_start[-1] + log_end[-1]))
            log_start, log_end = log_start[:-1], log_end[:-1]
        n = readable.size
        width = min(max_answer_len, n)
        # scores[i, j] = log p(start = i) + log p(end = i + j), for spans inside the window
        end_idx = np.arange(n)[:, None] + np.arange(width)[None, :]
        valid = end_idx < n
        scores = log_start[:, None] + np.where(valid, log_end[np.minimum(end_idx, n - 1)], -np.inf)
        keep = min(scores.size, max(top_k * 4, 20))
        flat = np.argpartition(-scores, keep - 1, axis=None)[:keep]
        for index in flat:
            i, j = divmod(int(index), width)
            if not valid[i, j]:
                continue
            char_start = offsets[readable[i]][0]
            char_end = offsets[readable[i + j]][1]
            while char_start < char_end and context[char_start].isspace():
                char_start += 1
            while char_end > char_start and context[char_end - 1].isspace():
                char_end -= 1
            if char_end <= char_start:
                continue
            score = float(scores[i, j])
            key = (char_start, char_end)
            if score > best.get(key, -math.inf):
                best[key] = score
    if null_indices is not None and null_score < math.inf:
        best[(0, 0)] = null_score  # the null answer: context[0:0] == ""
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return [{"score": math.exp(s), "start": a, "end": b, "answer": context[a:b]} for (a, b), s in ranked]


# --------------------------------------------------------------------------------------------------------------------
# Inference levers: length buckets and a compiled forward
# --------------------------------------------------------------------------------------------------------------------

#: Bucket width (tokens) used when a compiled forward is asked for and no ``pad_to_multiple_of`` is given.
DEFAULT_BUCKET_MULTIPLE = 64


def bucket_length(length: int, multiple: int | None, max_length: int | None = None) -> int:
    """The length a window of ``length`` tokens is padded to: the next multiple of ``multiple``, but at most
    ``max_length`` (the window size, itself a bucket) and never less than ``length``. ``multiple`` None or 1: unchanged.

    >>> [bucket_length(n, 64, 384) for n in (1, 64, 65, 300, 384)]
    [64, 64, 128, 320, 384]
    >>> bucket_length(390, 64, 400)
    400
    """
    if multiple is None or multiple <= 1:
        return length
    bucket = -(-length // multiple) * multiple
    if max_length is not None:
        bucket = min(bucket, max(max_length, length))
    return bucket


def check_pad_to_multiple_of(value, name: str = "pad_to_multiple_of") -> int | None:
    """``value`` if it is None or a positive integer, else a ValueError naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer (e.g. 64) or None, got {value!r}.")
    return value


def pad_to_bucket(batch: dict, multiple: int | None, max_length: int | None, pad_values: Mapping[str, int]) -> dict:
    """Right-pad the ``(batch, length)`` tensors of ``batch`` named in ``pad_values`` to :func:`bucket_length`.

    Right padding leaves every real position of a left-to-right model (Mamba, Mamba-2) unchanged, and a BERT-style
    model masks the padded keys (``attention_mask`` is padded with 0). Spans are read only where a window's offset
    mapping has an entry, never from the padding.
    """
    import torch

    keys = [key for key in pad_values if key in batch]
    if not keys:
        return batch
    length = batch[keys[0]].shape[1]
    extra = bucket_length(length, multiple, max_length) - length
    if extra <= 0:
        return batch
    padded = dict(batch)
    for key in keys:
        tensor = batch[key]
        padded[key] = torch.nn.functional.pad(tensor, (0, extra), value=pad_values[key])
    return padded


def pad_values_for(tokenizer) -> dict[str, int]:
    """The padding value of each model input: the tokenizer's pad token, 0 for the mask, its pad token type."""
    return {
        "input_ids": tokenizer.pad_token_id,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0) or 0,
    }


def inference_compile_config(compile):
    """transformers' ``CompileConfig`` for a ``compile=`` argument, or None.

    ``None``/``False``: no compilation. ``True``: ``CompileConfig()`` (inductor, ``mode="reduce-overhead"``: CUDA
    graphs on a GPU). A ``CompileConfig`` or a dict of its fields (``backend``, ``mode``, ``fullgraph``, ``dynamic``,
    ``options``) is used as given: e.g. ``{"backend": "eager"}`` on a CPU to check that a model compiles.

    Where the compiled forward breaks the graph (read from transformers 5.17/5.24 ``modeling_mamba*.py``, mamba-ssm
    2.3.2.post1 and causal-conv1d 1.7.0; counted with ``torch._dynamo`` on a CPU where marked):

    - transformers 5.x has no ``is_fast_path_available`` check left: ``use_kernel_func_from_hub_with_fallback``
      picks each function at import and its wrapper only asks ``is_torchdynamo_compiling()`` (traced). The eval
      forward calls no ``.item()``; ``is_mambapy_available`` and ``is_torch_greater_or_equal`` are ``lru_cache``
      functions that dynamo traces through with a warning. Mamba-1 on the portable scan: 0 breaks (CPU, counted).
    - Mamba-1 with the kernels: ``mamba_inner_fn`` runs only in training; ``causal_conv1d_fn`` is a
      ``torch.library`` custom op in causal-conv1d 1.7 (traced); ``selective_scan_fn`` calls the C++ extension
      ``selective_scan_cuda.fwd`` inside an ``autograd.Function``: one graph break per layer, so
      ``mode="reduce-overhead"`` captures the segments between scans as CUDA graphs and launches each scan eagerly.
      The package's scan dispatcher also asks ``importlib.util.find_spec`` on CUDA tensors (a likely further break).
    - Mamba-2 with the kernels: ``mamba_chunk_scan_combined`` is an ``autograd.Function`` launching autotuned Triton
      kernels; whether dynamo traces them is not yet measured. Mamba-2 on the portable SSD: 0 breaks (CPU, counted;
      its once-only code-path log line broke the graph at every layer until it stayed out of traced code).
    - BERT-base: 0 breaks (CPU, counted). ``tests/test_qa_features.py`` counts the portable and BERT cases.
    - For a graph around the kernels themselves, Mamba-1 included, see ``cuda_graphs=True``
      (:mod:`biomamba_hf.cuda_graphs`).

    ``benchmarks/bench_qa_pipeline.py`` prints the breaks counted for each model it compiles.
    """
    from transformers import CompileConfig

    if compile is None or compile is False:
        return None
    if compile is True:
        return CompileConfig()
    if isinstance(compile, CompileConfig):
        return compile
    if isinstance(compile, Mapping):
        try:
            return CompileConfig(**compile)
        except TypeError as err:
            raise ValueError(
                f"compile={dict(compile)!r}: {err}; use the fields of transformers.CompileConfig "
                "(backend, mode, fullgraph, dynamic, options)."
            ) from err
    raise ValueError(
        f"compile must be True/False, a transformers.CompileConfig or a dict of its fields, got {compile!r}."
    )


@contextmanager
def _forward_calls(model, call):
    """Inside the block, ``model(...)`` runs ``call`` instead of the module's own ``_call_impl``: the attribute
    ``nn.Module.compile()`` sets (``_compiled_call_impl``), undone at the end of the block (``nn.Module`` has no public
    way to drop it). Callers that hold the module (the Trainer, DDP) go through ``call`` too.
    ``tests/test_qa_features.py`` fails if torch stops honouring ``_compiled_call_impl``."""
    previous = model._compiled_call_impl
    model._compiled_call_impl = call
    try:
        yield model
    finally:
        model._compiled_call_impl = previous


@contextmanager
def compiled_module_calls(model, compile_config):
    """Inside the block, ``model(...)`` runs through ``torch.compile`` with ``compile_config`` (a ``CompileConfig``).

    What ``nn.Module.compile()`` does, for the block only (:func:`_forward_calls`). The compiled function is kept on
    the model and reused by later blocks with the same configuration.
    """
    import torch

    if compile_config is None:
        yield model
        return
    # The cache lives in the module's __dict__, which a deep copy copies: a key names the module it compiled, so a
    # copy compiles its own forward instead of running the original's (and drops what it inherited).
    key = (id(model), repr(sorted(compile_config.to_dict().items(), key=lambda item: item[0])))
    cache = model.__dict__.setdefault("_biomamba_compiled_calls", {})
    if key not in cache:
        for stale in [k for k in cache if k[0] != id(model)]:
            del cache[stale]
        cache[key] = torch.compile(model._call_impl, **compile_config.to_dict())
    with _forward_calls(model, cache[key]):
        yield model


@contextmanager
def inference_levers(model, compile_config=None, cuda_graphs: bool = False):
    """Inside the block, ``model(...)`` goes through the graph lever asked for, at most one: a compiled forward
    (:func:`compiled_module_calls`) or replayed CUDA graphs (:class:`biomamba_hf.cuda_graphs.CUDAGraphCalls`, kept on
    the model); neither: unchanged. What the pipeline, :func:`predict_nbest` and the benchmarks use."""
    from .cuda_graphs import check_one_graph_lever, cuda_graph_calls

    check_one_graph_lever(compile_config, cuda_graphs)
    if cuda_graphs:
        with _forward_calls(model, cuda_graph_calls(model)):
            yield model
    else:
        with compiled_module_calls(model, compile_config):
            yield model


def clone_logits(logits, labels=None):
    """``Trainer(preprocess_logits_for_metrics=...)`` hook: copies of the logits. A forward replayed from a CUDA
    graph (``mode="reduce-overhead"``) writes its outputs into the same memory at the next call; the Trainer keeps
    each batch's logits until the end of the loop."""
    from .cuda_graphs import clone_tensors

    return clone_tensors(logits)


# --------------------------------------------------------------------------------------------------------------------
# Fine-tuning and evaluation: layout of a run, Dataset.map features, n-best predictions
# --------------------------------------------------------------------------------------------------------------------


def resolve_qa_layout(requested: str | None, config, source: str = "the checkpoint") -> str:
    """The QA layout of a run, recorded in ``config``: ``requested``, else the checkpoint's own, else
    ``"question_first"``.

    A checkpoint already fine-tuned for QA (``architectures`` names a ``...ForQuestionAnswering`` class) keeps the
    layout it was trained with: asking for another one is an error, since its head reads spans where that layout put
    them.
    """
    if requested is not None:
        check_qa_layout(requested, "--qa_layout")
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
    pad_to_multiple_of: int | None = None,
    compile=None,
    cuda_graphs: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`postprocess_predictions`'s output computed through ``pipeline("question-answering")`` instead.

    Slower (no cross-process batching) but independent of the Trainer; useful to check a saved checkpoint. Spans
    are read at token boundaries (``align_to_words=False``), as the Trainer path reads them. ``pad_to_multiple_of``,
    ``compile`` and ``cuda_graphs`` are the pipeline's arguments of those names (length buckets, a compiled
    forward, replayed CUDA graphs).
    """
    from transformers import pipeline

    qa = pipeline(
        "question-answering",
        model=model,
        tokenizer=tokenizer,
        device=device,
        pad_to_multiple_of=pad_to_multiple_of,
        compile=compile,
        cuda_graphs=cuda_graphs,
    )
    inputs = [{"question": e["question"], "context": e["context"]} for e in examples]
    outputs = qa(
        inputs,
        top_k=n_best_size,
        max_answer_len=max_answer_length,
        max_seq_len=max_seq_length,
        doc_stride=doc_stride,
        max_question_len=max_question_length,
        align_to_words=False,
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
    pad_to_multiple_of: int | None = None,
    compile=None,
    cuda_graphs: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """The n-best answers of every row (SQuAD columns ``id``, ``question``, ``context``) with ``trainer.predict``.

    Windows are built with :func:`prepare_eval_features`, run longest first (less padding per batch; the Trainer
    gathers them across processes) and turned into answers by :func:`postprocess_predictions`.

    Inference levers (the same for every model; answers do not change):
        pad_to_multiple_of: pad each window on the right to a length bucket (:func:`bucket_length`: the next
            multiple, at most ``max_seq_length``) so that batches come in a few shapes. Defaults to
            :data:`DEFAULT_BUCKET_MULTIPLE` when ``compile`` is on, else off.
        compile: compile ``trainer.model``'s forward for this prediction only (:func:`inference_compile_config`;
            ``True``: inductor with ``mode="reduce-overhead"``, CUDA graphs on a GPU); the logits of each batch are
            copied out of the graph's memory (:func:`clone_logits`).
        cuda_graphs: replay one CUDA graph per batch shape of ``trainer.model``'s forward for this prediction only
            (:class:`biomamba_hf.cuda_graphs.CUDAGraphCalls`; CUDA only, not with ``compile``). Buckets of
            :data:`DEFAULT_BUCKET_MULTIPLE` by default.
    """
    import datasets
    import numpy as np

    from .cuda_graphs import check_cuda_graphs, check_one_graph_lever

    compile_config = inference_compile_config(compile)
    cuda_graphs = check_cuda_graphs(cuda_graphs, trainer.args.device)
    check_one_graph_lever(compile_config, cuda_graphs)  # before the features are built
    multiple = check_pad_to_multiple_of(pad_to_multiple_of)
    if multiple is None and (compile_config is not None or cuda_graphs):
        multiple = DEFAULT_BUCKET_MULTIPLE

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
    columns = {key: [features[key][i] for i in order] for key in model_keys}
    if multiple is not None:  # each window to its bucket: the collator then pads a batch to its longest bucket
        pad_values = pad_values_for(tokenizer)
        for key, rows_of_key in columns.items():
            columns[key] = [
                row + [pad_values[key]] * (bucket_length(len(row), multiple, max_seq_length) - len(row))
                for row in rows_of_key
            ]
    dataset = datasets.Dataset.from_dict(columns)
    hook = trainer.preprocess_logits_for_metrics
    if compile_config is not None:
        trainer.preprocess_logits_for_metrics = (
            clone_logits if hook is None else (lambda logits, labels: hook(clone_logits(logits), labels))
        )
    try:
        with inference_levers(trainer.model, compile_config, cuda_graphs):
            output = trainer.predict(dataset, metric_key_prefix=metric_key_prefix)
    finally:
        trainer.preprocess_logits_for_metrics = hook
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
