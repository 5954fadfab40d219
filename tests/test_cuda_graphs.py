"""The CUDA-graph inference lever (biomamba_hf.cuda_graphs).

On a CPU the capture is simulated (``SimulatedGraphCalls``: "capture" runs the forward once and keeps its output
tensors, "replay" runs it again on the captured input buffers and writes into those output tensors, as a replayed
graph does), which tests everything but CUDA itself: one graph per signature, inputs copied into the buffers,
outputs copied out, the wiring through the pipeline and ``predict_nbest``. The ``gpu`` tests capture real graphs of
tiny Mamba, Mamba-2 and BERT QA models (with mamba-ssm's kernels where installed) and run on the GPU machine.
"""

import pytest
import torch
from helpers import tiny_bert_qa, tiny_config, tiny_mamba2_config
from transformers import pipeline
from transformers.modeling_outputs import QuestionAnsweringModelOutput

import biomamba_hf.cuda_graphs as cuda_graphs
from biomamba_hf import MambaForQuestionAnswering, prepare_tokenizer_for_qa
from biomamba_hf.cuda_graphs import CUDAGraphCalls, check_cuda_graphs, check_one_graph_lever
from biomamba_hf.modeling import Mamba2ForQuestionAnswering
from biomamba_hf.qa import inference_levers

QUESTION = "Which gene is mutated in cystic fibrosis?"
FILLER = "Insulin is secreted by beta cells of the pancreatic islets. "
CONTEXT = FILLER * 6 + "Cystic fibrosis results from mutations in the CFTR chloride channel. " + FILLER * 2
EXAMPLES = [
    {"question": QUESTION, "context": CONTEXT},
    {"question": "What do beta cells secrete?", "context": FILLER},
    {"question": "Which channel?", "context": "CFTR is a chloride channel."},
]


def _copy_into(target, source):
    if isinstance(target, torch.Tensor):
        target.copy_(source)
    elif isinstance(target, dict):
        for key in target:
            _copy_into(target[key], source[key])
    elif isinstance(target, (tuple, list)):
        for t, s in zip(target, source):
            _copy_into(t, s)


class SimulatedGraphCalls(CUDAGraphCalls):
    """CUDAGraphCalls on a CPU: a replay recomputes from the captured input buffers into the captured outputs."""

    device_type = "cpu"

    def _new_graph(self, args, kwargs, device):
        output = self._run(args, kwargs)

        def replay():
            _copy_into(output, self._run(args, kwargs))

        return replay, output


def _model(family: str, vocab_size: int = 120, device="cpu", **overrides):
    torch.manual_seed(0)
    if family == "bert":
        return tiny_bert_qa(vocab_size).to(device).eval()
    qa_class, make_config = {
        "mamba": (MambaForQuestionAnswering, tiny_config),
        "mamba2": (Mamba2ForQuestionAnswering, tiny_mamba2_config),
    }[family]
    return qa_class(make_config(vocab_size, **overrides)).to(device).eval()


def _ids(batch, length, seed, device="cpu"):
    return torch.randint(2, 120, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------------------------------------- the graph cache, CPU


def test_one_graph_per_shape_and_every_replay_reads_the_new_inputs():
    model = _model("mamba")
    calls = SimulatedGraphCalls(model)
    shapes = [(2, 16, 0), (2, 16, 1), (3, 24, 2), (2, 16, 3)]
    with torch.no_grad():
        for batch, length, seed in shapes:
            ids = _ids(batch, length, seed)
            got = calls(input_ids=ids, attention_mask=torch.ones_like(ids))
            expected = model(input_ids=ids, attention_mask=torch.ones_like(ids))
            assert type(got) is QuestionAnsweringModelOutput
            torch.testing.assert_close(got.start_logits, expected.start_logits, rtol=0, atol=0)
            torch.testing.assert_close(got.end_logits, expected.end_logits, rtol=0, atol=0)
    assert (calls.captures, calls.replays) == (2, 4)


def test_replaced_weights_drop_the_graphs_and_in_place_updates_do_not():
    """A graph reads weights at their capture-time addresses: an in-place update is seen by the next replay, a
    replaced tensor (model.to, a LoRA merge) would be freed memory, so every graph is dropped and captured anew."""
    model = _model("mamba")
    calls = SimulatedGraphCalls(model)
    ids = _ids(2, 16, 0)
    with torch.no_grad():
        calls(input_ids=ids)
        model.qa_outputs.weight.mul_(2.0)  # in place, as an optimizer step
        got = calls(input_ids=ids)
        assert calls.captures == 1
        torch.testing.assert_close(got.start_logits, model(input_ids=ids).start_logits, rtol=0, atol=0)
        model.qa_outputs.weight = torch.nn.Parameter(model.qa_outputs.weight.detach() + 1.0)  # a new tensor
        got = calls(input_ids=ids)
        assert calls.captures == 2
        torch.testing.assert_close(got.start_logits, model(input_ids=ids).start_logits, rtol=0, atol=0)
        model.to(torch.float64)
        got = calls(input_ids=ids)
        assert calls.captures == 3 and got.start_logits.dtype == torch.float64


def test_a_copied_or_pickled_model_starts_with_no_graphs():
    import copy
    import pickle

    model = _model("mamba")
    model.__dict__["_biomamba_cuda_graph_calls"] = calls = CUDAGraphCalls(model)
    calls._graphs[("a key",)] = ("buffers", "replay", "output")  # what a capture leaves (not copyable on a GPU)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        cloned_calls = clone.__dict__["_biomamba_cuda_graph_calls"]
        assert cloned_calls.module is clone and cloned_calls._graphs == {} and cloned_calls.captures == 0
    assert calls._graphs  # the original keeps its graphs


def test_returned_outputs_are_copies_not_the_graph_buffers():
    model = _model("mamba2")
    calls = SimulatedGraphCalls(model)
    with torch.no_grad():
        first = calls(input_ids=_ids(2, 16, 0))
        kept = first.start_logits.clone()
        calls(input_ids=_ids(2, 16, 1))  # a replay overwrites the graph's output buffers
    torch.testing.assert_close(first.start_logits, kept, rtol=0, atol=0)


def test_keyword_order_does_not_matter_and_constants_are_part_of_the_key():
    model = _model("bert")
    calls = SimulatedGraphCalls(model)
    ids, other = _ids(2, 12, 0), _ids(2, 12, 1)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        calls(input_ids=ids, attention_mask=torch.ones_like(ids))
        got = calls(attention_mask=mask, input_ids=other)  # same signature, other order, other values
        torch.testing.assert_close(got.start_logits, model(input_ids=other, attention_mask=mask).start_logits)
        assert calls.captures == 1
        as_tuple = calls(input_ids=ids, attention_mask=mask, return_dict=False)
        assert calls.captures == 2 and isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], model(input_ids=ids, attention_mask=mask).start_logits)


def test_refuses_gradients_foreign_devices_and_unsupported_arguments():
    model = _model("mamba")
    ids = _ids(1, 8, 0)
    with pytest.raises(RuntimeError, match=r"cuda_graphs is an inference lever.*torch.no_grad\(\)"):
        SimulatedGraphCalls(model)(input_ids=ids)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"input 'input_ids' is on cpu; CUDA graphs replay on the GPU"):
            CUDAGraphCalls(model)(input_ids=ids)
        with pytest.raises(ValueError, match=r"argument 'input_ids' is a list; .* tensors and constants"):
            SimulatedGraphCalls(model)(input_ids=[[1, 2, 3]])
    with pytest.raises(ValueError, match="warmup_calls must be a positive integer"):
        CUDAGraphCalls(model, warmup_calls=0)


def test_check_cuda_graphs_and_one_graph_lever():
    assert check_cuda_graphs(None, "cpu") is False and check_cuda_graphs(False, "cpu") is False
    with pytest.raises(ValueError, match=r"cuda_graphs needs the model on a CUDA device, but it runs on cpu"):
        check_cuda_graphs(True, "cpu")
    with pytest.raises(ValueError, match=r"--cuda_graphs_inference needs the model on a CUDA device"):
        check_cuda_graphs(True, torch.device("cpu"), "--cuda_graphs_inference")
    with pytest.raises(ValueError, match="cuda_graphs must be True or False, got 'yes'"):
        check_cuda_graphs("yes", "cuda")
    from transformers import CompileConfig

    with pytest.raises(ValueError, match="Pass either compile or cuda_graphs, not both"):
        check_one_graph_lever(CompileConfig(), True)
    check_one_graph_lever(CompileConfig(), False)
    check_one_graph_lever(None, True)


def test_module_calls_are_scoped_to_the_block():
    model = _model("mamba")
    simulated = model.__dict__["_biomamba_cuda_graph_calls"] = SimulatedGraphCalls(model)
    with torch.no_grad():
        with inference_levers(model, cuda_graphs=True):
            model(input_ids=_ids(1, 8, 0))
        assert model._compiled_call_impl is None
        model(input_ids=_ids(1, 8, 0))
    assert (simulated.captures, simulated.replays) == (1, 1)
    with inference_levers(model):
        assert model._compiled_call_impl is None


# ---------------------------------------------------------------------------- wiring: pipeline and predict_nbest, CPU


@pytest.fixture
def simulated_graphs(monkeypatch):
    """Let the lever run on a CPU: the device check passes and every model gets SimulatedGraphCalls."""
    import biomamba_hf.pipelines as pipelines

    monkeypatch.setattr(pipelines, "check_cuda_graphs", lambda enabled, device, name="cuda_graphs": bool(enabled))
    monkeypatch.setattr(cuda_graphs, "check_cuda_graphs", lambda enabled, device, name="cuda_graphs": bool(enabled))

    def simulated(model):
        return model.__dict__.setdefault("_biomamba_cuda_graph_calls", SimulatedGraphCalls(model))

    monkeypatch.setattr(cuda_graphs, "cuda_graph_calls", simulated)
    return simulated


def _ranked(answers):
    return [[(a["answer"], a["start"], a["end"], round(a["score"], 6)) for a in ranked] for ranked in answers]


@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_the_pipeline_replays_one_graph_per_bucket_shape(family, tokenizer, simulated_graphs):
    prepare_tokenizer_for_qa(tokenizer)
    qa = pipeline("question-answering", model=_model(family, len(tokenizer)), tokenizer=tokenizer, device="cpu")
    options = {"top_k": 3, "max_seq_len": 40, "doc_stride": 10, "batch_size": 3, "pad_to_multiple_of": 16}
    eager = qa(EXAMPLES, **options)
    graphed = qa(EXAMPLES, cuda_graphs=True, **options)
    assert _ranked(graphed) == _ranked(eager)
    calls = simulated_graphs(qa.model)
    assert calls.replays >= calls.captures >= 1
    assert qa.model._compiled_call_impl is None


def test_the_pipeline_refuses_graphs_on_a_cpu_and_with_compile(tokenizer):
    prepare_tokenizer_for_qa(tokenizer)
    model = _model("mamba", len(tokenizer))
    with pytest.raises(ValueError, match=r"cuda_graphs needs the model on a CUDA device, but it runs on cpu"):
        pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu", cuda_graphs=True)
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match=r"cuda_graphs needs the model on a CUDA device"):
        qa(question=QUESTION, context=CONTEXT, cuda_graphs=True)


def test_predict_nbest_with_graphs_gives_the_same_answers(tokenizer, tmp_path, simulated_graphs):
    from transformers import Trainer, TrainingArguments

    from biomamba_hf.qa import predict_nbest
    from biomamba_hf.trainer import padding_collator

    qa_tokenizer = prepare_tokenizer_for_qa(tokenizer)
    model = _model("mamba", len(qa_tokenizer))
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args, data_collator=padding_collator(qa_tokenizer))
    rows = [
        {"id": "a", "question": QUESTION, "context": CONTEXT * 3},
        {"id": "b", "question": "What is channelled?", "context": "Chloride."},
    ]
    options = {"layout": "question_first", "max_seq_length": 40, "doc_stride": 10, "max_question_length": 16}
    eager = predict_nbest(trainer, rows, qa_tokenizer, pad_to_multiple_of=16, **options)
    graphed = predict_nbest(trainer, rows, qa_tokenizer, cuda_graphs=True, **options)  # buckets of 64: cap 40
    assert {k: [(c["text"], c["start"]) for c in v] for k, v in graphed.items()} == {
        k: [(c["text"], c["start"]) for c in v] for k, v in eager.items()
    }
    assert simulated_graphs(model).captures >= 1 and model._compiled_call_impl is None
    with pytest.raises(ValueError, match="Pass either compile or cuda_graphs, not both"):
        predict_nbest(trainer, rows, qa_tokenizer, cuda_graphs=True, compile=True, **options)


# ---------------------------------------------------------------------------------------------- real graphs, GPU


#: A tiny Mamba-2 the kernels take: causal-conv1d wants the in_proj width (2 x 128 + 2 x 16 + 8 heads = 296) a
#: multiple of 8, mamba-ssm's Triton kernels chunks of at least 16 tokens.
MAMBA2_KERNEL_SHAPE = {"hidden_size": 64, "head_dim": 16, "num_heads": 8, "chunk_size": 16}


def gpu(test):
    return pytest.mark.gpu(
        pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")(test)
    )


@gpu
@pytest.mark.parametrize("family", ["mamba", "mamba2", "bert"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_replays_equal_the_eager_forward(family, dtype):
    overrides = {"bert": {}, "mamba": {}, "mamba2": MAMBA2_KERNEL_SHAPE}[family]
    model = _model(family, device="cuda", **overrides).to(dtype)
    calls = CUDAGraphCalls(model)
    with torch.inference_mode():
        for batch, length, seed in [(4, 64, 0), (4, 64, 1), (2, 128, 2), (4, 64, 3)]:
            ids = _ids(batch, length, seed, "cuda")
            mask = torch.ones_like(ids)
            mask[-1, length // 2 :] = 0  # right padding in one row
            got = calls(input_ids=ids, attention_mask=mask)
            expected = model(input_ids=ids, attention_mask=mask)
            torch.testing.assert_close(got.start_logits, expected.start_logits, rtol=0, atol=0)
            torch.testing.assert_close(got.end_logits, expected.end_logits, rtol=0, atol=0)
    assert (calls.captures, calls.replays) == (2, 4)


@gpu
def test_gpu_pipeline_answers_equal_with_graphs(tokenizer):
    prepare_tokenizer_for_qa(tokenizer)
    model = _model("mamba2", len(tokenizer), device="cuda", **MAMBA2_KERNEL_SHAPE)
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=0)
    options = {"top_k": 3, "max_seq_len": 40, "doc_stride": 10, "batch_size": 3, "pad_to_multiple_of": 16}
    eager = qa(EXAMPLES, **options)
    assert _ranked(qa(EXAMPLES, cuda_graphs=True, **options)) == _ranked(eager)


def test_run_qa_refuses_what_the_graph_lever_cannot_do_before_any_work(tmp_path):
    from helpers import example_script

    base = ["--model_name_or_path", "some/model", "--output_dir", str(tmp_path / "out"), "--do_eval"]
    with example_script("run_qa") as module:
        with pytest.raises(ValueError, match="Pass either --compile_inference or --cuda_graphs_inference, not both"):
            module.parse_args([*base, "--compile_inference", "--cuda_graphs_inference"])
        with pytest.raises(
            ValueError, match=r"--cuda_graphs_inference needs the model on a CUDA device, but it runs on cpu"
        ):
            module.main([*base, "--cuda_graphs_inference", "--use_cpu"])
    assert not (tmp_path / "out").exists()
