"""benchmarks/bench_qa_pipeline.py at a tiny shape on the CPU: every model gets a questions/s cell per lever and a
bare-forward row; the default levers leave cuda_graphs out on a CPU, and asking for it there is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT

COMMAND = [sys.executable, str(ROOT / "benchmarks" / "bench_qa_pipeline.py"), "--device", "cpu", "--size", "tiny"]
SMALL = ["--num_questions", "4", "--batch_sizes", "2", "--dtypes", "float32", "--repeats", "1", "--warmup", "1"]


@pytest.mark.slow
def test_every_model_gets_a_cell_per_lever_and_a_bare_forward_row():
    result = subprocess.run(
        [*COMMAND, *SMALL, "--levers", "plain,buckets"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| float32 | 2 |")]
    assert [row.split("|")[3].strip() for row in rows] == ["plain", "buckets"], result.stdout
    for row in rows:  # three questions/s cells, then two ratios to BERT
        cells = [cell.strip() for cell in row.split("|")[4:9]]
        assert all(float(cell.replace(",", "")) > 0 for cell in cells[:3]) and all(c.endswith("%") for c in cells[3:])
    forward = [line for line in result.stdout.splitlines() if "| float32 | plain |" in line]
    assert len(forward) == 3, result.stdout


def test_the_default_levers_leave_cuda_graphs_out_on_a_cpu_only(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_qa_pipeline

    assert bench_qa_pipeline.parse_args(["--device", "cpu"]).levers == ["plain", "buckets", "compile"]
    assert bench_qa_pipeline.parse_args(["--device", "cuda"]).levers == list(bench_qa_pipeline.LEVERS)


def test_cuda_graphs_is_refused_on_a_cpu_with_the_fix():
    result = subprocess.run(
        [*COMMAND, *SMALL, "--levers", "cuda_graphs"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode != 0
    assert "--levers cuda_graphs needs a CUDA device (--device cuda); drop it for a CPU run." in result.stderr
