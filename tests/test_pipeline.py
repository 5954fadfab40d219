import types

import pytest
import torch
import transformers
from helpers import tiny_bert_qa, tiny_config, tiny_mamba2_config
from packaging.version import Version
from transformers import AutoTokenizer, Mamba2ForCausalLM, MambaForCausalLM, pipeline
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from biomamba_hf import MambaForQuestionAnswering, QuestionAnsweringPipeline, prepare_tokenizer_for_qa
from biomamba_hf.modeling import Mamba2ForQuestionAnswering
from biomamba_hf.qa import prepare_qa_features

QUESTION = "Which gene is mutated in cystic fibrosis?"
FILLER = "Insulin is secreted by beta cells of the pancreatic islets. "
CONTEXT = FILLER * 6 + "Cystic fibrosis results from mutations in the CFTR chloride channel. " + FILLER * 2
#: The fix every refused call form states (matched as a regular expression).
EXPECTED = (
    r"pass a question string and a context string \(`question=`, `context=`; lists of strings for several\), "
    r"a dict \{'question': \.\.\., 'context': \.\.\.\}, or a non-empty list of such dicts\."
)


class MarkerLogits:
    """Makes a QA model's logits controlled: start/end logits peak on every occurrence of `answer_ids`."""

    answer_ids: list[int] = []

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        start = torch.zeros(input_ids.shape)
        end = torch.zeros(input_ids.shape)
        n = len(self.answer_ids)
        for b, row in enumerate(input_ids.tolist()):
            for i in range(len(row) - n + 1):
                if row[i : i + n] == self.answer_ids:
                    start[b, i] = end[b, i + n - 1] = 10.0
        return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


class MarkerForQuestionAnswering(MarkerLogits, MambaForQuestionAnswering):
    pass


class Mamba2MarkerForQuestionAnswering(MarkerLogits, Mamba2ForQuestionAnswering):
    pass


#: The two model families the pipeline serves: QA class, marker class and tiny config builder of each.
FAMILIES = {
    "mamba": (MambaForQuestionAnswering, MarkerForQuestionAnswering, tiny_config),
    "mamba2": (Mamba2ForQuestionAnswering, Mamba2MarkerForQuestionAnswering, tiny_mamba2_config),
}


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param


def marker_pipeline(tokenizer, answer, layout, family="mamba"):
    prepare_tokenizer_for_qa(tokenizer)
    _, marker_class, make_config = FAMILIES[family]
    model = marker_class(make_config(len(tokenizer), qa_layout=layout))
    model.answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return pipeline("question-answering", model=model, tokenizer=tokenizer)


def test_upstream_task_removal_shape():
    """Fails loudly if transformers changes how it removes pipeline tasks (see registration.py)."""
    from transformers import pipelines

    removed = getattr(pipelines, "REMOVED_TASKS", None)
    if removed is not None:  # releases that block removed tasks before the registry is consulted (seen on 5.24)
        assert isinstance(removed, dict)
        assert "summarization" in removed, "upstream no longer removes tasks via REMOVED_TASKS"
        with pytest.raises(KeyError):
            pipelines._resolve_deprecated_task("summarization")
    elif Version(transformers.__version__) >= Version("5.24"):
        pytest.fail("transformers changed how it removes pipeline tasks: revisit registration.py")
    assert "question-answering" not in (removed or {})
    _, task_info, _ = pipelines.PIPELINE_REGISTRY.check_task("question-answering")
    assert task_info["impl"] is QuestionAnsweringPipeline


@pytest.mark.parametrize(
    ("folder", "qa_class"), [("clm_dir", MambaForQuestionAnswering), ("mamba2_clm_dir", Mamba2ForQuestionAnswering)]
)
def test_pipeline_from_causal_lm_folder(request, folder, qa_class):
    clm_dir = request.getfixturevalue(folder)
    qa = pipeline("question-answering", model=str(clm_dir))
    assert isinstance(qa, QuestionAnsweringPipeline) and type(qa.model) is qa_class
    assert qa.layout == "question_first"
    assert qa.tokenizer.sep_token == "<|sep|>" and qa.tokenizer.pad_token == "<|padding|>"
    best = qa(question=QUESTION, context=CONTEXT)
    assert set(best) == {"score", "start", "end", "answer"}
    assert CONTEXT[best["start"] : best["end"]] == best["answer"] and best["answer"]
    assert best["answer"] == best["answer"].strip()
    ranked = qa(question=QUESTION, context=CONTEXT, top_k=5, max_seq_len=40, doc_stride=10)
    assert 1 <= len(ranked) <= 5
    assert [a["score"] for a in ranked] == sorted((a["score"] for a in ranked), reverse=True)
    assert len({(a["start"], a["end"]) for a in ranked}) == len(ranked)


def test_pipeline_reads_layout_and_tokenizer_from_checkpoint(tmp_path, tokenizer, family):
    prepare_tokenizer_for_qa(tokenizer)
    qa_class, _, make_config = FAMILIES[family]
    model = qa_class(make_config(len(tokenizer), qa_layout="repeat_context"))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    qa = pipeline("question-answering", model=str(tmp_path))
    assert type(qa.model) is qa_class and qa.layout == "repeat_context"
    assert qa.tokenizer.sep_token_id == tokenizer.sep_token_id
    assert AutoTokenizer.from_pretrained(tmp_path)("a <|sep|> b")["input_ids"] == tokenizer("a <|sep|> b")["input_ids"]


@pytest.mark.parametrize("layout", ["question_first", "repeat_context"])
@pytest.mark.parametrize("max_seq_len", [512, 40])  # one window / many windows
def test_spans_are_exact(tokenizer, layout, max_seq_len, family):
    qa = marker_pipeline(tokenizer, "CFTR", layout, family)
    best = qa(question=QUESTION, context=CONTEXT, max_seq_len=max_seq_len, doc_stride=12)
    assert best["answer"] == "CFTR"
    assert best["start"] == CONTEXT.index("CFTR") and best["end"] == best["start"] + 4
    features = prepare_qa_features(
        qa.tokenizer, [QUESTION], [CONTEXT], layout=layout, max_seq_len=max_seq_len, doc_stride=12
    )
    assert (len(features["input_ids"]) > 1) == (max_seq_len == 40)


def test_input_forms_and_batching_agree(tokenizer, family):
    qa = marker_pipeline(tokenizer, "CFTR", "question_first", family)
    example = {"question": QUESTION, "context": CONTEXT}
    single = qa(question=QUESTION, context=CONTEXT, max_seq_len=40)
    assert qa(example, max_seq_len=40) == single
    other = {"question": "What do beta cells secrete?", "context": FILLER * 3}
    listed = qa([example, other, example], max_seq_len=40)
    assert len(listed) == 3 and listed[0] == single == listed[2]
    assert qa([example, other, example], max_seq_len=40, batch_size=4) == listed
    assert qa(question=[QUESTION, QUESTION], context=[CONTEXT, CONTEXT], max_seq_len=40) == [single, single]


def test_bert_style_models_use_the_pair_layout(bert_tokenizer):
    qa = pipeline("question-answering", model=tiny_bert_qa(len(bert_tokenizer)), tokenizer=bert_tokenizer)
    assert qa.layout == "pair"
    answers = qa(question=QUESTION, context=CONTEXT, top_k=3, max_seq_len=48, doc_stride=16)
    assert answers and all(CONTEXT[a["start"] : a["end"]] == a["answer"] for a in answers)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda qa: qa(question="", context=CONTEXT), "Input 0: `question` is empty"),
        (lambda qa: qa(question=QUESTION, context="   "), "Input 0: `context` is empty"),
        (lambda qa: qa([{"question": QUESTION}]), "Input 0 must be a dict with 'question' and 'context' keys"),
        (lambda qa: qa(question=[QUESTION] * 2, context=[CONTEXT] * 3), "Got 2 questions and 3 contexts"),
        (lambda qa: qa(question=QUESTION, context=CONTEXT, top_k=0), "top_k must be a positive integer, got 0"),
        (lambda qa: qa(question=QUESTION, context=CONTEXT, max_seq_len=4), "leaves no room for context"),
        (lambda qa: qa(42), "Unsupported input 42 of type int"),
        # None and empty inputs name themselves and what to pass (they raised TypeError/IndexError or said neither).
        (
            lambda qa: qa(question=None),
            r"qa\(question=None\): `question` is None and `context=` is missing; " + EXPECTED,
        ),
        (lambda qa: qa(question=None, context=CONTEXT), r"qa\(question=None, context='.*'\): `question` is None; "),
        (lambda qa: qa(question=QUESTION, context=None), r"qa\(question='.*', context=None\): `context` is None; "),
        (lambda qa: qa([]), r"qa\(\[\]\): the list of inputs is empty; " + EXPECTED),
        (lambda qa: qa(iter([])), r"qa\(\[\]\): the list of inputs is empty; "),
        (lambda qa: qa(question=[], context=[]), "`question` is an empty list: " + EXPECTED),
        (lambda qa: qa(question=QUESTION, context=[]), "`context` is an empty list: "),
        (lambda qa: qa(question=5, context=CONTEXT), r"`question` is 5 \(type int\): "),
        (lambda qa: qa([{"question": None, "context": CONTEXT}]), r"Input 0: `question` is None \(type NoneType\)"),
        (
            lambda qa: qa(question=QUESTION, context=CONTEXT, pad_to_multiple_of=0),
            r"pad_to_multiple_of must be a positive integer \(e.g. 64\) or None, got 0",
        ),
        (
            lambda qa: qa(question=QUESTION, context=CONTEXT, compile="yes"),
            "compile must be True/False, a transformers.CompileConfig or a dict of its fields, got 'yes'",
        ),
        (
            lambda qa: qa(question=QUESTION, context=CONTEXT, compile={"mode_": "x"}),
            r"compile=\{'mode_': 'x'\}: .*use the fields of transformers.CompileConfig",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(tokenizer, call, message):
    qa = marker_pipeline(tokenizer, "CFTR", "question_first")
    with pytest.raises(ValueError, match=message):
        call(qa)


def test_models_and_tokenizers_that_cannot_do_qa(tokenizer, clm_dir, mamba2_clm_dir):
    with pytest.raises(ValueError, match="MambaForCausalLM has no question-answering head"):
        pipeline("question-answering", model=MambaForCausalLM.from_pretrained(clm_dir), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="Mamba2ForCausalLM has no question-answering head"):
        pipeline("question-answering", model=Mamba2ForCausalLM.from_pretrained(mamba2_clm_dir), tokenizer=tokenizer)
    for qa_class, _, make_config in FAMILIES.values():
        model = qa_class(make_config(len(tokenizer) + 3))
        with pytest.raises(ValueError, match="needs a fast tokenizer with offset mappings"):
            QuestionAnsweringPipeline(model=model, tokenizer=types.SimpleNamespace(is_fast=False))
        small = qa_class(make_config(len(tokenizer)))
        with pytest.raises(
            ValueError, match=f"The tokenizer needs a separator token but the model's {len(tokenizer)} "
        ):
            pipeline(
                "question-answering", model=small, tokenizer=AutoTokenizer.from_pretrained(tokenizer.name_or_path)
            )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["question_first", "repeat_context"])
def test_each_layout_trains_end_to_end(tokenizer, layout, family):
    """Fine-tune a tiny model on a few examples with the layout's features; the pipeline then finds the answers."""
    torch.manual_seed(0)
    prepare_tokenizer_for_qa(tokenizer)
    qa_class, _, make_config = FAMILIES[family]
    extra = {"num_heads": 8} if family == "mamba2" else {}  # hidden 64 x expand 2 = 8 heads of 16
    model = qa_class(make_config(len(tokenizer), qa_layout=layout, hidden_size=64, **extra))
    examples = [
        (
            "Which gene is mutated in cystic fibrosis?",
            "Cystic fibrosis results from mutations in the CFTR gene.",
            "CFTR",
        ),
        ("What does imatinib target?", "Imatinib targets the BCR-ABL tyrosine kinase.", "BCR-ABL"),
        (
            "Which receptor does the spike protein bind?",
            "The spike protein of SARS-CoV-2 binds the ACE2 receptor.",
            "ACE2",
        ),
    ]
    questions, contexts, answers = map(list, zip(*examples))
    features = prepare_qa_features(
        tokenizer,
        questions,
        contexts,
        layout=layout,
        answer_starts=[c.index(a) for c, a in zip(contexts, answers)],
        answer_texts=answers,
    )
    batch = tokenizer.pad({"input_ids": features["input_ids"]}, return_tensors="pt")
    starts, ends = torch.tensor(features["start_positions"]), torch.tensor(features["end_positions"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model(**batch, start_positions=starts, end_positions=ends).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    qa = pipeline("question-answering", model=model.eval(), tokenizer=tokenizer)
    predicted = [r["answer"] for r in qa([{"question": q, "context": c} for q, c in zip(questions, contexts)])]
    assert predicted == answers


# ---------------------------------------------------------------- the former pipeline's options, long contexts


def _split_word(tokenizer, context):
    """A word of ``context`` that the tokenizer cuts into several tokens: (word, its first token's text)."""
    encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    word_ids = encoded.word_ids()
    for k in range(1, len(word_ids)):
        if word_ids[k] is not None and word_ids[k] == word_ids[k - 1]:
            span = encoded.word_to_chars(word_ids[k])
            first = encoded["offset_mapping"][k - 1]
            return context[span.start : span.end].strip(), context[first[0] : first[1]].strip()
    raise AssertionError("no word of the context is split into several tokens")


def test_align_to_words_snaps_answers_to_whole_words(tokenizer, family):
    prepare_tokenizer_for_qa(tokenizer)
    word, piece = _split_word(tokenizer, CONTEXT)
    assert piece != word and word.startswith(piece)
    _, marker_class, make_config = FAMILIES[family]
    model = marker_class(make_config(len(tokenizer), qa_layout="question_first"))
    model.answer_ids = tokenizer(" " + piece, add_special_tokens=False)["input_ids"]
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer)
    default = qa(question=QUESTION, context=CONTEXT)
    assert default["answer"] == word  # the logits point inside the word: the answer is the whole word
    assert CONTEXT[default["start"] : default["end"]] == word
    tokens = qa(question=QUESTION, context=CONTEXT, align_to_words=False)
    assert tokens["answer"] == piece and CONTEXT[tokens["start"] : tokens["end"]] == piece
    with pytest.raises(ValueError, match="align_to_words must be True or False, got 'yes'"):
        qa(question=QUESTION, context=CONTEXT, align_to_words="yes")


def test_handle_impossible_answer_returns_the_null_answer(tokenizer, family):
    """A model that points at the "no answer" position (the separator after the question, where training labels
    windows without an answer): the empty answer only when asked for, in the former pipeline's form."""
    prepare_tokenizer_for_qa(tokenizer)
    _, marker_class, make_config = FAMILIES[family]
    model = marker_class(make_config(len(tokenizer), qa_layout="question_first"))
    model.answer_ids = [tokenizer.sep_token_id]
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer)
    null = qa(question=QUESTION, context=CONTEXT, max_seq_len=40, handle_impossible_answer=True)
    assert {key: null[key] for key in ("answer", "start", "end")} == {"answer": "", "start": 0, "end": 0}
    assert null["score"] > 0.9
    assert qa(question=QUESTION, context=CONTEXT, max_seq_len=40)["answer"] != ""  # default: a span, however weak
    # a model sure of a span in one window keeps it: that window is sure there is an answer, so the null answer
    # (scored by the window least sure there is none) loses
    sure = marker_pipeline(tokenizer, "CFTR", "question_first", family)
    assert sure(question=QUESTION, context=CONTEXT, max_seq_len=40, handle_impossible_answer=True)["answer"] == "CFTR"


def test_an_answer_across_a_window_boundary_is_found_with_the_default_stride(tokenizer, family):
    """The pipeline's default doc_stride overlaps windows: an answer that crosses the end of the first window
    (without overlap it is whole in no window) is found exactly."""
    prepare_tokenizer_for_qa(tokenizer)
    context = " ".join(f"x{i:03d}" for i in range(80))  # every word once, so the marked answer occurs once
    windows = prepare_qa_features(tokenizer, [QUESTION], [context], max_seq_len=40, doc_stride=0)
    ends = [[o for o in offsets if o is not None][-1][1] for offsets in windows["offset_mapping"][:-1]]
    # the first window end that cuts through a word: that word is the answer
    end = next(e for e in ends if context[e - 1] != " " and context[e] != " ")
    start, stop = context.rindex(" ", 0, end) + 1, context.index(" ", end)
    answer = context[start:stop]
    qa = marker_pipeline(tokenizer, answer, "question_first", family)
    best = qa(question=QUESTION, context=context, max_seq_len=40)
    assert (best["answer"], best["start"]) == (answer, start) and best["score"] > 0.9
    assert qa(question=QUESTION, context=context, max_seq_len=40, doc_stride=0)["answer"] != answer


def test_long_contexts_do_not_warn_about_the_model_maximum(tokenizer):
    """The whole context is tokenized on purpose before windowing: transformers' "Token indices sequence length is
    longer than the specified maximum" warning would be wrong there."""
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    tokenizer_logger = logging.getLogger("transformers.tokenization_utils_base")
    tokenizer_logger.addHandler(handler)
    try:
        qa = marker_pipeline(tokenizer, "CFTR", "question_first")
        qa.tokenizer.model_max_length = 32  # the context is far longer
        assert qa(question=QUESTION, context=CONTEXT, max_seq_len=32)["answer"] == "CFTR"
        assert not [m for m in messages if "Token indices sequence length" in m], messages
        qa.tokenizer(CONTEXT)  # the same text through the tokenizer directly: the warning is seen here
        assert [m for m in messages if "Token indices sequence length" in m]
    finally:
        tokenizer_logger.removeHandler(handler)


# ---------------------------------------------------------------- inference levers: length buckets, compiled forward


def counting_backend(graphs: list):
    """A ``torch.compile`` backend that runs the captured graphs eagerly and records them (fast on a CPU)."""

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return backend


def _answers(qa, examples, **kwargs):
    return qa(examples, top_k=3, max_seq_len=40, doc_stride=10, **kwargs)


def _same_answers(got, expected):
    for ranked, reference in zip(got, expected):
        assert [(a["answer"], a["start"], a["end"]) for a in ranked] == [
            (a["answer"], a["start"], a["end"]) for a in reference
        ]
        assert [a["score"] for a in ranked] == pytest.approx([a["score"] for a in reference], rel=1e-5, abs=1e-7)


def _random_pipeline(tokenizer, family):
    prepare_tokenizer_for_qa(tokenizer)
    qa_class, _, make_config = FAMILIES[family]
    torch.manual_seed(0)
    return pipeline("question-answering", model=qa_class(make_config(len(tokenizer))).eval(), tokenizer=tokenizer)


LEVER_EXAMPLES = [
    {"question": QUESTION, "context": CONTEXT},
    {"question": "What do beta cells secrete?", "context": FILLER},
    {"question": "Which channel?", "context": "CFTR is a chloride channel."},
]


def test_length_buckets_give_the_same_answers(tokenizer, family):
    """A random tiny model (not a marker): windows of 40 tokens padded in batches of 3 to buckets of 16 (16, 32,
    40): the same ranked answers and scores as padding to the longest window of each batch."""
    qa = _random_pipeline(tokenizer, family)
    plain = _answers(qa, LEVER_EXAMPLES, batch_size=3)
    _same_answers(_answers(qa, LEVER_EXAMPLES, batch_size=3, pad_to_multiple_of=16), plain)
    _same_answers(_answers(qa, LEVER_EXAMPLES, pad_to_multiple_of=16), plain)


@pytest.mark.slow  # tracing the tiny Mamba / Mamba-2 forward takes ~10 s on a CPU
def test_a_compiled_forward_gives_the_same_answers(tokenizer, family):
    """torch.compile with an eager backend that records the captured graphs (the GPU path uses inductor with
    mode="reduce-overhead"); buckets of 64 by default, capped at max_seq_len: one shape, one trace at batch 1."""
    from transformers import CompileConfig

    qa = _random_pipeline(tokenizer, family)
    plain = _answers(qa, LEVER_EXAMPLES)
    torch._dynamo.reset()  # fresh compile caches: every test's models share nn.Module._call_impl
    graphs = []
    compiled = _answers(qa, LEVER_EXAMPLES, compile=CompileConfig(backend=counting_backend(graphs), mode=None))
    assert graphs, "the forward did not go through torch.compile"
    _same_answers(compiled, plain)
    assert qa.model._compiled_call_impl is None  # compile is per call: the model is left as it was


def test_the_same_levers_serve_bert_style_models(bert_tokenizer):
    torch.manual_seed(0)
    qa = pipeline("question-answering", model=tiny_bert_qa(len(bert_tokenizer)).eval(), tokenizer=bert_tokenizer)
    examples = [{"question": QUESTION, "context": CONTEXT}, {"question": "What is secreted?", "context": FILLER}]
    plain = _answers(qa, examples, batch_size=2)
    torch._dynamo.reset()  # fresh compile caches: every test's models share nn.Module._call_impl
    graphs = []
    compiled = _answers(qa, examples, compile={"backend": counting_backend(graphs), "mode": None})
    assert graphs
    _same_answers(compiled, plain)  # buckets of 64 (the default with compile), capped at max_seq_len 40
    _same_answers(_answers(qa, examples, batch_size=2, pad_to_multiple_of=16), plain)


class PaddingMagnet(MarkerLogits):
    """The marker model, plus the largest logits of all on every padded position (attention_mask 0)."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        output = super().forward(input_ids=input_ids, attention_mask=attention_mask)
        padded = attention_mask == 0
        output.start_logits[padded] = output.end_logits[padded] = 1000.0
        return output


class MagnetForQuestionAnswering(PaddingMagnet, MambaForQuestionAnswering):
    pass


def test_spans_are_never_read_from_bucket_padding(tokenizer):
    prepare_tokenizer_for_qa(tokenizer)
    model = MagnetForQuestionAnswering(tiny_config(len(tokenizer)))
    model.answer_ids = tokenizer(" CFTR", add_special_tokens=False)["input_ids"]
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer)
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    examples = [{"question": QUESTION, "context": CONTEXT}, {"question": "Short?", "context": "It is CFTR."}]
    plain = qa(examples, max_seq_len=40, batch_size=2)
    bucketed = qa(examples, max_seq_len=40, batch_size=2, pad_to_multiple_of=64)
    assert bucketed == plain and [a["answer"] for a in plain] == ["CFTR", "CFTR"]
    assert all(score > 0.9 for score in (a["score"] for a in bucketed))
    assert set(seen[len(seen) // 2 :]) == {40}  # every bucketed batch is padded to the largest bucket, max_seq_len


def test_a_tokenizer_that_pads_on_the_left_is_not_changed_and_batches_pad_on_the_right(tokenizer, family):
    prepare_tokenizer_for_qa(tokenizer)
    tokenizer.padding_side = "left"
    _, marker_class, make_config = FAMILIES[family]
    model = marker_class(make_config(len(tokenizer)))
    model.answer_ids = tokenizer(" CFTR", add_special_tokens=False)["input_ids"]
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer)
    examples = [{"question": QUESTION, "context": CONTEXT}, {"question": "Short?", "context": "It is CFTR."}]
    assert qa(examples, max_seq_len=40, batch_size=2) == qa(examples, max_seq_len=40)
    assert tokenizer.padding_side == "left" and qa.tokenizer.padding_side == "right"


def test_the_pad_values_of_the_buckets_are_read_once_per_pipeline(tokenizer, monkeypatch):
    """pad_to_multiple_of pads with the tokenizer's pad values, read when the pipeline is built, not per forward."""
    from biomamba_hf import pipelines

    calls = []
    original = pipelines.pad_values_for
    monkeypatch.setattr(pipelines, "pad_values_for", lambda tok: calls.append(tok) or original(tok))
    qa = _random_pipeline(tokenizer, "mamba")
    plain = _answers(qa, LEVER_EXAMPLES)
    _same_answers(_answers(qa, LEVER_EXAMPLES, pad_to_multiple_of=16), plain)
    _same_answers(_answers(qa, LEVER_EXAMPLES, batch_size=3, pad_to_multiple_of=16), plain)
    assert calls == [qa.tokenizer]
