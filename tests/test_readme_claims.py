"""README claims that no other test exercised."""

import pytest
from helpers import example_script

FAKE_TOKEN = "hf_readmeClaimFakeToken0123456789"


@pytest.mark.parametrize("script", ["run_qa", "run_pubmedqa"])
def test_the_fine_tuning_scripts_refuse_hub_token_too(script, tmp_path):
    """README: "the training scripts refuse `--hub_token`" (run_clm's case is in test_security.py)."""
    with example_script(script) as module:
        with pytest.raises(ValueError, match=r"--hub_token would be saved in training_args.bin.*HF_TOKEN"):
            module.parse_args(
                [
                    "--model_name_or_path",
                    "some/model",
                    "--output_dir",
                    str(tmp_path / "out"),
                    "--hub_token",
                    FAKE_TOKEN,
                ]
            )
    assert not (tmp_path / "out").exists()


def test_every_test_that_reliability_md_cites_exists():
    """RELIABILITY.md backs each line with `tests/<file>::<test>`: every one of them must exist."""
    import re

    from helpers import ROOT

    text = (ROOT / "RELIABILITY.md").read_text()
    cited = re.findall(r"`(test_[a-z_0-9]+\.py)::(test_[A-Za-z_0-9]+)", text)
    assert len(cited) > 20
    missing = [f"{f}::{t}" for f, t in cited if f"def {t}(" not in (ROOT / "tests" / f).read_text()]
    assert not missing, f"RELIABILITY.md cites tests that do not exist: {missing}"
