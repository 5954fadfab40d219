import numpy as np
import pytest

from biomamba_hf import prepare_tokenizer_for_qa
from biomamba_hf.qa import extract_answers, prepare_qa_features

QUESTION = "Which gene is mutated in cystic fibrosis?"
CONTEXT = "Cystic fibrosis results from mutations in the CFTR chloride channel."
ANSWER = "CFTR"


@pytest.fixture
def qa_tokenizer(tokenizer):
    return prepare_tokenizer_for_qa(tokenizer)


def _decode_label(tok, features, f):
    ids = features["input_ids"][f][features["start_positions"][f] : features["end_positions"][f] + 1]
    return tok.decode(ids).strip()


def test_prepare_tokenizer_adds_pad_and_sep_once(tokenizer):
    n = len(tokenizer)
    assert tokenizer.pad_token is None and tokenizer.sep_token is None
    prepare_tokenizer_for_qa(tokenizer)
    assert tokenizer.pad_token == "<|padding|>" and tokenizer.pad_token_id == 1
    assert tokenizer.sep_token == "<|sep|>" and len(tokenizer) == n + 1
    prepare_tokenizer_for_qa(tokenizer)
    assert len(tokenizer) == n + 1


def test_prepare_tokenizer_resizes_a_model_without_room(tokenizer):
    from helpers import tiny_config
    from transformers import MambaForCausalLM

    model = MambaForCausalLM(tiny_config(len(tokenizer)))
    prepare_tokenizer_for_qa(tokenizer, model)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.config.sep_token_id == tokenizer.sep_token_id


def test_question_first_layout(qa_tokenizer):
    start = CONTEXT.index(ANSWER)
    f = prepare_qa_features(qa_tokenizer, [QUESTION], [CONTEXT], answer_starts=[start], answer_texts=[ANSWER])
    q_ids = qa_tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    c_ids = qa_tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    assert f["input_ids"] == [q_ids + [qa_tokenizer.sep_token_id] + c_ids]
    offsets = f["offset_mapping"][0]
    assert offsets[: len(q_ids) + 1] == [None] * (len(q_ids) + 1)
    assert all(o is not None for o in offsets[len(q_ids) + 1 :])
    assert _decode_label(qa_tokenizer, f, 0) == ANSWER


def test_repeat_context_layout_reads_second_copy(qa_tokenizer):
    start = CONTEXT.index(ANSWER)
    f = prepare_qa_features(
        qa_tokenizer, [QUESTION], [CONTEXT], layout="repeat_context", answer_starts=[start], answer_texts=[ANSWER]
    )
    q_ids = qa_tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    c_ids = qa_tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    sep = qa_tokenizer.sep_token_id
    assert f["input_ids"] == [q_ids + [sep] + c_ids + [sep] + c_ids]
    second_copy = len(q_ids) + 2 + len(c_ids)
    assert f["start_positions"][0] >= second_copy
    assert all(o is None for o in f["offset_mapping"][0][:second_copy])
    assert _decode_label(qa_tokenizer, f, 0) == ANSWER


@pytest.mark.parametrize("layout", ["question_first", "repeat_context", "pair"])
def test_long_context_windows_cover_everything(request, layout):
    # The pair layout windows the context itself: tokenizers 0.23.1-0.23.2 return at most one overflowing window.
    qa_tokenizer = request.getfixturevalue("bert_tokenizer" if layout == "pair" else "qa_tokenizer")
    filler = "Insulin is secreted by beta cells of the pancreatic islets. " * 8
    context = filler + CONTEXT + " " + filler
    start = context.index(ANSWER)
    f = prepare_qa_features(
        qa_tokenizer,
        [QUESTION],
        [context],
        layout=layout,
        max_seq_len=48,
        doc_stride=8,
        answer_starts=[start],
        answer_texts=[ANSWER],
    )
    n_ctx = len(qa_tokenizer(context, add_special_tokens=False)["input_ids"])
    assert len(f["input_ids"]) > 2
    assert all(len(ids) <= 48 for ids in f["input_ids"])
    covered = set()
    for offsets in f["offset_mapping"]:
        covered.update(o for o in offsets if o is not None)
    assert len(covered) == n_ctx  # every context token is readable in some window
    labelled = [i for i, offsets in enumerate(f["offset_mapping"]) if offsets[f["start_positions"][i]] is not None]
    assert labelled, "the answer must be labelled in at least one window"
    for i in labelled:
        decoded = _decode_label(qa_tokenizer, f, i)
        if layout == "pair":  # a lower-casing WordPiece decodes with spaces around word pieces
            decoded, expected = decoded.replace(" ", ""), ANSWER.lower().replace(" ", "")
        else:
            expected = ANSWER
        assert decoded == expected
    # "not in this window": the separator after the question, or [CLS] for the pair layout
    null = 0 if layout == "pair" else len(qa_tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    for i in set(range(len(f["input_ids"]))) - set(labelled):
        assert f["start_positions"][i] == f["end_positions"][i] == null


def test_feature_errors(qa_tokenizer, tokenizer):
    with pytest.raises(ValueError, match="Question 0 is empty"):
        prepare_qa_features(qa_tokenizer, ["  "], [CONTEXT])
    with pytest.raises(ValueError, match="Context 1 is empty"):
        prepare_qa_features(qa_tokenizer, [QUESTION, QUESTION], [CONTEXT, ""])
    with pytest.raises(ValueError, match="leaves no room for context"):
        prepare_qa_features(qa_tokenizer, [QUESTION], [CONTEXT], max_seq_len=5)
    with pytest.raises(
        ValueError, match="layout= 'backwards' is not a QA layout; use one of question_first, repeat_context, pair"
    ):
        prepare_qa_features(qa_tokenizer, [QUESTION], [CONTEXT], layout="backwards")


def test_feature_error_without_separator():
    from helpers import train_test_tokenizer

    with pytest.raises(ValueError, match="has no separator token. Call `biomamba_hf.prepare_tokenizer_for_qa"):
        prepare_qa_features(train_test_tokenizer(), [QUESTION], [CONTEXT])


def _logits_for(n, start, end):
    s, e = np.zeros(n), np.zeros(n)
    s[start], e[end] = 10.0, 10.0
    return s, e


def test_extract_answers_maps_offsets_and_strips_spaces():
    context = "The CFTR gene"
    offsets = [None, (0, 3), (3, 8), (8, 13)]  # GPT-NeoX style: leading spaces belong to the token
    s, e = _logits_for(4, 2, 2)
    (best,) = extract_answers(context, [s], [e], [offsets])
    assert best["answer"] == "CFTR" and context[best["start"] : best["end"]] == "CFTR"
    assert 0.9 < best["score"] <= 1.0


def test_extract_answers_ranks_dedupes_windows_and_limits_length():
    context = "alpha beta gamma delta"
    offsets_a = [None, (0, 5), (5, 10), (10, 16)]
    offsets_b = [None, (5, 10), (10, 16), (16, 22)]  # overlapping window
    sa, ea = _logits_for(4, 2, 2)  # "beta" in window a
    sb, eb = _logits_for(4, 1, 1)  # "beta" again in window b
    answers = extract_answers(context, [sa, sb], [ea, eb], [offsets_a, offsets_b], top_k=5)
    texts = [a["answer"] for a in answers]
    assert texts[0] == "beta" and texts.count("beta") == 1
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)
    s, e = _logits_for(4, 1, 3)
    (best,) = extract_answers(context, [s], [e], [offsets_a], max_answer_len=2)
    assert len(best["answer"].split()) <= 2
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        extract_answers(context, [s], [e], [offsets_a], top_k=0)


def test_pair_layout_for_bert_style_tokenizers(bert_tokenizer):
    start = CONTEXT.index(ANSWER)
    f = prepare_qa_features(
        bert_tokenizer, [QUESTION], [CONTEXT], layout="pair", answer_starts=[start], answer_texts=[ANSWER]
    )
    ids = f["input_ids"][0]
    assert ids[0] == bert_tokenizer.cls_token_id and ids[-1] == bert_tokenizer.sep_token_id
    own = bert_tokenizer(QUESTION, CONTEXT)  # the tokenizer's own pair encoding: same ids and token types
    assert ids == own["input_ids"] and f["token_type_ids"][0] == own["token_type_ids"]
    assert _decode_label(bert_tokenizer, f, 0).replace(" ", "") == ANSWER.lower()


# ---------------------------------------------------------------- windows share doc_stride tokens (issue 14 §6)


@pytest.mark.parametrize("layout", ["question_first", "repeat_context"])
def test_an_answer_across_a_window_boundary_is_whole_in_the_overlap(qa_tokenizer, layout):
    """Consecutive windows share exactly ``doc_stride`` context tokens, so an answer that crosses where a window
    without overlap would end is labelled whole in the next window; with no overlap it would be in none."""
    filler = "Insulin is secreted by beta cells of the pancreatic islets. " * 4
    context = filler + CONTEXT + " " + filler
    encoded = qa_tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    kwargs = dict(layout=layout, max_seq_len=40, max_question_len=12)
    plain = prepare_qa_features(qa_tokenizer, [QUESTION], [context], doc_stride=0, **kwargs)
    budget = sum(o is not None for o in plain["offset_mapping"][0])
    # two context tokens on each side of the first window's end form the answer
    first, last = encoded["offset_mapping"][budget - 2], encoded["offset_mapping"][budget + 1]
    start, answer = first[0], context[first[0] : last[1]].strip()
    start = context.index(answer, start)
    stride = 6
    f = prepare_qa_features(
        qa_tokenizer, [QUESTION], [context], doc_stride=stride, answer_starts=[start], answer_texts=[answer], **kwargs
    )
    readable = [[o for o in offsets if o is not None] for offsets in f["offset_mapping"]]
    assert all(len(window) == budget for window in readable[:-1])
    for window, following in zip(readable, readable[1:]):
        assert window[-stride:] == following[:stride]  # the shared tokens
    labelled = [i for i, s in enumerate(f["start_positions"]) if f["offset_mapping"][i][s] is not None]
    assert labelled == [1], "the answer crossing the first boundary must be whole in the second window only"
    assert _decode_label(qa_tokenizer, f, 1) == answer
    # the same answer without overlap: no window holds it whole (the regression the overlap prevents)
    g = prepare_qa_features(
        qa_tokenizer, [QUESTION], [context], doc_stride=0, answer_starts=[start], answer_texts=[answer], **kwargs
    )
    assert all(g["offset_mapping"][i][s] is None for i, s in enumerate(g["start_positions"]))


# ---------------------------------------------------------------- align_to_words, the null answer


def test_word_offsets_span_whole_words(qa_tokenizer):
    context = "Cystic fibrosis results from mutations in the CFTR chloride channel of pancreatic islets."
    plain = prepare_qa_features(qa_tokenizer, [QUESTION], [context], max_seq_len=64)
    words = prepare_qa_features(qa_tokenizer, [QUESTION], [context], max_seq_len=64, align_to_words=True)
    split = 0
    for token, word in zip(plain["offset_mapping"][0], words["offset_mapping"][0]):
        if token is None:
            assert word is None
            continue
        assert word[0] <= token[0] and token[1] <= word[1]
        text = context[word[0] : word[1]].strip()
        assert text and " " not in text  # one whole word
        split += word != token
    assert split > 0, "the test tokenizer should split some word into several tokens"


def test_the_null_answer_competes_only_when_asked():
    context = "alpha beta gamma"
    offsets = [None, None, (0, 5), (5, 10), (10, 16)]  # position 1: the "no answer" separator
    s, e = np.zeros(5), np.zeros(5)
    s[1] = e[1] = 10.0  # the model says: no answer here
    s[3] = e[3] = 4.0
    (best,) = extract_answers(context, [s], [e], [offsets])
    assert best["answer"] == "beta"  # without the null answer the best span wins, however weak
    ranked = extract_answers(context, [s], [e], [offsets], top_k=3, null_indices=[1])
    assert ranked[0] == {"score": ranked[0]["score"], "start": 0, "end": 0, "answer": ""}
    assert ranked[0]["score"] > 0.99 and ranked[1]["answer"] == "beta"
    # two windows: the null score is the one of the window least sure there is no answer
    s2, e2 = np.zeros(5), np.zeros(5)
    s2[4] = e2[4] = 10.0  # the second window is sure of "gamma"
    ranked = extract_answers(context, [s, s2], [e, e2], [offsets, offsets], top_k=20, null_indices=[1, 1])
    assert ranked[0]["answer"] == "gamma"
    (null,) = [a for a in ranked if a["answer"] == ""]
    assert null["score"] == pytest.approx((1 / (3 + np.exp(10.0))) ** 2)  # p(null)^2 of the second window


# ---------------------------------------------------------------- inference levers: length buckets, compiled forward


def _tiny_qa_model(family: str, vocab_size: int):
    import torch
    from helpers import tiny_bert_qa, tiny_config, tiny_mamba2_config

    from biomamba_hf import MambaForQuestionAnswering
    from biomamba_hf.modeling import Mamba2ForQuestionAnswering

    torch.manual_seed(0)
    if family == "bert":
        return tiny_bert_qa(vocab_size).eval()
    qa_class, make_config = {
        "mamba": (MambaForQuestionAnswering, tiny_config),
        "mamba2": (Mamba2ForQuestionAnswering, tiny_mamba2_config),
    }[family]
    return qa_class(make_config(vocab_size)).eval()


@pytest.mark.parametrize("family", ["mamba", "mamba2", "bert"])
def test_bucket_padding_leaves_the_logits_of_real_positions_unchanged(family):
    """fp32 on a CPU: windows of 45 tokens (one with its own padding after 30) padded on the right to the bucket of
    64. Mamba and Mamba-2 read left to right, BERT masks the padded keys: every real position's start and end logits
    agree within 1e-6 (measured: ~2e-7, matrix products of another length sum in another order)."""
    import torch

    from biomamba_hf.qa import pad_to_bucket

    model = _tiny_qa_model(family, 100)
    ids = torch.randint(2, 100, (3, 45), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[1, 30:], mask[1, 30:] = 1, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if family == "bert":
        batch["token_type_ids"] = (torch.arange(45) >= 10).long().expand(3, -1)
    padded = pad_to_bucket(batch, 64, 384, {"input_ids": 1, "attention_mask": 0, "token_type_ids": 0})
    assert padded["input_ids"].shape == (3, 64) and padded["attention_mask"][:, 45:].eq(0).all()
    with torch.no_grad():
        plain, bucketed = model(**batch), model(**padded)
    real = mask.bool()
    for name in ("start_logits", "end_logits"):
        expected, got = getattr(plain, name), getattr(bucketed, name)[:, :45]
        torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-6)


def test_bucket_lengths_and_their_errors():
    from biomamba_hf.qa import bucket_length, check_pad_to_multiple_of

    assert [bucket_length(n, 64, 384) for n in (1, 64, 65, 383, 384)] == [64, 64, 128, 384, 384]
    assert bucket_length(370, 64, 350) == 370  # never shorter than the window
    assert bucket_length(37, None, 384) == bucket_length(37, 1, 384) == 37
    for bad in (0, -64, 1.5, True, "64"):
        with pytest.raises(ValueError, match=r"pad_to_multiple_of must be a positive integer \(e.g. 64\) or None"):
            check_pad_to_multiple_of(bad)


def test_compiled_module_calls_are_scoped_to_the_block():
    """The compiled forward runs only inside the block and the model is left as it was: pins the attribute of
    ``nn.Module`` (``_compiled_call_impl``, set by ``nn.Module.compile``) that the lever relies on."""
    import torch
    from transformers import CompileConfig

    from biomamba_hf.qa import compiled_module_calls

    model = _tiny_qa_model("bert", 100)
    assert model._compiled_call_impl is None
    torch._dynamo.reset()  # fresh compile caches: every test's models share nn.Module._call_impl
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    ids = torch.randint(2, 100, (2, 16))
    with torch.no_grad():
        plain = model(input_ids=ids).start_logits
        with compiled_module_calls(model, CompileConfig(backend=backend, mode=None)):
            compiled = model(input_ids=ids).start_logits
        assert graphs and model._compiled_call_impl is None
        count = len(graphs)
        model(input_ids=ids)
        assert len(graphs) == count  # outside the block: eager
    torch.testing.assert_close(compiled, plain)


def test_a_deep_copy_compiles_its_own_forward():
    """The compiled-forward cache is copied with the module's __dict__: the copy must not run the original."""
    import copy

    import torch
    from transformers import CompileConfig

    from biomamba_hf.qa import compiled_module_calls

    model = _tiny_qa_model("bert", 100)
    config = CompileConfig(backend="eager", mode=None)
    ids = torch.randint(2, 100, (2, 16))
    torch._dynamo.reset()
    with torch.no_grad():
        with compiled_module_calls(model, config):
            model(input_ids=ids)
        clone = copy.deepcopy(model)
        clone.qa_outputs.bias.add_(5.0)  # the copy's answers differ from the original's
        with compiled_module_calls(clone, config):
            got = clone(input_ids=ids).start_logits
        torch.testing.assert_close(got, clone(input_ids=ids).start_logits)
    assert all(key[0] == id(clone) for key in clone.__dict__["_biomamba_compiled_calls"])


@pytest.mark.parametrize("family", ["mamba", "bert"])
def test_predict_nbest_with_buckets_and_compile_gives_the_same_answers(family, qa_tokenizer, bert_tokenizer, tmp_path):
    """The Trainer path: windows padded to buckets of 16 (and, for BERT, a compiled forward with an eager backend,
    its logits copied per batch) give the plain path's candidates and probabilities."""
    import torch
    from transformers import Trainer, TrainingArguments

    from biomamba_hf.qa import predict_nbest
    from biomamba_hf.trainer import padding_collator

    tokenizer = bert_tokenizer if family == "bert" else qa_tokenizer
    model = _tiny_qa_model(family, len(tokenizer))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none")
    trainer = Trainer(model=model, args=args, data_collator=padding_collator(tokenizer))
    rows = [
        {"id": "a", "question": QUESTION, "context": CONTEXT * 3},
        {"id": "b", "question": "What is channelled?", "context": "Chloride."},
        {"id": "c", "question": "Which gene?", "context": CONTEXT},
    ]
    options = {
        "layout": "pair" if family == "bert" else "question_first",
        "max_seq_length": 40,
        "doc_stride": 10,
        "max_question_length": 16,
        "n_best_size": 4,
        "max_answer_length": 5,
    }
    plain = predict_nbest(trainer, rows, tokenizer, **options)
    torch._dynamo.reset()  # fresh compile caches: every test's models share nn.Module._call_impl
    levers = [{"pad_to_multiple_of": 16}]
    if family == "bert":
        levers.append({"compile": {"backend": "eager", "mode": None}})
    for lever in levers:
        got = predict_nbest(trainer, rows, tokenizer, **options, **lever)
        assert got.keys() == plain.keys()
        for key, candidates in plain.items():
            assert [(c["text"], c["start"]) for c in got[key]] == [(c["text"], c["start"]) for c in candidates]
            assert [c["probability"] for c in got[key]] == pytest.approx([c["probability"] for c in candidates])
    assert trainer.preprocess_logits_for_metrics is None and model._compiled_call_impl is None


@pytest.mark.parametrize("family", ["mamba", "mamba2", "bert"])
def test_the_portable_forwards_compile_without_graph_breaks(family, monkeypatch):
    """The compile lever on a machine without the kernels: the QA forward of every family is one graph (a logger call
    in the Mamba-2 path broke it at every layer). Counted with dynamo's own counters, eager backend."""
    import warnings

    import torch
    from torch._dynamo.utils import counters

    from biomamba_hf.ops import ssd

    monkeypatch.setattr(ssd, "_logged", False)  # as in a fresh process: the code path is not logged yet
    model = _tiny_qa_model(family, 100)
    ids = torch.randint(2, 100, (2, 16))
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's notes on transformers' lru_cache helpers
        got = torch.compile(model, backend="eager")(input_ids=ids, attention_mask=torch.ones_like(ids)).start_logits
    breaks = dict(counters["graph_break"])
    assert not breaks, breaks
    torch.testing.assert_close(got, model(input_ids=ids, attention_mask=torch.ones_like(ids)).start_logits)
