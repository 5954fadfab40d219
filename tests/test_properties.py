"""Property-based tests (hypothesis): the pipeline's span post-processing and the BioASQ metric properties that
tests/test_metrics.py does not already cover (it covers bounds, question-order invariance and monotonicity in rank).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomamba_hf.bioasq.formats import MAX_CANDIDATES, to_submission
from biomamba_hf.metrics.bioasq import bioasq_factoid, bioasq_factoid_batches, merge_candidates, normalize_answer
from biomamba_hf.qa import extract_answers

# --------------------------------------------------------------------------------------------------------------------
# extract_answers: spans from the logits of overlapping windows
# --------------------------------------------------------------------------------------------------------------------

WORD = st.sampled_from(["CFTR", "gene", "  ", "cystic", "fibrosis", "(p<0.05)", "é", "\n", "IL-6", "a"])


@st.composite
def windows(draw):
    """A context, its token offsets, and overlapping windows of them with random logits.

    Each window is laid out as a model window is: a few question tokens (offset ``None``, never readable), then a run
    of consecutive context tokens. Windows overlap by ``stride`` tokens, as prepare_qa_features makes them.
    """
    words = draw(st.lists(WORD, min_size=1, max_size=25))
    context = " ".join(words)
    offsets = [(m.start(), m.end()) for m in re.finditer(r"\S+|\s+", context)]  # whitespace tokens too
    width = draw(st.integers(1, max(1, len(offsets))))
    stride = draw(st.integers(0, width - 1))
    starts = list(range(0, max(len(offsets) - stride, 1), max(width - stride, 1)))
    question = draw(st.integers(0, 3))
    logits = st.floats(-20, 20, allow_nan=False, width=32)
    start_logits, end_logits, mappings = [], [], []
    for s in starts:
        mapping = [None] * question + offsets[s : s + width]
        start_logits.append(np.array(draw(st.lists(logits, min_size=len(mapping), max_size=len(mapping)))))
        end_logits.append(np.array(draw(st.lists(logits, min_size=len(mapping), max_size=len(mapping)))))
        mappings.append(mapping)
    top_k = draw(st.integers(1, 8))
    max_answer_len = draw(st.integers(1, 6))
    return context, start_logits, end_logits, mappings, top_k, max_answer_len


@settings(max_examples=200, deadline=None)
@given(windows())
def test_every_answer_is_its_span_of_the_context_ranked_unique_and_at_most_top_k(data):
    context, starts, ends, mappings, top_k, max_answer_len = data
    answers = extract_answers(context, starts, ends, mappings, top_k=top_k, max_answer_len=max_answer_len)
    assert len(answers) <= top_k
    for answer in answers:
        assert answer["answer"] == context[answer["start"] : answer["end"]]
        assert answer["answer"] and answer["answer"] == answer["answer"].strip()
        assert 0.0 < answer["score"] <= 1.0 + 1e-9
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True)
    spans = [(a["start"], a["end"]) for a in answers]
    assert len(set(spans)) == len(spans)  # windows merged without duplicate spans


@settings(max_examples=100, deadline=None)
@given(windows())
def test_a_repeated_window_changes_nothing(data):
    """Overlapping windows that see the same tokens with the same logits are merged, not counted twice."""
    context, starts, ends, mappings, top_k, max_answer_len = data
    once = extract_answers(context, starts, ends, mappings, top_k=top_k, max_answer_len=max_answer_len)
    twice = extract_answers(
        context,
        starts + starts[:1],
        ends + ends[:1],
        mappings + mappings[:1],
        top_k=top_k,
        max_answer_len=max_answer_len,
    )
    assert twice == once


@settings(max_examples=100, deadline=None)
@given(windows())
def test_the_best_span_is_the_exact_argmax_of_start_times_end_probability(data):
    """Brute force over every readable (start, end) pair of every window agrees with the ranked first answer."""
    context, starts, ends, mappings, _, max_answer_len = data
    answers = extract_answers(context, starts, ends, mappings, top_k=1, max_answer_len=max_answer_len)
    best = -math.inf
    for s_logits, e_logits, mapping in zip(starts, ends, mappings):
        readable = [k for k, o in enumerate(mapping) if o is not None]
        ps = np.exp(s_logits[readable] - np.logaddexp.reduce(s_logits[readable].astype(np.float64)))
        pe = np.exp(e_logits[readable] - np.logaddexp.reduce(e_logits[readable].astype(np.float64)))
        for i in range(len(readable)):
            for j in range(i, min(i + max_answer_len, len(readable))):
                a, b = mapping[readable[i]][0], mapping[readable[j]][1]
                if context[a:b].strip():
                    best = max(best, ps[i] * pe[j])
    if best == -math.inf:
        assert answers == []
    else:
        assert answers[0]["score"] == pytest.approx(best, rel=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# BioASQ metric: merging, batches, submissions
# --------------------------------------------------------------------------------------------------------------------

ANSWER = st.sampled_from(["BRCA1", "brca1", "BRCA1.", "(TNF)", "TNF", "IL-6", "coilin", "Factor Xa", "x (y", " "])
QA_ID = st.sampled_from(["q1_000", "q1_001", "q2_000", "q2_001", "q3_000"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(QA_ID, ANSWER, st.floats(0, 1, allow_nan=False)), max_size=30),
    st.integers(1, 7),
    st.sampled_from(["sum", "max"]),
)
def test_merged_candidates_are_unique_bounded_and_come_from_the_question(triples, top_k, reduce):
    merged = merge_candidates(triples, top_k=top_k, reduce=reduce)
    for qid, answers in merged.items():
        assert len(answers) <= top_k
        keys = [normalize_answer(a) for a in answers]
        assert len(set(keys)) == len(keys) and all(keys)
        own = {normalize_answer(t).rstrip(".,").strip("()") for q, t, _ in triples if q.split("_")[0] == qid}
        assert set(keys) <= own


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(QA_ID, ANSWER), max_size=20, unique=True),
    st.randoms(use_true_random=False),
)
def test_merging_with_distinct_scores_does_not_depend_on_input_order(pairs, rng):
    triples = [(qa_id, text, (i + 1) / (len(pairs) + 1)) for i, (qa_id, text) in enumerate(pairs)]
    shuffled = list(triples)
    rng.shuffle(shuffled)
    a, b = merge_candidates(triples, reduce="max"), merge_candidates(shuffled, reduce="max")
    assert {q: v for q, v in a.items()} == {q: v for q, v in b.items()}


REFERENCE_ANSWERS = st.lists(st.lists(st.sampled_from(["BRCA1", "TNF", "coilin", "Xa"]), min_size=1), min_size=1)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(8)]), REFERENCE_ANSWERS, min_size=1),
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(9)]), st.lists(ANSWER, max_size=7)),
    st.integers(1, 4),
)
def test_macro_is_the_mean_of_batches_and_micro_the_score_of_all_questions(references, predictions, n_batches):
    ids = sorted(references)
    batches = {f"b{k}": {q: references[q] for q in ids[k::n_batches]} for k in range(n_batches)}
    batches = {name: refs for name, refs in batches.items() if refs}
    result = bioasq_factoid_batches(predictions, batches)
    overall = bioasq_factoid(predictions, references)
    for key in ("strict_acc", "lenient_acc", "mrr"):
        per_batch = [bioasq_factoid(predictions, refs)[key] for refs in batches.values()]
        assert result["macro"][key] == pytest.approx(sum(per_batch) / len(per_batch))
        assert result["micro"][key] == pytest.approx(overall[key])
    assert result["num_unknown_predictions"] == overall["num_unknown_predictions"]


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(6)]), REFERENCE_ANSWERS, min_size=1),
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(7)]), st.lists(ANSWER, max_size=8)),
)
def test_a_submission_lists_every_question_once_and_scores_like_the_predictions(references, predictions):
    submission = to_submission(predictions, references)
    listed = [q["id"] for q in submission["questions"]]
    assert listed == list(references)
    assert all(len(q["exact_answer"]) <= MAX_CANDIDATES for q in submission["questions"])
    as_predictions = {q["id"]: q["exact_answer"] for q in submission["questions"]}
    for key in ("strict_acc", "lenient_acc", "mrr"):
        assert bioasq_factoid(as_predictions, references)[key] == bioasq_factoid(predictions, references)[key]


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(6)]), REFERENCE_ANSWERS, min_size=1),
    st.dictionaries(st.sampled_from([f"q{i}" for i in range(6)]), st.lists(ANSWER, max_size=6)),
)
def test_scores_ignore_case_but_not_whitespace_of_candidates(references, predictions):
    shouted = {q: [a.upper() for a in answers] for q, answers in predictions.items()}
    assert bioasq_factoid(shouted, references) == bioasq_factoid(predictions, references)
    # As in the official evaluator, whitespace is compared as written: padded candidates match no gold answer here.
    padded = {q: [f"  {a}\t" for a in answers] for q, answers in predictions.items()}
    assert bioasq_factoid(padded, references)["lenient_acc"] == 0.0
