"""The README works as written: its Python snippets run (a local folder standing in for the Hub checkpoint), each on
its own, and its shell commands name make targets, console scripts, extras and script arguments that exist."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, data_dir, example_script, stand_in_data_dir

README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
CHECKPOINT = '"LeoYML/biomamba-130m"'


def _section(title: str) -> str:
    return TEXT.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _shell_commands() -> list[list[str]]:
    """Every command of the README's ```bash blocks, continuation lines joined and comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def test_every_usage_snippet_runs_on_its_own(clm_dir, capsys):
    """Each block runs in a fresh namespace: none relies on a name another block defined."""
    blocks = _python_blocks(_section("Usage"))
    assert len(blocks) >= 2
    namespaces = []
    for block in blocks:
        assert CHECKPOINT in block, f"a Usage snippet does not define its checkpoint:\n{block}"
        namespace: dict = {}
        exec(compile(block.replace(CHECKPOINT, repr(str(clm_dir))), str(README), "exec"), namespace)
        namespaces.append(namespace)
    printed = capsys.readouterr().out
    assert "perplexity" in printed
    answers = namespaces[0]["answers"]
    assert 1 <= len(answers) <= 5
    context = "Cystic fibrosis is caused by mutations in the CFTR gene, a chloride channel."
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)


def test_the_evaluate_snippet_runs_after_only_import_biomamba_hf(tmp_path):
    """Run as a new program would (nothing but ``import biomamba_hf`` before ``biomamba_hf.metrics``)."""
    (block,) = [b for b in _python_blocks(TEXT) if "evaluate_module_path" in b]
    assert "import biomamba_hf.metrics" not in block and "from biomamba_hf" not in block
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "'strict_acc': 0.5, 'lenient_acc': 0.5, 'mrr': 0.5" in result.stdout


def _console_scripts() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)


def test_console_scripts_resolve():
    """``biomamba-convert`` and ``biomamba-bioasq-eval`` are declared and point at callables; the installed
    metadata (after ``make``/``pip install -e .``) declares the same."""
    import importlib

    declared = _console_scripts()
    assert declared["biomamba-convert"] == "biomamba_hf.convert:main"
    for target in declared.values():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name))
    # read from a neutral folder, so that a stale biomamba_hf.egg-info in the repository cannot answer instead
    installed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points\n"
            "print({e.name: e.value for e in entry_points(group='console_scripts') if e.name.startswith('biomamba')})",
        ],
        capture_output=True,
        text=True,
        cwd=Path(os.sep),
        check=True,
    ).stdout
    assert eval(installed) == declared, "reinstall the package (make install / pip install -e .) to refresh it"


def test_package_level_exports_are_lazy_and_resolve():
    import biomamba_hf
    from biomamba_hf import convert, modeling

    assert biomamba_hf.convert_mamba_ssm_checkpoint is convert.convert_mamba_ssm_checkpoint
    assert biomamba_hf.Mamba2ForQuestionAnswering is modeling.Mamba2ForQuestionAnswering
    assert biomamba_hf.Mamba2ForSequenceClassification is modeling.Mamba2ForSequenceClassification
    for name in ("Mamba2ForQuestionAnswering", "Mamba2ForSequenceClassification", "convert_mamba_ssm_checkpoint"):
        assert name in biomamba_hf.__all__ and name in dir(biomamba_hf)


#: Commands that need a GPU build, the network or an upload, checked only for the names they use.
NOT_RUN = {"pip", "python -c"}


def test_every_shell_command_names_what_exists(tmp_path, monkeypatch):
    """make targets exist; example scripts accept the arguments (data paths read from --data_dir); console scripts
    and their flags exist; pip extras exist."""
    data = stand_in_data_dir(tmp_path)
    monkeypatch.delenv("BIOMAMBA_DATA_DIR", raising=False)
    makefile = (ROOT / "Makefile").read_text()
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    scripts = _console_scripts()
    checked = set()
    for words in _shell_commands():
        words = [str(data) if w == "path/to/data" else w.replace("path/to/data/", f"{data}/") for w in words]
        head = words[0]
        if head == "make":
            assert re.search(rf"^{words[1]}:", makefile, flags=re.M), f"no make target {words[1]!r}"
        elif head == "pip":
            for extra in re.findall(r"\.\[([a-z,]+)\]", " ".join(words)):
                assert set(extra.split(",")) <= set(extras["options.extras_require"]), extra
        elif head in scripts:
            help_text = subprocess.run(
                [sys.executable, "-c", f"import sys; from {scripts[head].replace(':', ' import ')}; sys.exit(main())"]
                + ["--help"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for flag in (w for w in words if w.startswith("--")):
                assert flag in help_text, f"{head} has no {flag}"
        elif head in ("python", "accelerate") and words[1] != "-c":
            script = next(w for w in words if w.startswith("examples/") and w.endswith(".py"))
            argv = words[words.index(script) + 1 :]
            name = Path(script).stem
            if name == "push_to_hub":
                with example_script(name) as module:
                    fields = {f"--{f.name}" for f in dataclasses.fields(module.PushArguments)}
                assert {w for w in argv if w.startswith("--")} <= fields
            else:
                with example_script(name) as module:
                    # bf16 needs a GPU: parsed here without it; the data folder is the fake one
                    parsed = module.parse_args([*argv, "--bf16=false"])
                for args in parsed:
                    for field in ("train_file", "validation_file"):
                        if getattr(args, field, None):
                            assert getattr(args, field).startswith(str(data)), (words, field)
        else:
            assert " ".join(words[:2]) in NOT_RUN or head in NOT_RUN, f"README command not checked: {words}"
            continue
        checked.add(head if head != "python" else Path(next(w for w in words if w.endswith(".py"))).stem)
    assert {"make", "run_clm", "run_qa", "run_pubmedqa", "push_to_hub", "biomamba-convert"} <= checked


def test_the_configs_read_their_data_through_data_dir(tmp_path, monkeypatch):
    """No config names a machine path; relative data paths resolve under --data_dir or $BIOMAMBA_DATA_DIR, and a
    missing one without either says how to give it."""
    data = stand_in_data_dir(tmp_path)
    for path in (ROOT / "examples" / "configs").iterdir():
        assert "../shared" not in path.read_text(), f"{path.name} names a machine path"
    with example_script("run_clm") as run_clm:
        config = str(ROOT / "examples" / "configs" / "tiny_cpu.yaml")
        monkeypatch.setenv("BIOMAMBA_DATA_DIR", str(data))
        model_args, data_args, _ = run_clm.parse_args([config])
        assert data_args.train_file == str(data / "pubmed" / "dev.jsonl.gz")
        assert model_args.tokenizer_name == str(data / "tokenizers" / "gpt-neox-20b")
        monkeypatch.delenv("BIOMAMBA_DATA_DIR")
        monkeypatch.chdir(tmp_path)
        with pytest.raises(
            ValueError,
            match=r"--train_file pubmed/dev.jsonl.gz: relative paths are read from --data_dir, and neither --data_dir "
            r"nor BIOMAMBA_DATA_DIR is set",
        ):
            run_clm.parse_args([config])


@pytest.mark.real_data
def test_tiny_cpu_command_runs_as_written_on_the_data_folder(tmp_path):
    """The README's tiny CPU command, shortened to 3 steps into a temporary folder."""
    data = data_dir()
    with example_script("run_clm") as run_clm:
        results = run_clm.main(
            [
                str(ROOT / "examples" / "configs" / "tiny_cpu.yaml"),
                "--data_dir", str(data),
                "--max_steps", "3",
                "--max_eval_samples", "4",
                "--output_dir", str(tmp_path / "out"),
            ]
        )  # fmt: skip
    assert results["eval_loss"] > 0
