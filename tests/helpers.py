"""Small builders shared by the tests: a tokenizer trained on the fly and tiny random Mamba models."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

#: A handful of biomedical sentences; the test tokenizer is trained on them (no download needed).
SENTENCES = [
    "Aspirin irreversibly inhibits cyclooxygenase and reduces platelet aggregation.",
    "Mutations in the BRCA1 gene increase the risk of breast and ovarian cancer.",
    "Imatinib targets the BCR-ABL tyrosine kinase in chronic myeloid leukemia.",
    "Huntington's disease is caused by a CAG repeat expansion in the HTT gene.",
    "Metformin lowers hepatic glucose production in patients with type 2 diabetes.",
    "The spike protein of SARS-CoV-2 binds the ACE2 receptor.",
    "Cystic fibrosis results from mutations in the CFTR chloride channel.",
    "Vitamin K is required for the carboxylation of coagulation factors.",
    "Dopamine neurons of the substantia nigra degenerate in Parkinson's disease.",
    "Insulin is secreted by beta cells of the pancreatic islets.",
    "Which gene is mutated in cystic fibrosis? What does imatinib inhibit?",
    "Randomized controlled trials (p < 0.05) showed a 23% reduction in mortality.",
]


ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def example_script(name: str):
    """Import ``examples/<name>.py`` as the module ``name`` (so its ``main(argv)`` can be called), then forget it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through the module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def data_dir() -> Path:
    """The real data folder named by BIOMAMBA_DATA_DIR; skips the calling test when it is unset."""
    value = os.environ.get("BIOMAMBA_DATA_DIR")
    if not value:
        pytest.skip("BIOMAMBA_DATA_DIR is not set: real-data tests need the shared data folder")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"BIOMAMBA_DATA_DIR={value} is not a directory")
    return path


def train_test_tokenizer(vocab_size: int = 400):
    from biomamba_hf.tokenization import train_bpe_tokenizer

    return train_bpe_tokenizer(SENTENCES * 5, vocab_size=vocab_size)


def tiny_config(vocab_size: int, **overrides):
    from transformers import MambaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=4,
        time_step_rank=4,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
    )
    kwargs.update(overrides)
    return MambaConfig(**kwargs)


def record_compiled_modules(monkeypatch) -> list[str]:
    """Class names of the modules that get ``nn.Module.compile``-d from now on (each is still compiled for real)."""
    import torch

    compiled, original_compile = [], torch.nn.Module.compile

    def spy(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        return original_compile(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", spy)
    return compiled


def tiny_mamba2_config(vocab_size: int, **overrides):
    """A tiny random Mamba-2 shape: 4 heads of 16 channels (hidden 32, expand 2), state 16, chunks of 4 tokens."""
    from transformers import Mamba2Config

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        expand=2,
        head_dim=16,
        num_heads=4,
        n_groups=1,
        state_size=16,
        num_hidden_layers=2,
        conv_kernel=4,
        chunk_size=4,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    return Mamba2Config(**kwargs)


def tiny_bert_qa(vocab_size: int):
    """A tiny random BertForQuestionAnswering (hidden 32, 2 layers, 2 heads), to test the generic "pair" layout."""
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    return BertForQuestionAnswering(config)


def stand_in_data_dir(tmp_path: Path) -> Path:
    """A data folder with empty stand-ins for the paths the example configs name, for tests that only parse them."""
    root = tmp_path / "data"
    for name in ("pubmed/train.jsonl.gz", "pubmed/dev.jsonl.gz", "pmc_fulltext/train.jsonl.gz"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "tokenizers" / "gpt-neox-20b").mkdir(parents=True, exist_ok=True)
    return root


def count_opens(monkeypatch):
    """Count ``Path.open`` calls per resolved path from now on (the package reads its JSON files through it)."""
    from collections import Counter

    opens: Counter = Counter()
    original = Path.open

    def counting_open(self, *args, **kwargs):
        opens[self.resolve()] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    return opens
