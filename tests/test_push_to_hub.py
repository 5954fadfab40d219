"""One-commit push of a checkpoint + card + metrics; dry-run folder loads back; token and overwrite protections.

Only the network calls of ``huggingface_hub.HfApi`` are replaced (by a recorder); everything else is real.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl
from test_model_card import FAKE_TOKEN, QA_RESULTS, REPO_ID, write_clm_run, write_json, write_qa_run

from biomamba_hf import hub

ROOT = Path(__file__).resolve().parents[1]
WRITE_ACCESS = {"name": "LeoYML", "orgs": [{"name": "biomamba-org"}], "auth": {"accessToken": {"role": "write"}}}
# What the dry run and the push must contain for the fixture checkpoint (tokenizer files are added per folder).
EXPECTED_FILES = {
    "README.md",
    "training_curves.png",
    "config.json",
    "model.safetensors",
    "all_results.json",
    "trainer_state.json",
    "run_args.json",
    "pretraining/all_results.json",
    "pretraining/trainer_state.json",
    "pretraining/run_args.json",
}


@pytest.fixture
def checkpoint(tmp_path, tokenizer_dir, clm_dir):
    """A QA run folder (tiny model, tokenizer, results) plus the pretraining run it continued from."""
    clm_run = write_clm_run(tmp_path / "clm", weights_from=clm_dir)
    qa_dir = write_qa_run(tmp_path / "qa", tokenizer_dir, start=clm_run)
    torch.save({"hub_token": FAKE_TOKEN}, qa_dir / "training_args.bin")  # Trainer leaves this pickle behind
    return qa_dir, clm_run


def expected_files(qa_dir: Path) -> set[str]:
    return EXPECTED_FILES | {name for name in hub.TOKENIZER_FILES if (qa_dir / name).is_file()}


class HubRecorder:
    """Stands in for the HfApi methods that reach the network, and records every call."""

    def __init__(self, monkeypatch, whoami=WRITE_ACCESS, remote_files=()):
        self.calls: list[tuple[str, dict]] = []
        self.commits: list[dict[str, bytes]] = []
        self.whoami_response, self.remote_files = whoami, list(remote_files)
        for name in ("whoami", "create_repo", "create_branch", "list_repo_files", "create_commit"):
            monkeypatch.setattr(HfApi, name, getattr(self, name))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def whoami(self, token=None, **kwargs):
        self.calls.append(("whoami", {"token": token}))
        return self.whoami_response

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", {"repo_id": repo_id, **kwargs}))
        return list(self.remote_files)

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
        self.commits.append({op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations})
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            commit_message=kwargs["commit_message"],
            commit_description="",
            oid="abc123",
        )


@pytest.fixture
def no_saved_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


def test_dry_run_writes_the_exact_folder_and_it_loads_back(checkpoint, tmp_path):
    from transformers import AutoModel, AutoModelForQuestionAnswering, MambaModel, pipeline

    from biomamba_hf import MambaForQuestionAnswering

    qa_dir, clm_dir = checkpoint
    folder = hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, dry_run=True, dry_run_dir=tmp_path / "up")

    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == expected_files(qa_dir)  # no training_args.bin: pickles are never uploaded
    assert (folder / "model.safetensors").read_bytes() == (qa_dir / "model.safetensors").read_bytes()
    card = ModelCard.load(folder / "README.md")
    assert card.data.eval_results[0].metric_value == QA_RESULTS["bioasq_4b_strict_acc"]
    assert "### Continued pretraining" in card.text and "![Training curves" in card.text

    assert type(AutoModel.from_pretrained(folder)) is MambaModel
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    assert type(model) is MambaForQuestionAnswering
    original = MambaForQuestionAnswering.from_pretrained(qa_dir).state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, original[name], msg=name)
    context = "Cystic fibrosis results from mutations in the CFTR chloride channel."
    answer = pipeline("question-answering", model=str(folder))(question="Which gene?", context=context)
    assert answer["answer"] == context[answer["start"] : answer["end"]]


@pytest.mark.slow
def test_usage_snippets_of_the_card_run_as_written(checkpoint, tmp_path, capsys):
    qa_dir, clm_dir = checkpoint
    folder = hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, dry_run=True, dry_run_dir=tmp_path / "up")
    snippets = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.DOTALL)
    assert len(snippets) == 1  # the QA card shows QA usage only
    for snippet in snippets:
        # The Hub id is the only thing replaced: the repository's files are those of the dry-run folder.
        exec(compile(snippet.replace(REPO_ID, str(folder)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'answer':" in printed


def test_push_prepares_one_commit_with_exactly_the_expected_files(checkpoint, monkeypatch, caplog, capsys):
    qa_dir, clm_dir = checkpoint
    hub_api = HubRecorder(monkeypatch, remote_files=[".gitattributes", "config.json", "model.safetensors"])
    caplog.set_level("DEBUG")
    info = hub.push_to_hub(
        qa_dir, REPO_ID, pretraining_dir=clm_dir, token=FAKE_TOKEN, private=True, revision="v0.1", commit_message="m"
    )

    assert info.commit_url.endswith("/commit/abc123")
    assert hub_api.names() == ["whoami", "create_repo", "create_branch", "list_repo_files", "create_commit"]
    calls = dict(hub_api.calls)
    assert calls["create_repo"] == {"repo_id": REPO_ID, "token": FAKE_TOKEN, "private": True, "exist_ok": True}
    assert calls["create_branch"] == {"repo_id": REPO_ID, "branch": "v0.1", "token": FAKE_TOKEN, "exist_ok": True}
    assert calls["list_repo_files"]["revision"] == "v0.1"
    assert calls["create_commit"] == {
        "repo_id": REPO_ID,
        "commit_message": "m",
        "revision": "v0.1",
        "token": FAKE_TOKEN,
    }
    (commit,) = hub_api.commits
    assert set(commit) == expected_files(qa_dir)
    assert commit["model.safetensors"] == (qa_dir / "model.safetensors").read_bytes()
    for name, content in commit.items():
        assert FAKE_TOKEN.encode() not in content, name
    assert FAKE_TOKEN not in caplog.text + "".join(capsys.readouterr())


def test_a_leaked_token_in_a_recorded_file_stops_the_push(checkpoint, monkeypatch):
    qa_dir, _ = checkpoint
    hub_api = HubRecorder(monkeypatch)
    write_json(qa_dir / "eval_results.json", {"note": f"pushed with {FAKE_TOKEN}"})
    with pytest.raises(ValueError, match=r"eval_results.json contains a Hugging Face token; nothing was uploaded"):
        hub.push_to_hub(qa_dir, REPO_ID, token=FAKE_TOKEN)
    assert "create_commit" not in hub_api.names()


def test_run_args_with_a_token_are_redacted_on_the_way_out(checkpoint, tmp_path):
    qa_dir, _ = checkpoint
    write_json(qa_dir / "run_args.json", {"learning_rate": 5e-5, "hub_token": FAKE_TOKEN})
    folder = hub.push_to_hub(qa_dir, REPO_ID, dry_run=True, dry_run_dir=tmp_path / "up")
    assert '"hub_token": "<redacted>"' in (folder / "run_args.json").read_text()


def test_no_token_fails_before_any_file_is_prepared(checkpoint, monkeypatch, no_saved_token):
    qa_dir, _ = checkpoint
    hub_api = HubRecorder(monkeypatch)
    staged = []
    monkeypatch.setattr(hub.push, "_stage", lambda *args: staged.append(args))
    with pytest.raises(ValueError, match=r"No Hugging Face token found, so nothing was prepared or uploaded"):
        hub.push_to_hub(qa_dir, REPO_ID)
    assert hub_api.calls == [] and staged == []


@pytest.mark.parametrize(
    ("whoami", "repo_id", "message"),
    [
        ({"name": "LeoYML", "auth": {"accessToken": {"role": "read"}}}, REPO_ID, r"token of 'LeoYML' is read-only"),
        (WRITE_ACCESS, "someone-else/biomamba-130m", r"'LeoYML' cannot write to namespace 'someone-else'"),
        (
            {"name": "LeoYML", "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [
                {"entity": {"type": "user", "name": "LeoYML"}, "permissions": ["repo.content.read"]}]}}}},
            REPO_ID,
            r"fine-grained Hugging Face token of 'LeoYML' has no write permission on 'LeoYML'",
        ),
    ],
)  # fmt: skip
def test_no_write_access_fails_before_any_file_is_prepared(checkpoint, monkeypatch, whoami, repo_id, message):
    qa_dir, _ = checkpoint
    hub_api = HubRecorder(monkeypatch, whoami=whoami)
    staged = []
    monkeypatch.setattr(hub.push, "_stage", lambda *args: staged.append(args))
    with pytest.raises(ValueError, match=message):
        hub.push_to_hub(qa_dir, repo_id, token=FAKE_TOKEN)
    assert hub_api.names() == ["whoami"] and staged == []


def test_org_namespace_and_fine_grained_write_tokens_are_accepted(checkpoint, monkeypatch):
    qa_dir, _ = checkpoint
    hub_api = HubRecorder(monkeypatch)
    hub.push_to_hub(qa_dir, "biomamba-org/biomamba-130m", token=FAKE_TOKEN)
    fine_grained = {"name": "LeoYML", "auth": {"accessToken": {"role": "fineGrained", "fineGrained": {"scoped": [
        {"entity": {"type": "user", "name": "LeoYML"}, "permissions": ["repo.content.read", "repo.write"]}]}}}}  # fmt: skip
    hub_api.whoami_response = fine_grained
    hub.push_to_hub(qa_dir, REPO_ID, token=FAKE_TOKEN)
    assert hub_api.names().count("create_commit") == 2


def test_existing_remote_card_and_metrics_are_kept_without_overwrite(checkpoint, monkeypatch):
    qa_dir, clm_dir = checkpoint
    remote = ["README.md", "config.json", "model.safetensors", "pretraining/all_results.json"]
    hub_api = HubRecorder(monkeypatch, remote_files=remote)
    with pytest.raises(
        ValueError,
        match=r"LeoYML/biomamba-130m \(revision main\) already has README.md, pretraining/all_results.json; "
        r"nothing was uploaded. Pass --overwrite",
    ):
        hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, token=FAKE_TOKEN)
    assert "create_commit" not in hub_api.names()

    hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, token=FAKE_TOKEN, overwrite=True)
    assert set(hub_api.commits[0]) == expected_files(qa_dir)


def test_pickle_only_weights_and_incomplete_folders_are_refused(checkpoint, tmp_path):
    qa_dir, _ = checkpoint
    (qa_dir / "model.safetensors").rename(qa_dir / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"no safetensors weights .* pickle weights \(pytorch_model.bin, training_args"
    ):
        hub.push_to_hub(qa_dir, REPO_ID, dry_run=True, dry_run_dir=tmp_path / "up")
    (qa_dir / "pytorch_model.bin").rename(qa_dir / "model.safetensors")
    (qa_dir / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match=r"has no tokenizer \(tokenizer_config.json\)"):
        hub.push_to_hub(qa_dir, REPO_ID, dry_run=True, dry_run_dir=tmp_path / "up")
    with pytest.raises(ValueError, match=r"has no config.json"):
        hub.push_to_hub(write_clm_run(tmp_path / "bare"), REPO_ID, dry_run=True, dry_run_dir=tmp_path / "up")
    assert not (tmp_path / "up").exists()


def test_example_script_dry_run_prints_the_file_list(checkpoint, tmp_path, monkeypatch, capsys):
    qa_dir, clm_dir = checkpoint
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delitem(sys.modules, "push_to_hub", raising=False)
    import push_to_hub

    argv = ["--model_dir", str(qa_dir), "--repo_id", REPO_ID, "--pretraining_dir", str(clm_dir), "--dry_run"]
    assert push_to_hub.main([*argv, "--dry_run_dir", str(tmp_path / "up")]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^(\S+)\s+\d+(?:\.\d)? (?:B|KB|MB)$", out, flags=re.MULTILINE)
    assert set(listed) == expected_files(qa_dir)
    assert re.search(rf"^total\s+[\d.]+ KB  \({len(listed)} files\)$", out, flags=re.MULTILINE)

    with pytest.raises(ValueError, match=r"dry_run_dir .* is not empty"):
        push_to_hub.main([*argv, "--dry_run_dir", str(tmp_path / "up")])
    with pytest.raises(ValueError, match=r"--dry_run writes the folder it would upload: pass --dry_run_dir"):
        push_to_hub.main(argv)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_example_script_reads_an_argument_file_with_the_package_reader(checkpoint, tmp_path, monkeypatch, suffix):
    import json

    qa_dir, clm_dir = checkpoint
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delitem(sys.modules, "push_to_hub", raising=False)
    import push_to_hub

    values = {"model_dir": str(qa_dir), "repo_id": REPO_ID, "pretraining_dir": str(clm_dir), "dry_run": True}
    path = tmp_path / f"push{suffix}"
    path.write_text(json.dumps(values))  # JSON is YAML too
    assert push_to_hub.main([str(path), "--dry_run_dir", str(tmp_path / "up")]) == 0  # flags after it add to it
    assert (tmp_path / "up" / "README.md").is_file()

    missing = tmp_path / f"typo{suffix}"
    with pytest.raises(FileNotFoundError, match=rf"argument file {re.escape(str(missing))} does not exist .*: pass "
                       r"the path of an existing \.yaml/\.json file of arguments, or give the arguments as flags"):  # fmt: skip
        push_to_hub.main([str(missing)])
    path.write_text('{"model_dir": [')
    with pytest.raises(ValueError, match=rf"(?s){re.escape(str(path))} is not valid {suffix[1:].upper()}: .*Fix "
                       r"the file \(argument names mapped to values.*\) or give the arguments as flags"):  # fmt: skip
        push_to_hub.main([str(path)])
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: expected a mapping of argument names to values, "
                       r"got list\. Fix the file"):  # fmt: skip
        push_to_hub.main([str(path)])


def test_a_pretraining_run_the_model_does_not_descend_from_is_not_pushed(checkpoint, tmp_path, mamba2_clm_dir):
    qa_dir, _ = checkpoint
    other = write_clm_run(tmp_path / "other-clm", weights_from=mamba2_clm_dir)
    with pytest.raises(ValueError, match=r"was fine-tuned from the local checkpoint .*/clm .* but pretraining_dir "
                       r".*/other-clm holds model\.safetensors sha256 [0-9a-f]{12}: it is not the checkpoint"):  # fmt: skip
        hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=other, dry_run=True, dry_run_dir=tmp_path / "up")
    assert not (tmp_path / "up").exists()


def test_a_missing_pretraining_dir_stops_the_script(checkpoint, tmp_path, monkeypatch):
    qa_dir, _ = checkpoint
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delitem(sys.modules, "push_to_hub", raising=False)
    import push_to_hub

    missing = tmp_path / "typo-clm"
    argv = ["--model_dir", str(qa_dir), "--repo_id", REPO_ID, "--pretraining_dir", str(missing), "--dry_run"]
    with pytest.raises(ValueError, match=rf"--pretraining_dir {re.escape(str(missing))} does not exist or is not a"):
        push_to_hub.main([*argv, "--dry_run_dir", str(tmp_path / "up")])
    with pytest.raises(ValueError, match=r"pretraining_dir .*typo-clm does not exist or is not a folder"):
        hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=missing, dry_run=True, dry_run_dir=tmp_path / "up")
    assert not (tmp_path / "up").exists()


@pytest.mark.parametrize("architecture", ["Mamba2ForCausalLM", "Mamba2ForQuestionAnswering",
                                          "Mamba2ForSequenceClassification"])  # fmt: skip
def test_mamba2_checkpoints_are_pushed_with_a_mamba2_card(tmp_path, tokenizer_dir, mamba2_clm_dir, architecture):
    from test_model_card import model_class_named, save_tiny_model, start_args

    from biomamba_hf.hub.card import ARCHITECTURE_PIPELINES

    run_dir = tmp_path / "run"
    save_tiny_model(run_dir, tokenizer_dir, model_class_named(architecture))
    write_json(run_dir / "run_args.json", start_args(mamba2_clm_dir))
    write_json(run_dir / "all_results.json", {"train_loss": 1.5, "epoch": 0.25})
    folder = hub.push_to_hub(run_dir, "someone/tiny-mamba2", dry_run=True, dry_run_dir=tmp_path / "up")
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == ARCHITECTURE_PIPELINES[architecture]
    assert "mamba2" in card.data.tags and "mamba" not in card.data.tags
    assert "[Mamba-2](https://arxiv.org/abs/2405.21060)" in card.text and f"`{architecture}`" in card.text
    assert card.data.base_model is None and "mamba-130m" not in card.text  # started from a local Mamba-2 folder
    assert "| epochs run | 0.25 |" in card.text
    model = model_class_named(architecture).from_pretrained(folder)
    assert type(model).__name__ == architecture


def _offline_push_env(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    return {**env, "HF_TOKEN": FAKE_TOKEN, **overrides}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HF_HUB_OFFLINE": "1"},
            r"error: Cannot push: the Hugging Face Hub is offline for this process \(HF_HUB_OFFLINE is set\) while "
            r"checking the token \(whoami\); nothing was uploaded to LeoYML/biomamba-130m\. To retry, unset "
            r"HF_HUB_OFFLINE \(or set HF_HUB_OFFLINE=0\) and run the same command again",
        ),
        (  # a closed local port: the connection error huggingface_hub's HTTP library raises without a network
            {"HF_ENDPOINT": "http://127.0.0.1:9"},
            r"error: Cannot push: the Hugging Face Hub is unreachable \(no network\?\) while checking the token "
            r"\(whoami\): ConnectError: .*; nothing was uploaded to LeoYML/biomamba-130m\. To retry, check the "
            r"network connection .* and run the same command again",
        ),
    ],
    ids=["HF_HUB_OFFLINE", "no-network"],
)
def test_pushing_while_offline_exits_non_zero_with_a_message_not_a_traceback(checkpoint, env, message):
    qa_dir, clm_dir = checkpoint
    command = [sys.executable, str(ROOT / "examples" / "push_to_hub.py"), "--model_dir", str(qa_dir)]
    command += ["--repo_id", REPO_ID, "--pretraining_dir", str(clm_dir)]
    proc = subprocess.run(command, capture_output=True, text=True, env=_offline_push_env(**env), timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(message, proc.stderr), proc.stderr
    assert FAKE_TOKEN not in proc.stderr + proc.stdout


def _connect_error() -> type[Exception]:
    """The connection error of the HTTP library this huggingface_hub release uses (httpx2 on 2.x, httpx on 1.x)."""
    for module_name in ("httpx2", "httpx"):
        if importlib.util.find_spec(module_name):
            return importlib.import_module(module_name).ConnectError
    pytest.skip("huggingface_hub uses neither httpx2 nor httpx")


@pytest.mark.parametrize(
    ("failing_call", "step", "uploaded"),
    [
        ("whoami", r"checking the token \(whoami\)", r"nothing was uploaded to LeoYML/biomamba-130m\. "),
        ("create_branch", "creating or finding the branch v0.1", r"\(no commit was made; the repository or branch"),
        ("list_repo_files", "listing the repository's files", r"\(no commit was made; the repository or branch"),
        ("create_commit", "uploading the commit", r"\(no commit was made; the repository or branch may have been"),
    ],
)
@pytest.mark.parametrize("offline", [True, False], ids=["offline", "no-network"])
def test_an_unreachable_hub_is_named_with_the_step_and_nothing_uploaded(
    checkpoint, monkeypatch, failing_call, step, uploaded, offline
):
    from huggingface_hub.errors import OfflineModeIsEnabled

    qa_dir, clm_dir = checkpoint
    hub_api = HubRecorder(monkeypatch)
    error = (
        OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/whoami-v2: offline mode is enabled.")
        if offline
        else _connect_error()("[Errno -3] Temporary failure in name resolution")
    )

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(HfApi, failing_call, fail)
    reason = r"offline for this process \(HF_HUB_OFFLINE is set\)" if offline else r"unreachable \(no network\?\)"
    retry = r"unset HF_HUB_OFFLINE" if offline else "check the network connection"
    with pytest.raises(
        hub.HubUnreachableError,
        match=rf"Cannot push: the Hugging Face Hub is {reason} while {step}.*{uploaded}.*To retry, {retry}.* run the "
        "same command again",
    ):
        hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, token=FAKE_TOKEN, revision="v0.1")
    assert hub_api.commits == []

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delitem(sys.modules, "push_to_hub", raising=False)
    import push_to_hub

    argv = ["--model_dir", str(qa_dir), "--repo_id", REPO_ID, "--hub_token", FAKE_TOKEN, "--revision", "v0.1"]
    assert push_to_hub.main(argv) == 1


def test_the_run_lock_and_other_bookkeeping_files_are_never_uploaded(checkpoint, monkeypatch, tmp_path):
    from biomamba_hf.script_utils import LOCK_FILE, acquire_output_dir_lock, release_output_dir_lock

    qa_dir, clm_dir = checkpoint
    assert LOCK_FILE.startswith(hub.push.BOOKKEEPING_PREFIX)
    # Names that match the metrics patterns (*_results.json, *per_batch*.json) but are the package's bookkeeping.
    for run_dir in (qa_dir, clm_dir):
        write_json(run_dir / "_biomamba_eval_results.json", {"eval_loss": 1.0})
        write_json(run_dir / "_biomamba_per_batch.json", {})
    acquire_output_dir_lock(qa_dir)  # the real lock of a run in progress (or left by a killed one)
    try:
        assert (qa_dir / LOCK_FILE).is_file()
        (clm_dir / LOCK_FILE).write_text((qa_dir / LOCK_FILE).read_text())
        plan = hub.plan_upload(qa_dir, pretraining_dir=clm_dir)
        assert not [path for path in plan.files if "_biomamba" in path]
        assert set(plan.files) | set(plan.generated) == expected_files(qa_dir)

        folder = hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, dry_run=True, dry_run_dir=tmp_path / "up")
        assert not list(folder.rglob("_*"))
        hub_api = HubRecorder(monkeypatch)
        hub.push_to_hub(qa_dir, REPO_ID, pretraining_dir=clm_dir, token=FAKE_TOKEN)
        (commit,) = hub_api.commits
        assert set(commit) == expected_files(qa_dir)
    finally:
        release_output_dir_lock(qa_dir)
