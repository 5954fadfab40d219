"""Untrusted checkpoints and secrets: safetensors-only loading, no remote code, Hub tokens never written or logged."""

from __future__ import annotations

import doctest
import gzip
import json
from pathlib import Path

import pytest
from helpers import SENTENCES, example_script, tiny_config

from biomamba_hf import reliability
from biomamba_hf.reliability import from_pretrained_safely, safe_loading_kwargs

ROOT = Path(__file__).resolve().parents[1]
#: Shaped like a real Hugging Face token (hf_ + 34 characters), so the hub module's own scan would spot it too.
FAKE_TOKEN = "hf_" + "FakeTokenForBiomambaSecurityTests01"


def test_docstring_examples():
    assert doctest.testmod(reliability, raise_on_error=False).failed == 0


@pytest.fixture(scope="module")
def weight_folders(tmp_path_factory, tokenizer_dir):
    """The same tiny model saved with safetensors, with only a pickle ``pytorch_model.bin``, and with both."""
    import torch
    from transformers import MambaForCausalLM

    torch.manual_seed(0)
    model = MambaForCausalLM(tiny_config(vocab_size=64))
    root = tmp_path_factory.mktemp("weights")
    model.save_pretrained(root / "safe")
    (root / "pickle").mkdir()
    model.config.save_pretrained(root / "pickle")
    torch.save(model.state_dict(), root / "pickle" / "pytorch_model.bin")
    model.save_pretrained(root / "both")
    torch.save(model.state_dict(), root / "both" / "pytorch_model.bin")
    return root


def test_pickle_weights_are_refused_unless_the_caller_opts_in(weight_folders):
    from transformers import AutoModelForCausalLM

    folder = weight_folders / "pickle"
    with pytest.raises(ValueError, match=r"pickle.* holds only pickle weights \(pytorch_model.bin\), which can run "
                       r"arbitrary code.*allow_pickle=True \(scripts: --allow_pickle_weights\)"):  # fmt: skip
        from_pretrained_safely(AutoModelForCausalLM, folder)
    # transformers' own guard, which from_pretrained_safely also passes, refuses the folder too.
    with pytest.raises(OSError, match=r"no file named model.safetensors"):
        AutoModelForCausalLM.from_pretrained(folder, **safe_loading_kwargs())
    model = from_pretrained_safely(AutoModelForCausalLM, folder, allow_pickle=True)
    assert type(model).__name__ == "MambaForCausalLM"


def test_safetensors_weights_load_and_win_over_a_pickle_beside_them(weight_folders, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called: a pickle file was read")

    monkeypatch.setattr(torch, "load", no_pickle)
    for name in ("safe", "both"):
        model = from_pretrained_safely(AutoModelForCausalLM, weight_folders / name)
        assert type(model).__name__ == "MambaForCausalLM"


def test_trust_remote_code_is_refused_and_checkpoint_code_never_runs(weight_folders, tmp_path):
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match=r"never runs code from a checkpoint \(trust_remote_code=True\)"):
        from_pretrained_safely(AutoModelForCausalLM, weight_folders / "safe", trust_remote_code=True)

    # A checkpoint whose config points to its own modeling code (auto_map), which would leave a file behind if run.
    folder = tmp_path / "remote_code"
    sentinel = tmp_path / "code_was_run"
    folder.mkdir()
    config = json.loads((weight_folders / "safe" / "config.json").read_text())
    config.update(
        model_type="evil_mamba", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.M"}
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((weight_folders / "safe" / "model.safetensors").read_bytes())
    (folder / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('pwned')\n")
    with pytest.raises(ValueError, match=r"trust_remote_code"):
        from_pretrained_safely(AutoModelForCausalLM, folder)
    assert not sentinel.exists()


def test_no_code_path_of_the_package_or_scripts_enables_trust_remote_code():
    """Every call in biomamba_hf/ and examples/ that names trust_remote_code passes the constant False."""
    import ast

    calls = offenders = 0
    for path in [*(ROOT / "biomamba_hf").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for keyword in getattr(node, "keywords", []) if isinstance(node, (ast.Call, ast.Dict)) else []:
                if keyword.arg == "trust_remote_code":
                    calls += 1
                    offenders += not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False)
            if isinstance(node, ast.Dict):  # {"trust_remote_code": False} as in safe_loading_kwargs
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        calls += 1
                        offenders += not (isinstance(value, ast.Constant) and value.value is False)
    assert calls >= 1 and offenders == 0


def test_the_qa_pipeline_refuses_pickle_only_checkpoints(tmp_path, tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, pipeline

    from biomamba_hf import MambaForQuestionAnswering, prepare_tokenizer_for_qa

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = MambaForQuestionAnswering(tiny_config(vocab_size=len(tokenizer) + 8))
    prepare_tokenizer_for_qa(tokenizer, model)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"holds only pickle weights.*model_kwargs=\{'use_safetensors': False\}"):
        pipeline("question-answering", model=str(tmp_path))
    # opting in explicitly loads it
    qa = pipeline("question-answering", model=str(tmp_path), model_kwargs={"use_safetensors": False})
    assert qa(question="Which gene?", context="The CFTR gene.")["answer"]


def test_run_clm_refuses_a_pickle_only_starting_checkpoint(run_clm, weight_folders, corpus, tokenizer_dir, tmp_path):
    import shutil

    folder = tmp_path / "start"
    shutil.copytree(weight_folders / "pickle", folder)
    for name in Path(tokenizer_dir).iterdir():
        shutil.copy(name, folder)
    with pytest.raises(ValueError, match=r"holds only pickle weights"):
        run_clm.main(clm_args(corpus, tmp_path / "out", ["--model_name_or_path", str(folder)]))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- Hub tokens


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i, text in enumerate(SENTENCES * 3):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return path


def clm_args(corpus, output_dir, model) -> list[str]:
    return [
        *model, "--train_file", str(corpus), "--do_train", "--do_eval", "--block_size", "32",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--logging_steps", "1", "--report_to", "none", "--output_dir", str(output_dir),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def token_run(corpus, clm_dir, tmp_path_factory):
    """examples/run_clm.py run in a subprocess with a (fake) Hub token for loading (--token): its output folder and
    everything it printed (stdout and stderr, so every logger counts: transformers' own handlers too)."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("token_run") / "out"
    args = clm_args(corpus, out, ["--model_name_or_path", str(clm_dir)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "run_clm.py"), *args, "--token", FAKE_TOKEN, "--log_level", "info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout + done.stderr


def _files_with_token(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[str]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if suffixes is not None and path.suffix not in suffixes:
            continue
        if FAKE_TOKEN.encode() in path.read_bytes():
            found.append(str(path.relative_to(folder)))
    return found


def test_hub_tokens_never_reach_the_logs(token_run):
    out, logs = token_run
    assert "***** Running training *****" in logs  # transformers.trainer's own log lines were captured
    assert "run_clm - Resuming" not in logs and "run: tokens per optimizer step" in logs  # and the script's
    assert FAKE_TOKEN not in logs


def test_hub_tokens_never_reach_configs_cards_or_metrics(token_run):
    out, _ = token_run
    assert (out / "config.json").is_file() and (out / "README.md").is_file() and (out / "all_results.json").is_file()
    assert _files_with_token(out, (".json", ".md", ".txt", ".yaml", ".jinja", "")) == []


def test_run_clm_refuses_hub_token_before_writing_anything(run_clm, corpus, clm_dir, tmp_path):
    """Trainer pickles its arguments (hub_token included) into training_args.bin: --hub_token is refused up front."""
    out = tmp_path / "out"
    args = clm_args(corpus, out, ["--model_name_or_path", str(clm_dir)])
    with pytest.raises(ValueError, match=r"--hub_token would be saved in training_args.bin.*HF_TOKEN"):
        run_clm.main([*args, "--hub_token", FAKE_TOKEN])
    assert not out.exists()


def test_hub_tokens_never_reach_the_saved_training_arguments(token_run):
    out, _ = token_run
    assert (out / "training_args.bin").is_file()
    assert _files_with_token(out) == []


def test_hub_push_refuses_a_folder_holding_a_token(tmp_path, clm_dir):
    """The last line of defence: hub.push_to_hub scans what it would upload and uploads nothing if a token is in it."""
    import shutil

    from biomamba_hf import hub

    folder = tmp_path / "model"
    shutil.copytree(clm_dir, folder)
    (folder / "all_results.json").write_text(json.dumps({"eval_loss": 1.0}))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "note": FAKE_TOKEN}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json contains a Hugging Face token; nothing was uploaded"):
        hub.push_to_hub(folder, "someone/model", dry_run=True, dry_run_dir=tmp_path / "preview", token=FAKE_TOKEN)


@pytest.mark.parametrize("script", ["run_qa", "run_pubmedqa"])
def test_fine_tuning_scripts_refuse_pickle_only_checkpoints(script, weight_folders, tokenizer_dir, tmp_path):
    """run_qa.py and run_pubmedqa.py load their starting checkpoint under the same policy as run_clm.py."""
    import shutil

    folder = tmp_path / "start"
    shutil.copytree(weight_folders / "pickle", folder)
    for name in Path(tokenizer_dir).iterdir():
        shutil.copy(name, folder)
    with example_script(script) as module:
        with pytest.raises(ValueError, match=r"holds only pickle weights"):
            module.load_model_and_tokenizer(module.ModelArguments(model_name_or_path=str(folder)), "cpu")
        model = module.load_model_and_tokenizer(
            module.ModelArguments(model_name_or_path=str(folder), allow_pickle_weights=True), "cpu"
        )[0]
    assert model.backbone.embeddings.weight.shape[1] == 32
