"""Tokenizer helpers.

Mamba and Mamba-2 checkpoints (``state-spaces/mamba-130m-hf``, ``state-spaces/mamba2-130m`` and models continued
from them) ship the GPT-NeoX tokenizer: it has no padding token and no token to separate a question from its
context. :func:`prepare_tokenizer_for_qa` adds both, once, so that the tokenizer saved beside a QA checkpoint
tokenizes exactly as it did in training.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Special tokens of the GPT-NeoX tokenizer that Mamba and Mamba-2 checkpoints use.
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
#: Separator placed between question and context (and between the two copies of a repeated context).
SEP_TOKEN = "<|sep|>"


def prepare_tokenizer_for_qa(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None
) -> PreTrainedTokenizerBase:
    """Give a (GPT-NeoX style) tokenizer the padding and separator tokens extractive QA needs.

    * ``pad_token`` becomes ``<|padding|>`` (id 1 in GPT-NeoX) when the tokenizer has no pad token;
    * ``sep_token`` becomes ``<|sep|>`` (a new special token) when the tokenizer has none;
    * padding is on the right: Mamba reads left to right, so right padding leaves real positions untouched.

    The tokenizer is changed in place and returned. Calling it again changes nothing. When ``model`` is given and
    the tokenizer has grown beyond the model's embedding matrix, the embeddings are resized (the GPT-NeoX tokenizer
    has 50,277 tokens; ``mamba-130m-hf`` pads its embedding to 50,280 rows and the Mamba-2 checkpoints to 50,288, so
    the separator fits without a resize there) and the model config records the pad/sep ids.

    Raises:
        ValueError: if the tokenizer is not a fast tokenizer (offset mappings are needed to map answers back to
            characters of the context).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"Extractive QA needs a fast tokenizer (with offset mappings), got {type(tokenizer).__name__}. "
            "Load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
        )
    if tokenizer.pad_token is None:
        if PAD_TOKEN in tokenizer.get_vocab():
            tokenizer.pad_token = PAD_TOKEN
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if tokenizer.sep_token is None:
        tokenizer.add_special_tokens({"sep_token": SEP_TOKEN})
    tokenizer.padding_side = "right"
    if model is not None:
        embeddings = model.get_input_embeddings()
        if len(tokenizer) > embeddings.num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.sep_token_id = tokenizer.sep_token_id
    return tokenizer


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1000, model_max_length: int = 2048):
    """Train a small byte-level BPE tokenizer with the GPT-NeoX special tokens, for demos and tests.

    Real training starts from a checkpoint's own tokenizer (GPT-NeoX for Mamba). This helper exists so that the demo
    and the test suite run on a machine with no access to the Hub: it returns a ``PreTrainedTokenizerFast`` with
    ``<|endoftext|>`` (id 0) as bos/eos/unk and ``<|padding|>`` (id 1) in the vocabulary but, as in GPT-NeoX, not
    set as the pad token.

    >>> tok = train_bpe_tokenizer(["Aspirin inhibits platelet aggregation."] * 20, vocab_size=300)
    >>> tok.convert_ids_to_tokens([0, 1])
    ['<|endoftext|>', '<|padding|>']
    >>> tok.decode(tok("Aspirin inhibits")["input_ids"])
    'Aspirin inhibits'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 28996, lowercase: bool = False):
    """Train a BERT-style WordPiece tokenizer (``[CLS] A [SEP] B [SEP]`` pairs), for benchmarks and tests.

    The baseline of the QA benchmarks is a BERT-base model of BioBERT's size (cased, 28,996 tokens), whose vocabulary
    is not available offline; this stands in for it, and for a BERT tokenizer in the tests of the pair layout.

    >>> tok = train_wordpiece_tokenizer(["Aspirin inhibits platelet aggregation."] * 20, vocab_size=200)
    >>> tok.convert_ids_to_tokens(tok("Aspirin", "platelet")["input_ids"])[0], tok("a", "b")["token_type_ids"][-1]
    ('[CLS]', 1)
    """
    from tokenizers import BertWordPieceTokenizer, processors
    from transformers import PreTrainedTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=lowercase)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size)
    backend = wordpiece._tokenizer
    backend.post_processor = processors.BertProcessing(
        ("[SEP]", backend.token_to_id("[SEP]")), ("[CLS]", backend.token_to_id("[CLS]"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
