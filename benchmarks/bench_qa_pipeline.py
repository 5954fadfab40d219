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

    python benchmarks/bench_qa_pipeline.py --data_dir path/to/shared/data                  # GPU
    python benchmarks/bench_qa_pipeline.py --device cpu --size 130m --num_questions 48 --batch_sizes 1,8 --dtypes float32
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
    args = parser.parse_args(argv)
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


def build_models(args, device, dtype, mamba_tokenizer, bert_tokenizer):
    from transformers import BertForQuestionAnswering

    from biomamba_hf import MambaForQuestionAnswering, prepare_tokenizer_for_qa

    vocab = max(50280, len(mamba_tokenizer) + 2)
    mamba = common.build(MambaForQuestionAnswering, common.mamba_config(args.size, vocab_size=vocab), device, dtype)
    prepare_tokenizer_for_qa(mamba_tokenizer, mamba)
    bert = common.build(BertForQuestionAnswering, common.bert_config(args.size, vocab_size=28996), device, dtype)
    return {"Mamba QA": (mamba.eval(), mamba_tokenizer), "BERT-base QA": (bert.eval(), bert_tokenizer)}


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


def time_pipeline(pipe, examples, batch_size, args, device) -> float:
    kwargs = {"batch_size": batch_size, "max_seq_len": args.max_seq_len, "doc_stride": args.doc_stride, "top_k": 5}
    for _ in range(args.warmup):
        pipe(examples[: max(batch_size, 8)], **kwargs)
    best = float("inf")
    for _ in range(max(args.repeats, 1)):
        common.synchronize(device)
        start = time.perf_counter()
        answers = pipe(examples, **kwargs)
        common.synchronize(device)
        best = min(best, time.perf_counter() - start)
    if len(answers) != len(examples):
        raise RuntimeError(f"the pipeline returned {len(answers)} answers for {len(examples)} questions")
    return best


def time_forward(model, batch, length, vocab, device, args) -> float:
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)

    def forward():
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask)

    return common.time_call(forward, device, max(args.repeats, 3), max(args.warmup, 1))


def main(argv=None):
    from transformers import pipeline

    args = parse_args(argv)
    device = torch.device(args.device)
    code_path = common.kernel_status(device, args.allow_fallback)
    data_dir = common.data_dir_from(args.data_dir)
    examples, all_examples, source = load_examples(data_dir, args.num_questions)
    mamba_tokenizer, mamba_source, bert_tokenizer = load_tokenizers(data_dir, all_examples)

    rows, forward_rows, windows = [], [], {}
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        models = build_models(args, device, dtype, mamba_tokenizer, bert_tokenizer)
        results = {}
        for name, (model, tokenizer) in models.items():
            pipe = pipeline("question-answering", model=model, tokenizer=tokenizer, device=device)
            windows[name] = count_windows(pipe, examples, args)
            for batch_size in args.batch_sizes:
                seconds = time_pipeline(pipe, examples, batch_size, args, device)
                results[name, batch_size] = len(examples) / seconds
                print(
                    f"  {name} {dtype_name} batch {batch_size}: {results[name, batch_size]:.1f} q/s", file=sys.stderr
                )
            vocab = model.config.vocab_size
            forward_rows.append(
                [name, dtype_name, f"{32 / time_forward(model, 32, args.max_seq_len, vocab, device, args):,.1f}"]
            )
        for batch_size in args.batch_sizes:
            mamba, bert = results["Mamba QA", batch_size], results["BERT-base QA", batch_size]
            rows.append([dtype_name, batch_size, f"{mamba:,.1f}", f"{bert:,.1f}", f"{mamba / bert:.0%}"])
        models = None
        common.free_memory(device)

    notes = [
        f"Mamba code path: {code_path}",
        f"inputs: {source}; windows of {args.max_seq_len} tokens, stride {args.doc_stride}, top_k 5",
        f"windows needed: Mamba {windows['Mamba QA']} ({mamba_source}, layout question_first), "
        f"BERT {windows['BERT-base QA']} (cased WordPiece, 28,996 tokens, trained on the inputs)",
        f"shape {args.size}: Mamba hidden {common.MAMBA_SIZES[args.size]['hidden_size']} x "
        f"{common.MAMBA_SIZES[args.size]['num_hidden_layers']} layers vs BERT hidden "
        f"{common.BERT_SIZES[args.size]['hidden_size']} x {common.BERT_SIZES[args.size]['num_hidden_layers']} layers; "
        f"random weights; best of {max(args.repeats, 1)} timed passes after {args.warmup} warm-up pass(es)",
    ]
    header = common.report_header("Table 3: QA pipeline questions/s", device, notes)
    table = common.markdown_table(
        ["weights", "pipeline batch", "Mamba QA questions/s", "BERT-base QA questions/s", "Mamba / BERT"], rows
    )
    forward = common.markdown_table(
        ["model", "weights", f"bare forward, sequences/s at 32 x {args.max_seq_len}"], forward_rows
    )
    common.emit(header + "\n\n" + table + "\n\n" + forward, args.markdown_out)


if __name__ == "__main__":
    main()
