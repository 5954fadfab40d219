#!/usr/bin/env python
"""Table 4: full-text QA -- answer a question over a whole PMC article in one window with Mamba vs windowed
BERT-base (time, peak memory, windows needed), both through ``pipeline("question-answering")``.

The article comes from ``pmc_fulltext/train.jsonl.gz`` in the data folder (``--data_dir`` or ``BIOMAMBA_DATA_DIR``):
by default the one whose length is closest to ``--target_tokens`` GPT-NeoX tokens (chosen by character count, then
tokenised), or ``--article_index``. Mamba reads question + article as one sequence (``max_seq_len`` set to fit it);
Mamba with the ``repeat_context`` layout reads the article twice; BERT-base reads 384-token windows with stride 128
(it has 512 positions) in batches of ``--bert_batch_size`` windows. Random weights: answers are not meaningful, only
time and memory are. Tokenizers as in ``bench_qa_pipeline.py``.

    python benchmarks/bench_fulltext_qa.py --data_dir path/to/shared/data                      # GPU
    python benchmarks/bench_fulltext_qa.py --device cpu --target_tokens 3000 --data_dir path/to/shared/data
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_qa_pipeline  # noqa: E402
import common  # noqa: E402

QUESTION = "What was the primary outcome of the trial?"
CHARS_PER_TOKEN = 4.5  # GPT-NeoX on PMC text: 98.1M characters / 21.9M tokens


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser)
    parser.set_defaults(repeats=3, warmup=1)
    parser.add_argument("--data_dir", default=None, help="the shared data folder (default: $BIOMAMBA_DATA_DIR)")
    parser.add_argument("--size", default="130m", choices=sorted(common.MAMBA_SIZES), help=common.SIZE_HELP)
    parser.add_argument("--target_tokens", type=int, default=8000, help="pick the article closest to this length")
    parser.add_argument("--article_index", type=int, default=None, help="line of train.jsonl.gz instead")
    parser.add_argument("--bert_batch_size", type=int, default=32, help="BERT windows per forward")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"], help="default: bf16 on GPU")
    parser.add_argument("--tokenizer_articles", type=int, default=300, help="articles the BERT WordPiece learns on")
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return args


def read_articles(data_dir: Path) -> list[dict]:
    path = data_dir / "pmc_fulltext" / "train.jsonl.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the shared data folder with --data_dir or BIOMAMBA_DATA_DIR.")
    articles = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            record = json.loads(line)
            if not isinstance(record.get("text"), str) or not record["text"].strip():
                raise ValueError(f"{path} line {line_number} (pmcid {record.get('pmcid')}): field `text` is empty.")
            articles.append(record)
    return articles


def pick_article(articles: list[dict], args) -> tuple[int, dict]:
    if args.article_index is not None:
        if not 0 <= args.article_index < len(articles):
            raise SystemExit(f"--article_index {args.article_index} is out of range: use 0..{len(articles) - 1}.")
        return args.article_index, articles[args.article_index]
    target = args.target_tokens * CHARS_PER_TOKEN
    index = min(range(len(articles)), key=lambda i: abs(len(articles[i]["text"]) - target))
    return index, articles[index]


def run(pipe, article, max_seq_len, doc_stride, batch_size, args, device):
    kwargs = {"max_seq_len": max_seq_len, "doc_stride": doc_stride, "batch_size": batch_size, "top_k": 5}
    example = {"question": QUESTION, "context": article}
    for _ in range(args.warmup):
        pipe(example, **kwargs)
    times = []
    with common.PeakMemory(device) as memory:
        for _ in range(args.repeats):
            common.synchronize(device)
            start = time.perf_counter()
            answers = pipe(example, **kwargs)
            common.synchronize(device)
            times.append(time.perf_counter() - start)
    if not answers or not all(article[a["start"] : a["end"]] == a["answer"] for a in answers):
        raise RuntimeError("the pipeline returned no answer or a span that does not match the article")
    return min(times), memory.peak


def main(argv=None):
    from transformers import pipeline

    from biomamba_hf.qa import prepare_qa_features

    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    code_path = common.kernel_status(device, args.allow_fallback)
    data_dir = common.data_dir_from(args.data_dir)
    if data_dir is None:
        raise SystemExit("Table 4 needs the PMC full texts: pass --data_dir or set BIOMAMBA_DATA_DIR.")
    articles = read_articles(data_dir)
    index, record = pick_article(articles, args)
    article = record["text"]
    examples = [{"question": QUESTION, "context": a["text"]} for a in articles[: args.tokenizer_articles]]
    mamba_tokenizer, mamba_source, bert_tokenizer = bench_qa_pipeline.load_tokenizers(data_dir, examples)
    models = bench_qa_pipeline.build_models(args, device, dtype, mamba_tokenizer, bert_tokenizer)
    mamba, _ = models["Mamba QA"]
    bert, _ = models["BERT-base QA"]
    article_tokens = len(mamba_tokenizer(article, add_special_tokens=False)["input_ids"])
    question_tokens = len(mamba_tokenizer(QUESTION, add_special_tokens=False)["input_ids"])

    runs = [
        ("Mamba QA, whole article in one window", mamba, mamba_tokenizer, "question_first", 1),
        ("Mamba QA, repeat_context layout (article twice)", mamba, mamba_tokenizer, "repeat_context", 1),
        (f"BERT-base QA, 384-token windows, batch {args.bert_batch_size}", bert, bert_tokenizer, None, None),
        ("BERT-base QA, 384-token windows, batch 1", bert, bert_tokenizer, None, 1),
    ]
    rows, baseline = [], None
    for label, model, tokenizer, layout, batch_size in runs:
        if layout is not None:
            model.config.qa_layout = layout
            copies = 2 if layout == "repeat_context" else 1
            max_seq_len, doc_stride = question_tokens + copies * article_tokens + 8, 0
        else:
            max_seq_len, doc_stride = 384, 128
        pipe = pipeline("question-answering", model=model, tokenizer=tokenizer, device=device)
        features = prepare_qa_features(
            tokenizer, [QUESTION], [article], layout=pipe.layout, max_seq_len=max_seq_len, doc_stride=doc_stride
        )
        windows = len(features["input_ids"])
        tokens = sum(len(ids) for ids in features["input_ids"])
        try:
            seconds, peak = run(
                pipe, article, max_seq_len, doc_stride, batch_size or args.bert_batch_size, args, device
            )
        except Exception as error:
            if not common.is_oom(error):
                raise
            rows.append([label, windows, f"{tokens:,}", "OOM", "", ""])
            continue
        finally:
            common.free_memory(device)
        baseline = baseline or seconds
        rows.append(
            [label, windows, f"{tokens:,}", f"{seconds * 1e3:,.0f}", common.gib(peak), f"{seconds / baseline:.2f}x"]
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)

    notes = [
        f"Mamba code path: {code_path}",
        f"article: pmc_fulltext/train.jsonl.gz line {index} (pmcid {record.get('pmcid')}), {len(article):,} characters, "
        f"{article_tokens:,} GPT-NeoX tokens; question: {QUESTION!r}",
        f"shape {args.size}, weights {args.dtype}, random init; Mamba tokenizer: {mamba_source}; BERT: cased WordPiece "
        f"trained on {len(examples)} PMC articles",
        f"time: best of {args.repeats} pipeline calls (tokenise, window, forward, rank 5 spans) after {args.warmup} "
        "warm-up; memory: peak above the weights, "
        + ("torch.cuda.max_memory_allocated" if device.type == "cuda" else "sampled RSS increase (estimate)"),
    ]
    header = common.report_header("Table 4: full-text QA over one PMC article", device, notes)
    table = common.markdown_table(
        ["run", "windows", "tokens read", "time (ms)", "peak memory (GiB)", "time vs Mamba one window"], rows
    )
    common.emit(header + "\n\n" + table, args.markdown_out)


if __name__ == "__main__":
    main()
