"""The one-commit Hub push: upload planning (safetensors only), write-access check from ``whoami``, secret scan."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bioasq.formats import write_json
from ..reliability import PICKLE_WEIGHT_SUFFIXES, format_bytes
from .card import (
    CARD_FILE,
    PLOT_FILE,
    RUN_ARGS_FILE,
    TRAINER_STATE_FILE,
    check_descent,
    read_recorded_json,
    redact_secrets,
    resolve_stage_dirs,
    save_model_card,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)


MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
#: Recorded metrics uploaded beside the card (glob patterns, matched in each run folder).
METRICS_PATTERNS = ("all_results.json", "*_results.json", "*per_batch*.json", TRAINER_STATE_FILE, RUN_ARGS_FILE)
#: Files whose name starts with this are bookkeeping and never uploaded, whatever pattern they match: the package's
#: ``_biomamba*`` files (the run lock ``script_utils.LOCK_FILE``, ...); ``Trainer.push_to_hub`` skips ``_*`` too.
BOOKKEEPING_PREFIX = "_"
#: A Hugging Face token: no uploaded file but the weights may contain one.
_TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (``HF_HUB_OFFLINE=1`` or no network); the message says what was uploaded."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """What ``huggingface_hub`` raises when the Hub cannot be reached, whichever HTTP library this release uses.

    ``OfflineModeIsEnabled`` (``HF_HUB_OFFLINE=1``) is a ``ConnectionError``; connection failures and timeouts come
    from its HTTP library (``httpx2``/``httpx`` transport errors, or ``requests``' connection errors and timeouts).
    """
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors.extend(getattr(module, name) for name in names if isinstance(getattr(module, name, None), type))
    return tuple(errors)


def _unreachable(repo_id: str, step: str, err: BaseException, *, created: bool) -> HubUnreachableError:
    """The error for a push that could not reach the Hub: why, what was (not) uploaded and how to retry."""
    offline = _is_offline_error(err)
    if offline:
        reason = f"the Hugging Face Hub is offline for this process (HF_HUB_OFFLINE is set) while {step}"
    else:
        reason = f"the Hugging Face Hub is unreachable (no network?) while {step}: {type(err).__name__}: {err}"
    uploaded = (
        f"nothing was uploaded to {repo_id} (no commit was made; the repository or branch may have been created)"
        if created
        else f"nothing was uploaded to {repo_id}"
    )
    how_to_retry = (
        "unset HF_HUB_OFFLINE (or set HF_HUB_OFFLINE=0)"
        if offline
        else "check the network connection (and HTTPS_PROXY, HF_ENDPOINT if you use them)"
    )
    return HubUnreachableError(
        f"Cannot push: {reason}; {uploaded}. To retry, {how_to_retry} and run the same command again: the push is "
        "one commit, so a rerun uploads every file. To check the upload folder without a network, use a dry run "
        "(--dry_run --dry_run_dir DIR)."
    )


def _is_offline_error(err: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(err, OfflineModeIsEnabled)


@dataclass
class UploadPlan:
    """Which local file goes to which path of the repository."""

    files: dict[str, Path]  # path in repo -> local file
    generated: tuple[str, ...]  # paths written while preparing (card, plot)

    @property
    def protected(self) -> list[str]:
        """Paths that are not overwritten on the Hub without ``overwrite=True``: card, plot and metrics."""
        return sorted([*self.generated, *(p for p in self.files if _is_metrics_file(p))])


def _is_metrics_file(path_in_repo: str) -> bool:
    return any(Path(path_in_repo).match(pattern) for pattern in METRICS_PATTERNS)


def plan_upload(model_dir: str | os.PathLike, *, pretraining_dir: str | os.PathLike | None = None) -> UploadPlan:
    """List the files of a checkpoint folder to upload: safetensors weights, config, tokenizer and metrics.

    Metrics of a separate ``pretraining_dir`` go under ``pretraining/`` in the repository. Pickle files
    (``*.bin``, ``*.pt``, ...) and bookkeeping files (names starting with ``_``, such as the run lock
    ``_biomamba_run.lock``) are never uploaded.

    Raises:
        ValueError: if the folder has no ``config.json``, no safetensors weights (with a hint when only pickle
            weights are there) or no tokenizer, or if ``pretraining_dir`` is not a folder, is given for a causal
            LM, or is not the run the fine-tuned model descends from (:func:`~biomamba_hf.hub.check_descent`).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} has no config.json: pass the folder written by model.save_pretrained().")
    stage_dirs = resolve_stage_dirs(model_dir, pretraining_dir=pretraining_dir)
    if pretraining_dir is not None and Path(pretraining_dir).resolve() != model_dir.resolve():
        check_descent(model_dir, pretraining_dir)
    pretraining_dir = stage_dirs.get("pretraining")
    files: dict[str, Path] = {}
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            files[name] = model_dir / name
    index_file = model_dir / "model.safetensors.index.json"
    if index_file.is_file():
        for shard in sorted(set(read_recorded_json(index_file, dict).get("weight_map", {}).values())):
            if not (model_dir / shard).is_file():
                raise ValueError(f"{index_file} names shard {shard!r}, which is missing from {model_dir}.")
            files[shard] = model_dir / shard
    if not any(name.endswith(".safetensors") for name in files):
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
        hint = (
            f" It has pickle weights ({', '.join(pickles)}), which are not uploaded: re-save them as safetensors "
            "with `model.save_pretrained(folder, safe_serialization=True)`."
            if pickles
            else ""
        )
        raise ValueError(f"{model_dir} has no safetensors weights (model.safetensors or an index).{hint}")
    tokenizer_files = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if "tokenizer_config.json" not in tokenizer_files:
        raise ValueError(
            f"{model_dir} has no tokenizer (tokenizer_config.json): save it beside the model with "
            "`tokenizer.save_pretrained(folder)`; the pipeline loads it from the same repository."
        )
    files.update({name: model_dir / name for name in tokenizer_files})
    for run_dir, prefix in ((model_dir, ""), (pretraining_dir, "pretraining/")):
        if run_dir is None or (prefix and Path(run_dir).resolve() == model_dir.resolve()):
            continue
        for pattern in METRICS_PATTERNS:
            for path in sorted(Path(run_dir).glob(pattern)):
                files[prefix + path.name] = path
        if prefix and not any(name.startswith(prefix) for name in files):
            raise ValueError(
                f"pretraining_dir {run_dir} holds no recorded results ({', '.join(METRICS_PATTERNS)}): pass the "
                "output_dir of the run_clm.py run the model was fine-tuned from, or leave it out."
            )
    bookkeeping = sorted(path for path in files if Path(path).name.startswith(BOOKKEEPING_PREFIX))
    for path in bookkeeping:
        del files[path]
    if bookkeeping:
        logger.info("Not uploading bookkeeping files: %s", ", ".join(bookkeeping))
    skipped = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
    if skipped:
        logger.info("Not uploading pickle files of %s: %s", model_dir, ", ".join(skipped))
    return UploadPlan(files=files, generated=(CARD_FILE, PLOT_FILE))


def _check_write_access(whoami: Mapping[str, Any], repo_id: str) -> None:
    """Raise when the token behind ``whoami`` (``HfApi.whoami()``) cannot write to ``repo_id``'s namespace."""
    user = whoami.get("name", "?")
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    access = (whoami.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    how_to_fix = (
        "create a token with write access at https://huggingface.co/settings/tokens and pass it (or set HF_TOKEN)"
    )
    if role == "read":
        raise ValueError(
            f"The Hugging Face token of {user!r} is read-only, so it cannot push to {repo_id}: {how_to_fix}."
        )
    if role == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        allowed = any(
            entry.get("entity", {}).get("name") in (namespace, repo_id)
            and any(permission in ("repo.write", "repo.content.write") for permission in entry.get("permissions", []))
            for entry in scoped
        )
        if not allowed:
            raise ValueError(
                f"The fine-grained Hugging Face token of {user!r} has no write permission on {namespace!r}, so it "
                f"cannot push to {repo_id}: {how_to_fix}."
            )
    writable = {user} | {org.get("name") for org in whoami.get("orgs", [])}
    if namespace not in writable:
        raise ValueError(
            f"The Hugging Face account {user!r} cannot write to namespace {namespace!r} (repo {repo_id}); it can "
            f"write to {sorted(n for n in writable if n)}. Use one of these namespaces or a token of that account."
        )


def _stage(plan: UploadPlan, folder: Path, card_kwargs: Mapping[str, Any], pretraining_dir) -> None:
    for path_in_repo, source in plan.files.items():
        target = folder / path_in_repo
        if path_in_repo.endswith(RUN_ARGS_FILE):  # older runs may hold a token: redact on the way out
            write_json(target, redact_secrets(read_recorded_json(source, dict)), ensure_ascii=True, sort_keys=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    # The card reads the staged copies, so it describes exactly what is uploaded.
    staged_pretraining = None
    if pretraining_dir is not None:  # a separate run's files are under pretraining/; else it is the model's own run
        separate = any(path.startswith("pretraining/") for path in plan.files)
        staged_pretraining = folder / "pretraining" if separate else folder
    # plan_upload checked the lineage on the original folders; the staged pretraining copy has no weights.
    save_model_card(folder, pretraining_dir=staged_pretraining, verify_lineage=False, **card_kwargs)


def _check_no_secrets(folder: Path, token: str | None) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".safetensors":
            continue
        content = path.read_bytes()
        if (token and token.encode() in content) or _TOKEN_PATTERN.search(content):
            raise ValueError(
                f"{path.relative_to(folder)} contains a Hugging Face token; nothing was uploaded. Remove the token "
                "from that file (save_run_arguments redacts *_token arguments) and push again."
            )


def format_file_list(folder: str | os.PathLike) -> str:
    """The files of a folder with their sizes, one per line, and the total (what a dry run prints)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    sizes = [p.stat().st_size for p in files]
    width = max([len(str(p.relative_to(folder))) for p in files] + [5])
    lines = [f"{str(p.relative_to(folder)):<{width}}  {format_bytes(s):>10}" for p, s in zip(files, sizes)]
    lines.append(f"{'total':<{width}}  {format_bytes(sum(sizes)):>10}  ({len(files)} files)")
    return "\n".join(lines)


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    pretraining_dir: str | os.PathLike | None = None,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    dry_run_dir: str | os.PathLike | None = None,
    commit_message: str = "Upload biomamba_hf checkpoint, model card and metrics",
    api: HfApi | None = None,
    **card_kwargs,
):
    """Upload a checkpoint folder (safetensors, config, tokenizer), its card, metrics and plot as ONE commit.

    Order of work: list the files (:func:`plan_upload`); unless ``dry_run``, check the token and its write access
    (before any file is prepared), create the repository (``private`` applies to a new one) and the ``revision``
    branch when missing, and refuse to replace a remote card, plot or metrics file unless ``overwrite``; then write
    the folder (card rendered from the copied results) and commit it with ``HfApi.create_commit``.

    With ``dry_run=True`` nothing touches the network: the exact folder is written to ``dry_run_dir`` (which must
    be empty or missing) and its path is returned. Otherwise the ``CommitInfo`` is returned.
    ``card_kwargs`` go to :func:`render_model_card`.

    Raises:
        ValueError: no token, a token without write access, a remote card/metrics file without ``overwrite``, a
            non-empty ``dry_run_dir``, a folder without safetensors weights, config or tokenizer.
        HubUnreachableError: ``HF_HUB_OFFLINE`` is set or the Hub cannot be reached (any step: ``whoami`` to the
            commit); the message names the step, says that no file was uploaded and how to retry.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    plan = plan_upload(model_dir, pretraining_dir=pretraining_dir)
    card_kwargs = {"repo_id": repo_id, **card_kwargs}

    if dry_run:
        if dry_run_dir is None:
            raise ValueError("A dry run writes the folder it would upload: pass dry_run_dir (an empty folder).")
        folder = Path(dry_run_dir)
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"dry_run_dir {folder} is not empty: pass a new or empty folder.")
        folder.mkdir(parents=True, exist_ok=True)
        _stage(plan, folder, card_kwargs, pretraining_dir)
        _check_no_secrets(folder, token)
        return folder

    token = token or get_token()
    if not token:
        raise ValueError(
            f"No Hugging Face token found, so nothing was prepared or uploaded to {repo_id}. Log in with "
            "`hf auth login`, set HF_TOKEN, or pass --hub_token (a token with write access)."
        )
    api = api or HfApi()
    network_errors = _network_errors()
    step, created = "checking the token (whoami)", False
    try:
        _check_write_access(api.whoami(token=token), repo_id)
        step = f"creating or finding the repository {repo_id}"
        repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
        created = True
        if revision is not None and revision != "main":
            step = f"creating or finding the branch {revision}"
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
        step = "listing the repository's files"
        remote = set(api.list_repo_files(repo_id, revision=revision, token=token))
    except network_errors as err:
        raise _unreachable(repo_id, step, err, created=created) from err
    clashes = sorted(remote & set(plan.protected))
    if clashes and not overwrite:
        raise ValueError(
            f"{repo_id} (revision {revision or 'main'}) already has {', '.join(clashes)}; nothing was uploaded. "
            "Pass --overwrite to replace them, or push to another --revision."
        )
    with tempfile.TemporaryDirectory(prefix="biomamba-push-") as tmp:
        folder = Path(tmp)
        _stage(plan, folder, card_kwargs, pretraining_dir)
        _check_no_secrets(folder, token)
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(p for p in folder.rglob("*") if p.is_file())
        ]
        logger.info("Pushing %d files to %s (revision %s) in one commit", len(operations), repo_id, revision or "main")
        try:
            return api.create_commit(
                repo_id,
                operations=operations,
                commit_message=commit_message,
                revision=revision,
                token=token,
            )
        except network_errors as err:  # a commit is atomic: it was not made
            raise _unreachable(repo_id, "uploading the commit", err, created=True) from err
