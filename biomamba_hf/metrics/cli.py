"""``biomamba-bioasq-eval``: score BioASQ factoid predictions against golden files, batch by batch.

Examples::

    biomamba-bioasq-eval predictions.json --golden data/bioasq/4b/golden
    biomamba-bioasq-eval nbest_predictions.json --nbest --golden 4B1_golden.json 4B2_golden.json \\
        --output_json scores.json --write_submission submission.json

The predictions file is our ``{question id: [answer, ...]}`` JSON, a BioASQ submission ``{"questions": [...]}``,
or, with ``--nbest``, an n-best file ``{qa id: [{"text": ..., "probability": ...}, ...]}`` whose per-context
candidates are merged per question first (:func:`biomamba_hf.metrics.merge_candidates`). Each golden file is one
batch; the table shows each batch, the macro average over batches (how BioBERT and the paper report) and the
micro average over all questions.

A submission is checked as the official evaluator reads it (:func:`biomamba_hf.bioasq.formats.load_predictions`):
the command stops with an error naming the file, the question and the field where the evaluator would fail or
score something else, and when the file is not predictions (a golden or training file, a SQuAD file).
``--write_submission`` writes a file the official evaluator accepts unchanged: every question of the golden files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..bioasq.formats import (
    MAX_CANDIDATES,
    load_predictions,
    read_golden_batches,
    read_json,
    write_json,
    write_submission,
)
from .bioasq import bioasq_factoid_batches, merge_nbest, question_scores


def _golden_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for value in paths:
        path = Path(value)
        if path.is_dir():
            found = sorted(path.rglob("*_golden.json"))
            if not found:
                raise ValueError(f"--golden {path}: the directory has no *_golden.json file; pass the files instead")
            files.extend(found)
        else:
            files.append(path)
    return files


def _check_not_golden(predictions: Path, golden_files: Sequence[Path]) -> None:
    """Refuse a predictions path that is one of the golden files (it would score 1.0)."""
    for golden in golden_files:
        if predictions.exists() and golden.exists() and predictions.samefile(golden):
            raise ValueError(
                f"{predictions} is the golden file {golden}, not predictions: give the system's predictions "
                "({question id: [answers]} or a BioASQ submission) first and the golden files with --golden"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biomamba-bioasq-eval",
        description="Score BioASQ factoid predictions (strict accuracy, lenient accuracy, MRR; the first "
        f"{MAX_CANDIDATES} candidates count) against golden files, one batch per golden file.",
    )
    parser.add_argument("predictions", help="predictions JSON: {question id: [answers]} or a BioASQ submission")
    parser.add_argument(
        "--golden",
        nargs="+",
        required=True,
        metavar="PATH",
        help="golden JSON files (one batch each, e.g. 4B1_golden.json) or directories searched for *_golden.json",
    )
    parser.add_argument(
        "--nbest",
        action="store_true",
        help='the predictions file is an n-best file {qa id: [{"text", "probability"}, ...]}: merge it per question',
    )
    parser.add_argument(
        "--reduce",
        choices=("sum", "max"),
        default="sum",
        help="with --nbest: add up (BioBERT) or take the max of the scores of one answer found in several contexts",
    )
    parser.add_argument("--output_json", metavar="PATH", help="also write the scores to this JSON file")
    parser.add_argument(
        "--per_question", action="store_true", help="include per-question scores in --output_json (error analysis)"
    )
    parser.add_argument(
        "--write_submission",
        metavar="PATH",
        help="write the predictions in the BioASQ submission format, every golden question listed",
    )
    return parser


def _table(result: dict) -> str:
    header = f"{'batch':<20}{'questions':>10}{'answered':>10}{'strict_acc':>12}{'lenient_acc':>13}{'mrr':>9}"
    lines = [header, "-" * len(header)]

    def row(name: str, scores: dict) -> str:
        return (
            f"{name:<20}{scores['num_questions']:>10}{scores['num_answered']:>10}"
            f"{scores['strict_acc']:>12.4f}{scores['lenient_acc']:>13.4f}{scores['mrr']:>9.4f}"
        )

    for name, scores in result["batches"].items():
        lines.append(row(name, scores))
    lines.append("-" * len(header))
    lines.append(row(f"macro ({result['macro']['num_batches']} batches)", result["macro"]))
    lines.append(row("micro", result["micro"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 1 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        golden_files = _golden_files(args.golden)
        golden = read_golden_batches(golden_files)  # each file read once: references and every question's type
        references_by_batch, golden_types = golden.references, golden.types
        _check_not_golden(Path(args.predictions), golden_files)
        if args.nbest:
            nbest = read_json(args.predictions)
            if isinstance(nbest, dict) and isinstance(nbest.get("questions"), list):
                raise ValueError(
                    f"{args.predictions} is a BioASQ questions file, not an n-best file "
                    '({qa id: [{"text", "probability"}, ...]}): drop --nbest to score a submission'
                )
            predictions = merge_nbest(nbest, reduce=args.reduce)
        else:
            predictions = load_predictions(args.predictions, golden_types)
        result = bioasq_factoid_batches(predictions, references_by_batch)
    except (ValueError, FileNotFoundError) as err:
        print(f"biomamba-bioasq-eval: error: {err}", file=sys.stderr)
        return 1

    print(_table(result))
    unknown = result["num_unknown_predictions"]
    if unknown:
        print(
            f"warning: {unknown} of {len(predictions)} prediction ids are not golden question ids and were ignored; "
            "per-context ids such as '<question id>_000' must be merged per question first (use --nbest)",
            file=sys.stderr,
        )
    if args.output_json:
        output = {"predictions": str(args.predictions), "golden": [str(p) for p in golden_files]}
        output.update(result)
        if args.per_question:
            output["questions"] = {
                batch: question_scores(predictions, references) for batch, references in references_by_batch.items()
            }
        write_json(args.output_json, output)
    if args.write_submission:
        write_submission(args.write_submission, predictions, golden_types)
    return 0
