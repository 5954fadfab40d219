"""Extractive QA preprocessing and span post-processing, shared by training (``examples/run_qa.py``) and the pipeline.

Input layouts
-------------
A left-to-right model reading "question, then context" gives each context token a state that has seen the question
but not the rest of the context. The layout a model was trained with is stored in ``config.qa_layout`` and read back
by every consumer, so a checkpoint always answers with the layout it was trained with:

``"question_first"``
    ``question <|sep|> context`` — answer spans are read from the context.
``"repeat_context"``
    ``question <|sep|> context <|sep|> context`` — the context is read twice and answer spans are read from the second
    copy, whose states have seen the question *and* the whole context (JRT-prompt, arXiv 2407.05483; echo
    embeddings, arXiv 2402.15449). Costs twice the context tokens per window.

Models that are not Mamba (BERT-style QA models) have no ``qa_layout``; for them the tokenizer's own pair template
(``[CLS] question [SEP] context [SEP]``) is used, so the pipeline can serve them too (layout ``"pair"``).

Windows
-------
Contexts longer than a window are split into overlapping windows of context tokens; ``doc_stride`` is the number of
context tokens two consecutive windows share (as in transformers' ``run_qa.py``), capped at half a window so that
windows always advance. Candidates from all windows are ranked together (:func:`extract_answers`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .modeling import QA_LAYOUTS, get_qa_layout

PAIR_LAYOUT = "pair"


def resolve_layout(config) -> str:
    """The layout to use for a model config: its ``qa_layout`` for Mamba, ``"pair"`` for other architectures."""
    if getattr(config, "model_type", None) == "mamba" or getattr(config, "qa_layout", None) is not None:
        return get_qa_layout(config)
    return PAIR_LAYOUT


def _check_layout(layout: str) -> None:
    if layout not in (*QA_LAYOUTS, PAIR_LAYOUT):
        raise ValueError(f"Unknown QA layout {layout!r}; use one of {', '.join((*QA_LAYOUTS, PAIR_LAYOUT))}.")


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
) -> dict[str, list[Any]]:
    """Tokenize (question, context) pairs into model windows.

    Returns a dict of lists, one entry per window (a "feature"): ``input_ids``, ``attention_mask``,
    ``example_index`` (which input pair it came from), ``offset_mapping`` (character span in the context for tokens
    answers may be read from, ``None`` elsewhere) and, when answers are given, ``start_positions`` /
    ``end_positions``. A window that does not contain the whole answer is labelled with the position of the first
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

    features: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "example_index": [], "offset_mapping": []}
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
    # (tokenizers 0.23.1-0.23.2 return at most one overflowing window: huggingface/tokenizers#2091).
    question_ids = tokenizer(list(questions), add_special_tokens=False)["input_ids"]
    encoded = tokenizer(list(contexts), add_special_tokens=False, return_offsets_mapping=True)
    for i, (q_ids, c_ids, c_offsets) in enumerate(zip(question_ids, encoded["input_ids"], encoded["offset_mapping"])):
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
            offsets[read_from : read_from + len(chunk)] = [tuple(o) for o in c_offsets[start : start + budget]]
            features["input_ids"].append(ids)
            features["attention_mask"].append([1] * len(ids))
            if with_types:
                features["token_type_ids"].append(type_ids)
            features["example_index"].append(i)
            features["offset_mapping"].append(offsets)
            if answer_starts is not None:
                if span is not None and span[0] >= start and span[1] < start + len(chunk):
                    features["start_positions"].append(read_from + span[0] - start)
                    features["end_positions"].append(read_from + span[1] - start)
                else:
                    features["start_positions"].append(null_index)
                    features["end_positions"].append(null_index)
    return features


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
) -> list[dict[str, Any]]:
    """Rank answer spans of one context from the logits of all its windows.

    For each window, start and end logits are normalised with a softmax over the tokens answers may be read from;
    a span's score is ``p(start) * p(end)`` (``end - start + 1 <= max_answer_len`` tokens, every candidate of every
    window considered exactly). Spans are mapped to characters of ``context`` with the offset mappings, stripped of
    surrounding whitespace, de-duplicated across overlapping windows (best score kept) and returned best first as
    dicts ``{"score", "start", "end", "answer"}`` with ``context[start:end] == answer``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}.")
    best: dict[tuple[int, int], float] = {}
    for starts, ends, offsets in zip(start_logits, end_logits, offset_mappings):
        readable = np.array([k for k, o in enumerate(offsets) if o is not None], dtype=np.int64)
        if readable.size == 0:
            continue
        log_start = _log_softmax(np.asarray(starts, dtype=np.float64)[readable])
        log_end = _log_softmax(np.asarray(ends, dtype=np.float64)[readable])
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
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return [{"score": math.exp(s), "start": a, "end": b, "answer": context[a:b]} for (a, b), s in ranked]
