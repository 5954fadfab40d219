"""An extractive question-answering pipeline, registered as the ``"question-answering"`` task.

transformers >= 5.3 removed its own question-answering pipeline; after ``import biomamba_hf``,
``transformers.pipeline("question-answering", model=...)`` builds :class:`QuestionAnsweringPipeline` on every
transformers 5.x. It serves Mamba and Mamba-2 QA checkpoints (reading ``config.qa_layout``) and BERT-style QA models
alike; a ``MambaForCausalLM``/``Mamba2ForCausalLM`` folder loads with a new QA head (to be fine-tuned).

>>> from transformers import pipeline  # doctest: +SKIP
>>> qa = pipeline("question-answering", model="path/to/biomamba-qa")  # doctest: +SKIP
>>> qa(question="Which gene is mutated in cystic fibrosis?", context="Cystic fibrosis is caused by CFTR mutations.")
... # doctest: +SKIP
{'score': 0.93, 'start': 29, 'end': 33, 'answer': 'CFTR'}
"""

from __future__ import annotations

import copy
import reprlib
from collections.abc import Iterable
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering
from transformers.pipelines.base import ChunkPipeline

from .cuda_graphs import check_cuda_graphs
from .modeling import QA_LAYOUTS
from .qa import (
    DEFAULT_BUCKET_MULTIPLE,
    check_pad_to_multiple_of,
    extract_answers,
    inference_compile_config,
    inference_levers,
    pad_to_bucket,
    pad_values_for,
    prepare_qa_features,
    resolve_layout,
)
from .tokenization import prepare_tokenizer_for_qa


class SafetensorsAutoModelForQuestionAnswering(AutoModelForQuestionAnswering):
    """``AutoModelForQuestionAnswering`` under the package's loading policy, for ``pipeline("question-answering")``.

    Weights load from safetensors only and ``trust_remote_code`` is refused (see
    :func:`biomamba_hf.reliability.from_pretrained_safely`); pass ``model_kwargs={"use_safetensors": False}`` to
    ``pipeline()`` to opt in to pickle weights from a source you trust.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        from .reliability import from_pretrained_safely

        allow_pickle = kwargs.pop("use_safetensors", None) is False
        try:
            return from_pretrained_safely(
                AutoModelForQuestionAnswering,
                pretrained_model_name_or_path,
                allow_pickle=allow_pickle,
                **kwargs,
            )
        except ValueError as err:
            if allow_pickle or "pickle" not in str(err):
                raise
            raise ValueError(f"{err} With pipeline(), opt in with model_kwargs={{'use_safetensors': False}}.") from err


#: What every refused call form is told to pass instead.
EXPECTED_INPUTS = (
    "pass a question string and a context string (`question=`, `context=`; lists of strings for several), "
    "a dict {'question': ..., 'context': ...}, or a non-empty list of such dicts"
)


def _as_strings(name: str, value) -> list:
    """``question=``/``context=`` given as a list: a non-empty list (or other iterable) of its values."""
    if value is None or isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise ValueError(f"`{name}` is {reprlib.repr(value)} (type {type(value).__name__}): {EXPECTED_INPUTS}.")
    values = list(value)
    if not values:
        raise ValueError(f"`{name}` is an empty list: {EXPECTED_INPUTS}.")
    return values


def _is_qa_model(model) -> bool:
    return type(model).__name__.endswith("ForQuestionAnswering")


class QuestionAnsweringPipeline(ChunkPipeline):
    """Extractive QA: find the span of ``context`` that answers ``question``.

    Call it with ``question=`` and ``context=`` (strings or equally long lists), a dict with those keys, or a list of
    such dicts. Each answer is a dict ``{"score", "start", "end", "answer"}`` where
    ``context[start:end] == answer``. With ``top_k == 1`` one dict is returned per question, otherwise a list of up
    to ``top_k`` dicts, best first.

    Parameters (at construction or per call):
        top_k (`int`, defaults to 1): number of ranked answers per question (BioASQ factoid evaluation uses 5).
        max_answer_len (`int`, defaults to 15): longest answer, in tokens.
        max_seq_len (`int`, defaults to 384): tokens per model window (question, separators and context).
        doc_stride (`int`, defaults to 128): context tokens shared by consecutive windows of a long context.
        max_question_len (`int`, defaults to 64): questions are cut to this many tokens.
        align_to_words (`bool`, defaults to True): answers start and end on word boundaries (the fast tokenizer's
            word ids), as in transformers' former pipeline; False reads them at token boundaries.
        handle_impossible_answer (`bool`, defaults to False): the null answer ``{"answer": "", "start": 0,
            "end": 0}`` competes with the spans, scored at the "no answer in this window" position where training
            labels windows without an answer (the separator after the question for Mamba layouts, ``[CLS]`` for
            BERT-style models; see :func:`biomamba_hf.qa.extract_answers`). Meaningful for models trained with
            no-answer examples.
        batch_size (`int`): windows per forward pass (a pipeline argument).

    Inference levers (answers do not change; the same levers for Mamba, Mamba-2 and BERT-style models):
        pad_to_multiple_of (`int`, optional): pad each batch of windows on the right to a length bucket, the next
            multiple of this many tokens, at most ``max_seq_len`` (:func:`biomamba_hf.qa.bucket_length`), so that a
            compiled forward sees a few shapes. Right padding leaves every real position of a left-to-right model
            unchanged; a BERT-style model masks the padded keys; spans are never read from padding. Defaults to 64
            when ``compile`` is on, else off.
        compile (`bool`, `transformers.CompileConfig` or `dict`, defaults to False): run the model's forward
            through ``torch.compile`` (:func:`biomamba_hf.qa.compiled_module_calls`, the same lever as run_qa's
            ``--compile_inference``). ``True`` is ``CompileConfig()``: inductor with
            ``mode="reduce-overhead"``, CUDA graphs on a GPU; pass ``{"backend": "eager"}`` to only check that a
            model compiles. The first calls at each new shape compile (seconds to minutes): time after a warm-up.
        cuda_graphs (`bool`, defaults to False): capture the forward as one CUDA graph per batch shape and replay it
            (:class:`biomamba_hf.cuda_graphs.CUDAGraphCalls`; the same lever as run_qa's ``--cuda_graphs_inference``).
            Captures whatever kernels run (mamba-ssm's included, where ``torch.compile`` breaks the graph), so a
            forward costs one launch (measured gains in BENCHMARKS.md). Needs the model on a CUDA device; not
            together with ``compile`` (whose default mode already uses CUDA graphs). Buckets of 64 by default.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False
    default_input_names = "question,context"

    def __init__(self, model, tokenizer=None, **kwargs):
        if not _is_qa_model(model):
            raise ValueError(
                f"{type(model).__name__} has no question-answering head. Load the model with "
                "`AutoModelForQuestionAnswering.from_pretrained(...)` (after `import biomamba_hf`) or pass the "
                "checkpoint name/folder to `pipeline('question-answering', model=...)`."
            )
        if tokenizer is None:
            raise ValueError("The question-answering pipeline needs a tokenizer: pass `tokenizer=`.")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"The question-answering pipeline needs a fast tokenizer with offset mappings, got "
                f"{type(tokenizer).__name__}. Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
            )
        self.layout = resolve_layout(model.config)
        if self.layout in QA_LAYOUTS and (tokenizer.sep_token is None or tokenizer.pad_token is None):
            # A tokenizer saved with a causal-LM checkpoint: give it the tokens QA needs (as training would).
            prepare_tokenizer_for_qa(tokenizer)
            vocab = model.get_input_embeddings().num_embeddings
            if max(tokenizer.sep_token_id, tokenizer.pad_token_id) >= vocab:
                raise ValueError(
                    f"The tokenizer needs a separator token but the model's {vocab} embeddings have no room for it. "
                    "Call `biomamba_hf.prepare_tokenizer_for_qa(tokenizer, model)` (it resizes the embeddings) and "
                    "fine-tune the model before using it for QA."
                )
        if tokenizer.padding_side != "right":
            # Windows are batched by padding after them: positions (and the offsets spans are read with) stay put.
            tokenizer = copy.copy(tokenizer)
            tokenizer.padding_side = "right"
        super().__init__(model=model, tokenizer=tokenizer, **kwargs)
        self._pad_values = pad_values_for(self.tokenizer)  # what pad_to_multiple_of pads each input with

    def _sanitize_parameters(
        self,
        top_k=None,
        max_answer_len=None,
        max_seq_len=None,
        doc_stride=None,
        max_question_len=None,
        align_to_words=None,
        handle_impossible_answer=None,
        pad_to_multiple_of=None,
        compile=None,
        cuda_graphs=None,
        **kwargs,
    ):
        preprocess_params = {}
        forward_params = {}
        if pad_to_multiple_of is not None:
            forward_params["pad_to_multiple_of"] = check_pad_to_multiple_of(pad_to_multiple_of)
        if compile is not None:
            forward_params["compile_config"] = inference_compile_config(compile)
        if cuda_graphs is not None:
            forward_params["cuda_graphs"] = check_cuda_graphs(cuda_graphs, self.model.device)
        if max_seq_len is not None:
            forward_params["max_seq_len"] = max_seq_len  # the largest bucket
        if align_to_words is not None:
            if not isinstance(align_to_words, bool):
                raise ValueError(f"align_to_words must be True or False, got {align_to_words!r}.")
            preprocess_params["align_to_words"] = align_to_words
        for name, value in (
            ("max_seq_len", max_seq_len),
            ("doc_stride", doc_stride),
            ("max_question_len", max_question_len),
        ):
            if value is not None:
                if not isinstance(value, int) or value < (0 if name == "doc_stride" else 1):
                    raise ValueError(f"{name} must be a positive integer, got {value!r}.")
                preprocess_params[name] = value
        postprocess_params = {}
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        if max_answer_len is not None:
            if not isinstance(max_answer_len, int) or max_answer_len < 1:
                raise ValueError(f"max_answer_len must be a positive integer, got {max_answer_len!r}.")
            postprocess_params["max_answer_len"] = max_answer_len
        if handle_impossible_answer is not None:
            if not isinstance(handle_impossible_answer, bool):
                raise ValueError(f"handle_impossible_answer must be True or False, got {handle_impossible_answer!r}.")
            postprocess_params["handle_impossible_answer"] = handle_impossible_answer
        return preprocess_params, forward_params, postprocess_params

    @staticmethod
    def _normalize_inputs(args, kwargs) -> tuple[dict | list[dict], bool]:
        """Turn the accepted call forms into one example dict or a list of them (and say which)."""
        if args and ("question" in kwargs or "context" in kwargs):
            raise ValueError(f"Pass either positional inputs or `question=`/`context=`, not both; {EXPECTED_INPUTS}.")
        if not args:
            problems = [
                f"`{name}=` is missing" if name not in kwargs else f"`{name}` is None"
                for name in ("question", "context")
                if kwargs.get(name) is None
            ]
            if problems:
                given = ", ".join(f"{k}={reprlib.repr(kwargs[k])}" for k in ("question", "context") if k in kwargs)
                raise ValueError(f"qa({given}): {' and '.join(problems)}; {EXPECTED_INPUTS}.")
            question, context = kwargs.pop("question"), kwargs.pop("context")
            if isinstance(question, str) and isinstance(context, str):
                return {"question": question, "context": context}, False
            questions = [question] * len(context) if isinstance(question, str) else _as_strings("question", question)
            contexts = [context] * len(questions) if isinstance(context, str) else _as_strings("context", context)
            if len(questions) != len(contexts):
                raise ValueError(f"Got {len(questions)} questions and {len(contexts)} contexts; pass equally many.")
            return [{"question": q, "context": c} for q, c in zip(questions, contexts)], True
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            return {"question": args[0], "context": args[1]}, False
        if len(args) != 1:
            raise ValueError(f"Got {len(args)} positional inputs: {EXPECTED_INPUTS}.")
        inputs = args[0]
        if isinstance(inputs, dict):
            return inputs, False
        if isinstance(inputs, Iterable) and not isinstance(inputs, str):
            inputs = list(inputs)
            if not inputs:
                raise ValueError(f"qa([]): the list of inputs is empty; {EXPECTED_INPUTS}.")
            return inputs, True
        raise ValueError(
            f"Unsupported input {reprlib.repr(inputs)} of type {type(inputs).__name__}: {EXPECTED_INPUTS}."
        )

    def __call__(self, *args, **kwargs):
        inputs, batched = self._normalize_inputs(args, kwargs)
        for i, example in enumerate(inputs if batched else [inputs]):
            self._validate_example(example, i)
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _validate_example(example, index: int) -> None:
        if not isinstance(example, dict) or "question" not in example or "context" not in example:
            raise ValueError(f"Input {index} must be a dict with 'question' and 'context' keys, got {example!r:.80}.")
        for field in ("question", "context"):
            value = example[field]
            if not isinstance(value, str):
                raise ValueError(
                    f"Input {index}: `{field}` is {reprlib.repr(value)} (type {type(value).__name__}); pass a non-empty string."
                )
            if not value.strip():
                raise ValueError(f"Input {index}: `{field}` is empty; pass a non-empty string.")

    def preprocess(self, example, max_seq_len=384, doc_stride=128, max_question_len=64, align_to_words=True):
        features = prepare_qa_features(
            self.tokenizer,
            [example["question"]],
            [example["context"]],
            layout=self.layout,
            max_seq_len=max_seq_len,
            doc_stride=doc_stride,
            max_question_len=max_question_len,
            align_to_words=align_to_words,
        )
        model_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]
        num_windows = len(features["input_ids"])
        for w in range(num_windows):
            item = {k: torch.tensor([features[k][w]]) for k in model_keys}
            item["offset_mapping"] = features["offset_mapping"][w]
            item["null_index"] = features["null_index"][w]
            item["example"] = example
            item["is_last"] = w == num_windows - 1
            yield item

    def _forward(self, inputs, pad_to_multiple_of=None, compile_config=None, cuda_graphs=False, max_seq_len=384):
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs}
        if pad_to_multiple_of is None and (compile_config is not None or cuda_graphs):
            pad_to_multiple_of = DEFAULT_BUCKET_MULTIPLE
        if pad_to_multiple_of is not None:
            model_inputs = pad_to_bucket(model_inputs, pad_to_multiple_of, max_seq_len, self._pad_values)
        with inference_levers(self.model, compile_config, cuda_graphs):
            output = self.model(**model_inputs)
        return {
            "start_logits": output.start_logits,
            "end_logits": output.end_logits,
            "offset_mapping": inputs["offset_mapping"],
            "null_index": inputs["null_index"],
            "example": inputs["example"],
            "is_last": inputs["is_last"],
        }

    def postprocess(
        self, all_outputs: list[dict[str, Any]], top_k=1, max_answer_len=15, handle_impossible_answer=False
    ):
        context = all_outputs[0]["example"]["context"]
        answers = extract_answers(
            context,
            [o["start_logits"][0].float().numpy() for o in all_outputs],
            [o["end_logits"][0].float().numpy() for o in all_outputs],
            [o["offset_mapping"] for o in all_outputs],
            top_k=top_k,
            max_answer_len=max_answer_len,
            null_indices=[o["null_index"] for o in all_outputs] if handle_impossible_answer else None,
        )
        if top_k == 1:
            return answers[0] if answers else {"score": 0.0, "start": 0, "end": 0, "answer": ""}
        return answers
