"""benchmarks/bench_training_throughput.py at a tiny shape on the CPU: the run_clm decomposition rows (a loop row and
the Trainer row that runs as run_clm does) print a number each, so the GPU command of the next session does not fail."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_decomposition_rows_run_on_cpu():
    command = [
        sys.executable, str(ROOT / "benchmarks" / "bench_training_throughput.py"), "--device", "cpu",
        "--size", "tiny", "--seq_len", "64", "--micro_batch", "2", "--recipe_micro_batch", "2", "--steps", "1",
        "--rows", "mamba2,trainer_mamba2_liger", "--loss_implementation", "torch",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| Mamba-2")]
    assert len(rows) == 2, result.stdout
    assert "as run_clm runs it" in rows[1]
    for row in rows:
        tokens_per_second = row.split("|")[3].strip()
        assert re.fullmatch(r"[\d,]+", tokens_per_second) and int(tokens_per_second.replace(",", "")) > 0, row
    assert "Mamba-2 code path:" in result.stdout
