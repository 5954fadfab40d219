from __future__ import annotations

import pytest
from helpers import example_script, tiny_config, train_test_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A GPT-NeoX-like tokenizer (eos id 0, `<|padding|>` id 1, no pad token set), trained once per session."""
    path = tmp_path_factory.mktemp("tokenizer")
    train_test_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def clm_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random MambaForCausalLM saved as state-spaces/mamba-130m-hf is: weights, config and tokenizer."""
    import torch
    from transformers import AutoTokenizer, MambaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    # Pad the vocabulary past the tokenizer, as mamba-130m-hf does (50,277 tokens, 50,280 rows).
    model = MambaForCausalLM(tiny_config(vocab_size=len(tok) + 3))
    path = tmp_path_factory.mktemp("clm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_tokenizer():
    """A BERT-style WordPiece tokenizer ([CLS] question [SEP] context [SEP]), to test the generic "pair" layout."""
    from helpers import SENTENCES

    from biomamba_hf.tokenization import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(SENTENCES * 5, vocab_size=300, lowercase=True)


@pytest.fixture(scope="session")
def mamba2_clm_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random Mamba2ForCausalLM saved as a converted state-spaces/mamba2-130m is: weights, config, tokenizer."""
    import torch
    from helpers import tiny_mamba2_config
    from transformers import AutoTokenizer, Mamba2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    # Pad the vocabulary to a multiple of 16 past the tokenizer, as mamba2-130m does (50,277 tokens, 50,288 rows).
    model = Mamba2ForCausalLM(tiny_mamba2_config(vocab_size=(len(tok) // 16 + 1) * 16))
    path = tmp_path_factory.mktemp("mamba2_clm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run_clm():
    """``examples/run_clm.py`` imported as a module (its ``main(argv)`` runs a training), once per test module."""
    with example_script("run_clm") as module:
        yield module
