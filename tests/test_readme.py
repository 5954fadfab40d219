"""The README's usage section works as written (with a local folder standing in for the Hub checkpoint)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    usage = text.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", usage, flags=re.S)


def test_readme_usage_runs(clm_dir, capsys):
    blocks = _usage_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        assert '"LeoYML/biomamba-130m"' in block or "checkpoint" in block
        exec(compile(block.replace('"LeoYML/biomamba-130m"', repr(str(clm_dir))), str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "perplexity" in printed
    answers = namespace["answers"]
    assert 1 <= len(answers) <= 5
    context = "Cystic fibrosis is caused by mutations in the CFTR gene, a chloride channel."
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)
