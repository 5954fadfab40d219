#!/usr/bin/env python
"""Push a biomamba_hf checkpoint, its model card, metrics and training curves to the Hub as one commit.

The card is rendered from the files the training runs recorded (see ``biomamba_hf.hub``), never typed by hand.

    # look first: write the exact folder that would be uploaded and list its files with sizes
    python examples/push_to_hub.py --model_dir out/qa --pretraining_dir out/clm \\
        --repo_id LeoYML/biomamba-130m --dry_run --dry_run_dir upload_preview

    # then push (token from `hf auth login`, HF_TOKEN or --hub_token; it needs write access)
    python examples/push_to_hub.py --model_dir out/qa --pretraining_dir out/clm --repo_id LeoYML/biomamba-130m

A ``.yaml`` or ``.json`` file with these arguments works too, as for the training scripts; flags after it override
it: ``python examples/push_to_hub.py args.yaml --dry_run --dry_run_dir upload_preview``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "Checkpoint folder: safetensors weights, config.json and tokenizer."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. LeoYML/biomamba-130m."})
    pretraining_dir: str | None = field(
        default=None,
        metadata={
            "help": "Output folder of the run_clm run the checkpoint was fine-tuned from (its metrics and curve go on "
            "the card). The fine-tuning run's recorded lineage (run_args.json) must show it started from these weights."
        },
    )
    revision: str | None = field(default=None, metadata={"help": "Branch to push to; created when missing."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private (new repos only)."})
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a README.md, plot or metrics file that already is in the repo."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Write the upload folder and list it; upload nothing."})
    dry_run_dir: str | None = field(default=None, metadata={"help": "Where a dry run writes the folder (empty)."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub token with write access (default: HF_TOKEN or the saved login)."}
    )
    commit_message: str = field(default="Upload biomamba_hf checkpoint, model card and metrics")
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "Card's base_model (default: the Hub id the recorded run started from, from run_args.json)."
        },
    )

    install_command: str | None = field(
        default=None,
        metadata={
            "help": "Install line of the card's usage section (default: biomamba_hf is not on PyPI; install it from "
            "a source checkout or a wheel built there)."
        },
    )

    def __post_init__(self):
        if self.pretraining_dir is not None and not Path(self.pretraining_dir).is_dir():
            raise ValueError(
                f"--pretraining_dir {self.pretraining_dir} does not exist or is not a folder: pass the output_dir of "
                "the run_clm.py run the model was fine-tuned from, or leave --pretraining_dir out."
            )
        if self.repo_id.count("/") > 1 or not self.repo_id.strip("/"):
            raise ValueError(f"--repo_id {self.repo_id!r} is not a Hub repo id; use 'namespace/name' or 'name'.")
        if self.dry_run and not self.dry_run_dir:
            raise ValueError("--dry_run writes the folder it would upload: pass --dry_run_dir (a new, empty folder).")


def main(argv: list[str] | None = None) -> int:
    from biomamba_hf import hub
    from biomamba_hf.script_utils import parse_arguments

    (args,) = parse_arguments((PushArguments,), sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)

    try:
        result = hub.push_to_hub(
            args.model_dir,
            args.repo_id,
            pretraining_dir=args.pretraining_dir,
            token=args.hub_token,
            private=args.private,
            revision=args.revision,
            overwrite=args.overwrite,
            dry_run=args.dry_run,
            dry_run_dir=args.dry_run_dir,
            commit_message=args.commit_message,
            base_model=args.base_model,
            install_command=args.install_command,
        )
    except hub.HubUnreachableError as err:  # an expected condition, not a bug: the message, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"Dry run: nothing was uploaded. The folder that would be pushed to {args.repo_id} is {result}:")
        print(hub.format_file_list(result))
    else:
        print(f"Pushed to {result.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
