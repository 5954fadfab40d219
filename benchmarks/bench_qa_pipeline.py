#!/usr/bin/env python
"""Table 3: extractive-QA pipeline questions/s at BioASQ shapes -- our Mamba QA pipeline vs a BERT-base QA model of
BioBERT's size served by the same pipeline machinery (``pipeline("question-answering")`` after
``import biomamba_hf``), on CPU or GPU, by batch size and dtype.

Inputs: the (question, context) pairs of BioASQ 4b's test batches (``--data_dir`` or ``BIOMAMBA_DATA_DIR``, folder
``bioasq/4b/test``), windows of 384 tokens, stride 128, as in BioBERT's evaluation. Tokenizers: Mamba reads with the
GPT-NeoX tokenizer of mamba-130m-hf (``tokenizers/gpt-neox-20b`` in the data folder); BERT reads with a cased
WordPiece tokenizer trained on the same contexts (BioBERT's 28,996-token vocabulary is not available offline; the
number of windows per question is what matters and is printed). Without the data folder both run on synthetic
biomedical text and tokenizers trained on it (said in the header). Weights are random (speed does not depend on them).

A second block times the bare model forward at the QA shape (32 x 384 tokens), separating model cost from pipeline
overhead (tokenisation, windowing, padding, span extraction).

Models: Mamba QA, Mamba-2 QA (both on the GPT-NeoX tokenizer) and BERT-base QA. Inference levers (``--levers``), the
same for every model: ``plain``; ``buckets``: ``pad_to_multiple_of=64``, windows padded on the right to a few lengths;
``compile``: buckets + ``compile=True``, ``torch.compile(mode="reduce-overhead")``, CUDA graphs on a GPU
(``--compile_backend eager`` for a CPU smoke run); ``cuda_graphs`` (GPU only): buckets + ``cuda_graphs=True``, one
CUDA graph captured per batch shape and replayed (``biomamba_hf.cuda_graphs``; it records mamba-ssm's kernels, where
compile breaks the graph). Every lever gets one untimed pass over all the questions first (it compiles or captures
every bucket shape), then ``--repeats`` timed passes. The code path of each Mamba model, the graph breaks of each
compiled model and the graphs captured are printed before the tables, and the answers of ``cuda_graphs`` are
compared with those of ``buckets`` (same shapes, eager). The bare forward is timed plain, compiled and graphed
(buckets change nothing at one fixed shape).

    python benchmarks/bench_qa_pipeline.py --data_dir path/to/shared/data --dtypes bfloat16 --batch_sizes 32  # GPU
    python benchmarks/bench_qa_pipeline.py --device cpu --size tiny --num_questions 8 --batch_sizes 4 \
        --dtypes float32 --compile_backend eager                                               # CPU smoke run
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SYNTHETIC = [
    "Aspirin irreversibly inhibits cyclooxygenase and reduces platelet aggregation.",
    "Mutations in the BRCA1 gene increase the risk of breast and ovarian cancer.",
    "Imatinib targets the BCR-ABL tyrosine kinase in chronic myeloid leukemia.",
    "Huntington's disease is caused by a CAG repeat expansion in the HTT gene.",
    "Metformin lowers hepatic glucose production in patients with type 2 diabetes.",
    "Cystic fibrosis results from mutations in the CFTR chloride channel.",
    "Dopamine neurons of the substantia nigra degenerate in Parkinson's disease.",
    "Randomized controlled trials (p < 0.05) showed a 23% reduction in mortality.",
]


MAMBA, MAMBA2, BERT = "Mamba QA", "Mamba-2 QA", "BERT-base QA"
MODELS = {"mamba": MAMBA, "mamba2": MAMBA2, "bert": BERT}
LEVERS = ("plain", "buckets", "compile", "cuda_graphs")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    parser.set_defaults(repeats=1, warmup=1)
    parser.add_argument("--data_dir", default=None, help="the shared data folder (default: $BIOMAMBA_DATA_DIR)")
    parser.add_argument("--size", default="130m", choices=sorted(common.MAMBA_SIZES), help=common.SIZE_HELP)
    parser.add_argument("--num_questions", type=int, default=256, help="(question, context) pairs timed")
    parser.add_argument("--batch_sizes", default="1,32", help="pipeline batch sizes (windows per forward)")
    parser.add_argument("--dtypes", default=None, help="default: float32,bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--max_seq_len", type=int, default=384)
    parser.add_argument("--doc_stride", type=int, default=128)
    parser.add_argument(
        "--levers",
        default=None,
        help=f"comma-separated, of {', '.join(LEVERS)} (default: all; without cuda_graphs on a CPU)",
    )
    parser.add_argument("--bucket", type=int, default=64, help="pad_to_multiple_of of the buckets and compile levers")
    parser.add_argument(
        "--compile_backend", default=None, help="torch.compile backend of the compile lever (default: inductor)"
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    if args.levers is None:
        args.levers = ",".join(lever for lever in LEVERS if lever != "cuda_graphs" or args.device.startswith("cuda"))
    args.levers = common.choices(parser, "--levers", args.levers, LEVERS)
    args.models = common.choices(parser, "--models", args.models, MODELS)
    if "bert" not in args.models:
        parser.error("--models must include bert: every ratio is against BERT-base")
    args.batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    if args.dtypes is None:
        args.dtypes = "float32,bfloat16" if args.device.startswith("cuda") else "float32"
    args.dtypes = args.dtypes.split(",")
    return args


def load_examples(data_dir: Path | None, num_questions: int) -> tuple[list[dict], list[dict], str]:
    """The timed examples, all examples (the BERT tokenizer is trained on them) and a description."""
    if data_dir is not None:
        from biomamba_hf.bioasq.squad import read_squad_bioasq

        folder = data_dir / "bioasq" / "4b" / "test"
        paths = sorted(folder.glob("BioASQ-test-factoid-4b-*.json"))
        if not paths:
            raise SystemExit(f"No BioASQ-test-factoid-4b-*.json in {folder}: pass the shared data folder.")
        rows = read_squad_bioasq(paths)
        examples = [{"question": r["question"], "context": r["context"]} for r in rows]
        source = f"BioASQ 4b test, {len(examples)} (question, context) pairs, first {num_questions} timed"
    else:
        rng = random.Random(0)
        examples = [
            {
                "question": "Which gene is mutated in cystic fibrosis?",
                "context": " ".join(rng.choices(SYNTHETIC, k=24)),
            }
            for _ in range(num_questions)
        ]
        source = "synthetic biomedical sentences (no data folder given), ~250 words per context"
    timed = list(examples)
    while len(timed) < num_questions:
        timed = timed + examples
    return timed[:num_questions], examples, source


def load_tokenizers(data_dir: Path | None, examples: list[dict]):
    from transformers import AutoTokenizer

    from biomamba_hf.tokenization import train_bpe_tokenizer, train_wordpiece_tokenizer

    texts = [e["context"] for e in examples] + [e["question"] for e in examples]
    neox = data_dir / "tokenizers" / "gpt-neox-20b" if data_dir is not None else None
    if neox is not None and neox.is_dir():
        mamba_tokenizer = AutoTokenizer.from_pretrained(neox)
        mamba_source = "GPT-NeoX-20B tokenizer (mamba-130m-hf's)"
    else:
        mamba_tokenizer = train_bpe_tokenizer(texts * 2, vocab_size=2000)
        mamba_source = "byte-level BPE trained on the contexts"
    bert_tokenizer = train_wordpiece_tokenizer(texts, vocab_size=28996)
    return mamba_tokenizer, mamba_source, bert_tokenizer


def build_models(args, device, dtype, mamba_tokenizer, bert_tokenizer) -> dict:
    """{name: (model, tokenizer)} for the models of ``--models``, randomly initialised, in eval mode."""
    from transformers import BertForQuestionAnswering

    from biomamba_hf import MambaForQuestionAnswering, prepare_tokenizer_for_qa
    from biomamba_hf.modeling import Mamba2ForQuestionAnswering

    models = {}
    if "mamba" in args.models:
        vocab = max(50280, len(mamba_tokenizer) + 2)
        model = common.build(
            MambaForQuestionAnswering, common.mamba_config(args.size, vocab_size=vocab), device, dtype
        )
        prepare_tokenizer_for_qa(mamba_tokenizer, model)
        models[MAMBA] = (model.eval(), mamba_tokenizer)
    if "mamba2" in args.models:
        vocab = max(50288, len(mamba_tokenizer) + 2)
        config = common.mamba2_config(args.size, vocab_size=vocab)
        model = common.build(Mamba2ForQuestionAnswering, config, device, dtype)
        prepare_tokenizer_for_qa(mamba_tokenizer, model)
        models[MAMBA2] = (model.eval(), mamba_tokenizer)
    bert = common.build(BertForQuestionAnswering, common.bert_config(args.size, vocab_size=28996), device, dtype)
    models[BERT] = (bert.eval(), bert_tokenizer)
    return models


def lever_kwargs(lever: str, args) -> dict:
    """The pipeline arguments of a lever: the same for every model."""
    if lever == "plain":
        return {}
    kwargs = {"pad_to_multiple_of": args.bucket}
    if lever == "compile":
        kwargs["compile"] = compile_config(args)
    if lever == "cuda_graphs":
        kwargs["cuda_graphs"] = True
    return kwargs


def compile_config(args):
    from transformers import CompileConfig

    if args.compile_backend in (None, "inductor"):
        return CompileConfig()  # inductor, mode="reduce-overhead": CUDA graphs on a GPU
    return CompileConfig(backend=args.compile_backend, mode=None)


def count_windows(pipe, examples, args) -> int:
    from biomamba_hf.qa import prepare_qa_features

    features = prepare_qa_features(
        pipe.tokenizer,
        [e["question"] for e in examples],
        [e["context"] for e in examples],
        layout=pipe.layout,
        max_seq_len=args.max_seq_len,
        doc_stride=args.doc_stride,
    )
    return len(features["input_ids"])


def time_pipeline(pipe, examples, batch_size, args, device, lever_options) -> tuple[float, list]:
    """Best wall seconds of ``--repeats`` passes over ``examples`` after ``--warmup`` untimed passes over all of
    them (a compiled or graphed forward meets every bucket shape there), and the answers of the last pass."""
    kwargs = {"batch_size": batch_size, "max_seq_len": args.max_seq_len, "doc_stride": args.doc_stride, "top_k": 5}
    kwargs.update(lever_options)
    for _ in range(max(args.warmup, 1)):
        pipe(examples, **kwargs)
    best = float("inf")
    for _ in range(max(args.repeats, 1)):
        common.synchronize(device)
        start = time.perf_counter()
        answers = pipe(examples, **kwargs)
        common.synchronize(device)
        best = min(best, time.perf_counter() - start)
    if len(answers) != len(examples):
        raise RuntimeError(f"the pipeline returned {len(answers)} answers for {len(examples)} questions")
    return best, answers


def time_forward(model, batch, length, vocab, device, args, config=None, cuda_graphs=False) -> float:
    """Median seconds of the bare forward at ``batch`` x ``length``, through torch.compile with ``config`` or
    replayed from a CUDA graph."""
    from biomamba_hf.qa import inference_levers

    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)

    def forward():
        with torch.inference_mode(), inference_levers(model, config, cuda_graphs):
            return model(input_ids=ids, attention_mask=mask).start_logits.sum()

    warmup = max(args.warmup, 1) + (2 if config or cuda_graphs else 0)
    return common.time_call(forward, device, max(args.repeats, 3), warmup)


def graphed_note(name, model, answers, args) -> str:
    """Graphs captured for ``model`` and how many answers of the ``cuda_graphs`` lever equal the eager ``buckets``
    lever's (the same shapes: a replay runs the kernels the eager forward ran)."""
    from biomamba_hf.cuda_graphs import cuda_graph_calls

    calls = cuda_graph_calls(model)
    note = f"{name}: {calls.captures} graph(s) captured, {calls.replays} replays"
    if "buckets" in args.levers:
        same = total = 0
        for batch_size in args.batch_sizes:
            for graphed, eager in zip(answers["cuda_graphs", batch_size], answers["buckets", batch_size]):
                same += graphed == eager
                total += 1
        note += f"; answers equal to the eager buckets lever: {same}/{total}"
    return note


def graph_breaks() -> tuple[int, list[str]]:
    """Graph breaks torch.compile recorded since the last reset: their number and the most frequent reasons."""
    from torch._dynamo.utils import counters

    reasons = counters["graph_break"]
    return sum(reasons.values()), [f"{n} x {' '.join(reason.split())[:200]}" for reason, n in reasons.most_common(3)]


def main(argv=None):
    from transformers import pipeline

    from biomamba_hf.ops import mamba_code_path

    args = parse_args(argv)
    device = torch.device(args.device)
    if "cuda_graphs" in args.levers and device.type != "cuda":
        raise SystemExit("--levers cuda_graphs needs a CUDA device (--device cuda); drop it for a CPU run.")
    common.kernel_status(device, args.allow_fallback)
    code_paths = {
        MAMBA: f"Mamba code path: {mamba_code_path(device, 'mamba')}",
        MAMBA2: f"Mamba-2 code path: {mamba_code_path(device, 'mamba2')}",
    }
    for key in args.models:
        if key != "bert":
            print(code_paths[MODELS[key]], file=sys.stderr, flush=True)
    data_dir = common.data_dir_from(args.data_dir)
    examples, all_examples, source = load_examples(data_dir, args.num_questions)
    mamba_tokenizer, mamba_source, bert_tokenizer = load_tokenizers(data_dir, all_examples)
    names = [MODELS[key] for key in args.models]

    rows, forward_rows, windows, compiled_notes, graph_notes = [], [], {}, {}, {}
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        models = build_models(args, device, dtype, mamba_tokenizer, bert_tokenizer)
        results, answers = {}, {}
        for name, (model, tokenizer) in models.items():
            pipe = pipeline("question-answering", model=model, tokenizer=tokenizer, device=device)
            windows[name] = count_windows(pipe, examples, args)
            for lever in args.levers:
                if lever == "compile":
                    torch._dynamo.reset()
                    torch._dynamo.utils.counters.clear()
                for batch_size in args.batch_sizes:
                    seconds, answers[lever, batch_size] = time_pipeline(
                        pipe, examples, batch_size, args, device, lever_kwargs(lever, args)
                    )
                    results[name, lever, batch_size] = len(examples) / seconds
                    print(
                        f"  {name} {dtype_name} {lever} batch {batch_size}: "
                        f"{results[name, lever, batch_size]:.1f} q/s",
                        file=sys.stderr,
                        flush=True,
                    )
                if lever == "compile":
                    count, reasons = graph_breaks()
                    compiled_notes[name] = f"{name}: {count} graph break(s)" + (
                        f"; most frequent: {' | '.join(reasons)}" if reasons else ""
                    )
                    print(f"  {compiled_notes[name]}", file=sys.stderr, flush=True)
            if "cuda_graphs" in args.levers:
                graph_notes[name] = graphed_note(name, model, answers, args)
                print(f"  {graph_notes[name]}", file=sys.stderr, flush=True)
            vocab = model.config.vocab_size
            for lever in ("plain", "compile", "cuda_graphs"):
                if lever not in args.levers:
                    continue
                config = compile_config(args) if lever == "compile" else None
                seconds = time_forward(
                    model, 32, args.max_seq_len, vocab, device, args, config, cuda_graphs=lever == "cuda_graphs"
                )
                forward_rows.append([name, dtype_name, lever, 32 / seconds])
        for batch_size in args.batch_sizes:
            for lever in args.levers:
                bert = results[BERT, lever, batch_size]
                row = [dtype_name, batch_size, lever]
                for name in names:
                    row.append(f"{results[name, lever, batch_size]:,.1f}")
                row.extend(f"{results[name, lever, batch_size] / bert:.0%}" for name in names if name != BERT)
                rows.append(row)
        models = None
        common.free_memory(device)
    bert_forward = {(r[1], r[2]): r[3] for r in forward_rows if r[0] == BERT}
    forward_rows = [[*r[:3], f"{r[3]:,.1f}", f"{r[3] / bert_forward[r[1], r[2]]:.0%}"] for r in forward_rows]

    mamba_names = [name for name in names if name != BERT]
    notes = [
        *(code_paths[name] for name in mamba_names),
        f"inputs: {source}; windows of {args.max_seq_len} tokens, stride {args.doc_stride}, top_k 5",
        "windows needed: "
        + ", ".join(f"{name} {windows[name]}" for name in mamba_names)
        + f" ({mamba_source}, layout question_first); BERT {windows[BERT]} (cased WordPiece, 28,996 tokens, "
        "trained on the inputs)",
        f"levers (the same for every model): plain; buckets = pad_to_multiple_of={args.bucket} (right padding, at "
        f"most {args.max_seq_len}); compile = buckets + torch.compile "
        f"({args.compile_backend or 'inductor'}, mode={compile_config(args).mode!r}); cuda_graphs = buckets + "
        "cuda_graphs=True (one CUDA graph per batch shape, replayed)",
        *(f"compiled: {note}" for note in compiled_notes.values()),
        *(f"CUDA graphs: {note}" for note in graph_notes.values()),
        f"shape {args.size}: Mamba and Mamba-2 hidden {common.MAMBA_SIZES[args.size]['hidden_size']} x "
        f"{common.MAMBA_SIZES[args.size]['num_hidden_layers']} layers vs BERT hidden "
        f"{common.BERT_SIZES[args.size]['hidden_size']} x {common.BERT_SIZES[args.size]['num_hidden_layers']} layers; "
        f"random weights; best of {max(args.repeats, 1)} timed passes after {max(args.warmup, 1)} untimed pass(es) "
        "over all the questions",
    ]
    header = common.report_header("Table 3: QA pipeline questions/s", device, notes)
    table = common.markdown_table(
        [
            "weights",
            "pipeline batch",
            "lever",
            *(f"{name} questions/s" for name in names),
            *(f"{name} / BERT" for name in mamba_names),
        ],
        rows,
    )
    forward = common.markdown_table(
        ["model", "weights", "lever", f"bare forward, sequences/s at 32 x {args.max_seq_len}", "/ BERT, same lever"],
        forward_rows,
    )
    common.emit(header + "\n\n" + table + "\n\n" + forward, args.markdown_out)


if __name__ == "__main__":
    main()
