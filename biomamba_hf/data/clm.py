"""Causal-LM data: reading text/JSON(L)/Hub datasets, packing into fixed blocks, the embedded PubMed demo.
Details: docs/modules.md.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

#: File name endings accepted for ``--train_file`` / ``--validation_file`` and the ``datasets`` builder for each.
FILE_FORMATS = {".txt": "text", ".json": "json", ".jsonl": "json"}
#: Default text fields of Hub datasets whose records nest their text. Values of the fields are joined into one text.
DATASET_TEXT_FIELDS = {
    "ncbi/pubmed": ("MedlineCitation.Article.ArticleTitle", "MedlineCitation.Article.Abstract.AbstractText"),
}
#: Label value ignored by the loss (``torch.nn.CrossEntropyLoss``'s default ``ignore_index``).
IGNORE_INDEX = -100


def file_format(path: str, argument: str = "--train_file") -> str:
    """The ``datasets`` builder (``"text"`` or ``"json"``) that reads ``path``, judged from its name.

    >>> file_format("pubmed/train.jsonl.gz")
    'json'
    >>> file_format("notes.txt")
    'text'
    """
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    extension = os.path.splitext(name)[1]
    if extension not in FILE_FORMATS:
        accepted = ", ".join(f"{ext}[.gz]" for ext in FILE_FORMATS)
        raise ValueError(
            f"{argument} {path}: unsupported file extension {extension or '(none)'!r}. "
            f"Use one of {accepted} (one document per line for .txt and .jsonl)."
        )
    return FILE_FORMATS[extension]


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def check_text_file(path: str, argument: str = "--train_file") -> int:
    """Read a local corpus file once, line by line, and return its number of records (non-blank lines).

    Cheap next to tokenization and never holds more than one line in memory. Every line must be UTF-8; in a
    ``.jsonl`` file (and a ``.json`` file in JSON-lines layout) every non-blank line must be one JSON object. A
    ``.json`` file whose first line is not a JSON value by itself is taken to be one JSON document, which
    ``datasets`` parses as a whole; only its encoding is checked here.

    Raises:
        ValueError: naming ``argument``, ``path`` and the line when the file is empty, not UTF-8 (or not gzip for
            ``.gz``), or holds a line that is not a JSON object.
    """
    builder = file_format(path, argument)
    if not os.path.isfile(path):
        raise ValueError(f"{argument} {path}: no such file (or it is a folder); pass the path of one corpus file.")
    json_lines = builder == "json"
    records = offset = 0
    try:
        with _open_binary(path) as f:
            for number, line in enumerate(f, start=1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(
                        f"{argument} {path} is not UTF-8 text ({err.reason} at line {number}, byte "
                        f"{offset + err.start}); re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
                    ) from None
                offset += len(line)
                if not text.strip():
                    continue
                records += 1
                if not json_lines:
                    continue
                try:
                    value = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as err:
                    if records == 1 and not _is_jsonl(path):  # one JSON document over several lines
                        json_lines = False
                        continue
                    raise ValueError(
                        f"{argument} {path}: line {number} is not valid JSON ({err.msg}: column {err.colno}); "
                        "a .jsonl file holds one JSON object per line: fix or remove the line (a truncated last "
                        "line means an interrupted download or write)."
                    ) from None
                if not isinstance(value, dict):
                    raise ValueError(
                        f"{argument} {path}: line {number} is a JSON {type(value).__name__}, not an object; a .jsonl "
                        'file holds one object per line, such as {"text": "..."}.'
                    )
                surrogate = _lone_surrogate(value)
                if surrogate is not None:
                    field, position, char = surrogate
                    raise ValueError(
                        f"{argument} {path}: line {number}: field {field!r} holds a lone surrogate "
                        f"({json.dumps(char)} at character {position}), which is not Unicode text (an escape of half "
                        "a UTF-16 pair): fix the escape (both halves, e.g. \\ud83d\\ude00) or remove it."
                    )
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        hint = "is it a complete gzip file?" if path.lower().endswith(".gz") else "check its permissions."
        raise ValueError(f"{argument} {path} cannot be read ({err}); {hint}") from None
    if offset == 0:
        raise ValueError(f"{argument} {path} is empty; give a file with one document per line.")
    if records == 0:
        raise ValueError(f"{argument} {path} has no record (only blank lines); give one document per line.")
    return records


_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _lone_surrogate(value: Any, field: str = "") -> tuple[str, int, str] | None:
    """``(field, position, character)`` of the first lone surrogate in the strings of a parsed JSON value.

    >>> _lone_surrogate({"id": 1, "meta": {"text": "ok " + chr(0xD800)}})
    ('meta.text', 3, '\\ud800')
    """
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (field, found.start(), found.group()) if found else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = f"{field}.{key}" if field and isinstance(key, str) else f"{field}[{key}]" if field else str(key)
        found = _lone_surrogate(item, name)
        if found is not None:
            return found
    return None


def _is_jsonl(path: str) -> bool:
    name = path.lower()
    return name.removesuffix(".gz").endswith(".jsonl")


def parse_text_fields(text_column: str | Sequence[str] | None, dataset_name: str | None = None) -> tuple[str, ...]:
    """The dotted field paths holding each record's text.

    ``text_column`` may be a comma-separated string (``"title,abstract"``); when it is ``None`` the known nested
    fields of ``dataset_name`` (:data:`DATASET_TEXT_FIELDS`) are used, else ``("text",)``.

    >>> parse_text_fields(None, "ncbi/pubmed")[1]
    'MedlineCitation.Article.Abstract.AbstractText'
    >>> parse_text_fields("title, abstract")
    ('title', 'abstract')
    """
    if text_column is None:
        return DATASET_TEXT_FIELDS.get(dataset_name or "", ("text",))
    fields = text_column.split(",") if isinstance(text_column, str) else list(text_column)
    fields = tuple(field.strip() for field in fields)
    if not fields or any(not field for field in fields):
        raise ValueError(
            f"--text_column {text_column!r} has an empty field name; pass e.g. `text` or `title,abstract`"
        )
    return fields


def _lookup(record: dict, path: str, source: str, index: int) -> Any:
    value: Any = record
    walked = []
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            where = ".".join(walked) or "the record"
            fields = sorted(value) if isinstance(value, dict) else []
            raise ValueError(
                f"{source}: record {_record_name(record, index)} has no field {path!r} ({where} has fields "
                f"{fields}). Pass --text_column with the field (dotted path for nested fields) that holds the text."
            )
        value = value[key]
        walked.append(key)
    return value


def _record_name(record: dict, index: int) -> str:
    for key in ("id", "pmid", "PMID"):
        if isinstance(record.get(key), (str, int)):
            return f"{index} (id {record[key]!r})"
    return str(index)


def _join_parts(parts: list[str]) -> str:
    """Join title/abstract-like parts as the shared PubMed files do: ``"Title. Abstract"``."""
    parts = [" ".join(part.split()) for part in parts]
    parts = [part for part in parts if part]
    for i, part in enumerate(parts[:-1]):
        if part[-1] not in ".?!":
            parts[i] = part + "."
    return " ".join(parts)


def extract_text(record: dict, fields: Sequence[str], source: str = "dataset", index: int = 0) -> str:
    """The text of one record: the values of ``fields`` (dotted paths) joined into one string.

    One field: its value as is. Several fields (title + abstract): whitespace is collapsed, a period is added to a
    part that has no final punctuation, and parts are joined with a space. An empty or null value gives ``""``
    (several fields: the record counts only when every field has text), which callers skip.

    Raises:
        ValueError: naming ``source``, the record and the field when a field is missing or is not a string.

    >>> record = {"MedlineCitation": {"Article": {"ArticleTitle": "Aspirin and platelets",
    ...                                           "Abstract": {"AbstractText": "Aspirin inhibits COX-1."}}}}
    >>> extract_text(record, DATASET_TEXT_FIELDS["ncbi/pubmed"])
    'Aspirin and platelets. Aspirin inhibits COX-1.'
    """
    values = []
    for field in fields:
        value = _lookup(record, field, source, index)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(
                f"{source}: record {_record_name(record, index)}: field {field!r} holds a "
                f"{type(value).__name__}, not a string. Point --text_column at a field holding text."
            )
        values.append(value)
    if len(values) == 1:
        return values[0]
    if not all(value.strip() for value in values):
        return ""
    return _join_parts(values)


def _extract_batch(batch: dict, indices: list[int], fields: tuple[str, ...], source: str) -> dict:
    keys = list(batch)
    texts = []
    for row, index in enumerate(indices):
        record = {key: batch[key][row] for key in keys}
        texts.append(extract_text(record, fields, source, index))
    return {"text": texts}


def _check_fields_exist(dataset, fields: tuple[str, ...], source: str) -> None:
    """Fail before any processing when a top-level text field is absent from the dataset's schema."""
    columns = dataset.column_names
    if columns is None:  # a streaming dataset of unknown schema: checked record by record
        return
    for field in fields:
        top = field.split(".")[0]
        if top not in columns:
            raise ValueError(
                f"{source}: no field {field!r} in the records (fields: {sorted(columns)}). Pass --text_column with "
                "the field (dotted path for nested fields) that holds the text."
            )


def to_text_dataset(dataset, fields: Sequence[str] = ("text",), source: str = "dataset"):
    """Reduce ``dataset`` (``Dataset`` or ``IterableDataset``) to one ``text`` column, dropping empty texts."""
    fields = tuple(fields)
    _check_fields_exist(dataset, fields, source)
    columns = dataset.column_names
    if fields == ("text",) and columns == ["text"]:
        mapped = dataset
    else:
        mapped = dataset.map(
            _extract_batch,
            batched=True,
            with_indices=True,
            fn_kwargs={"fields": fields, "source": source},
            remove_columns=columns,
        )
        if columns is None:
            mapped = mapped.select_columns(["text"])
    return mapped.filter(lambda batch: [bool(text and text.strip()) for text in batch["text"]], batched=True)


def _held_out(i: int, percentage: float) -> bool:
    """Whether record ``i`` belongs to a ``percentage`` % validation split: one record in every ``100 / percentage``,
    spread evenly (records 19, 39, 59, ... at 5 %); streaming datasets use the same rule."""
    return (i + 1) * percentage // 100 > i * percentage // 100


def validation_indices(n: int, percentage: float) -> list[int]:
    """The records of ``n`` that a ``percentage`` % validation split holds out (:func:`_held_out`); when that rule
    picks none (fewer than ``100 / percentage`` records), the last record, so that both sides get records.

    >>> validation_indices(100, 5), validation_indices(10, 5), validation_indices(2, 5)
    ([19, 39, 59, 79, 99], [9], [1])
    """
    if n < 2:
        raise ValueError(f"{n} record(s) cannot be split into training and validation records")
    return [i for i in range(n) if _held_out(i, percentage)] or [n - 1]


def _split_for_validation(dataset, percentage: int, source: str = "the training data"):
    """Deterministic split: :func:`validation_indices` of the records go to validation (a streaming dataset, of
    unknown length: every record that :func:`_held_out` picks). The split is logged."""
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):
        train = dataset.filter(lambda _, i: not _held_out(i, percentage), with_indices=True)
        validation = dataset.filter(lambda _, i: _held_out(i, percentage), with_indices=True)
        logger.info(
            "No validation data: one record in %.0f of %s is held out for validation.", 100 / percentage, source
        )
        return train, validation
    n = len(dataset)
    if n < 2:
        raise ValueError(
            f"{source} has {n} record(s) with text, too few to hold some out for validation "
            f"(--validation_split_percentage {percentage}): pass a --validation_file, or more records."
        )
    held_out = validation_indices(n, percentage)
    chosen = set(held_out)
    logger.info(
        "No validation data: %d of the %d records of %s (%.1f %%, --validation_split_percentage %d) are held out "
        "for validation, %d train.",
        len(held_out), n, source, 100 * len(held_out) / n, percentage, n - len(held_out),
    )  # fmt: skip
    return dataset.select([i for i in range(n) if i not in chosen]), dataset.select(held_out)


def load_text_datasets(
    *,
    train_file: str | None = None,
    validation_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    text_column: str | None = None,
    streaming: bool = False,
    validation_split_percentage: int = 5,
    split_validation: bool = True,
    keep_linebreaks: bool = True,
    cache_dir: str | None = None,
    token: str | None = None,
) -> dict:
    """Load the raw corpora as ``{"train": ..., "validation": ...}``, each with a single ``text`` column.

    Either ``dataset_name`` (a Hub id or a local dataset folder, loaded with ``datasets.load_dataset``) or local
    files. When there is no validation data, ``validation_split_percentage`` % of the training records (at least one,
    never all; see :func:`validation_indices`) become the validation split, unless ``split_validation`` is False (no
    evaluation: every record trains). ``.txt`` files hold one document per line.
    With ``streaming=True`` the splits are ``IterableDataset``s read lazily.
    """
    from datasets import load_dataset

    fields = parse_text_fields(text_column, dataset_name)
    splits: dict = {}
    if dataset_name is not None:
        if train_file is not None or validation_file is not None:
            raise ValueError("Pass either --dataset_name or --train_file/--validation_file, not both.")
        loaded = load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, token=token, streaming=streaming)
        for name in ("train", "validation"):
            if name in loaded:
                splits[name] = to_text_dataset(loaded[name], fields, f"--dataset_name {dataset_name} ({name})")
    else:
        if train_file is None and validation_file is None:
            raise ValueError("No data: pass --train_file and/or --validation_file, or --dataset_name.")
        for name, path, argument in (
            ("train", train_file, "--train_file"),
            ("validation", validation_file, "--validation_file"),
        ):
            if path is None:
                continue
            builder = file_format(path, argument)
            if "://" not in path:
                if not os.path.exists(path):
                    raise ValueError(f"{argument} {path}: no such file.")
                check_text_file(path, argument)
            kwargs = {"keep_linebreaks": keep_linebreaks} if builder == "text" else {}
            raw = load_dataset(
                builder, data_files={name: path}, split=name, cache_dir=cache_dir, streaming=streaming, **kwargs
            )
            splits[name] = to_text_dataset(raw, ("text",) if builder == "text" else fields, f"{argument} {path}")
    if "validation" not in splits and "train" in splits and split_validation:
        if not 0 < validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must be between 0 and 100 (exclusive) to carve a validation split "
                f"out of the training data, got {validation_split_percentage}; or pass --validation_file."
            )
        source = f"--train_file {train_file}" if train_file is not None else f"--dataset_name {dataset_name} (train)"
        splits["train"], splits["validation"] = _split_for_validation(
            splits["train"], validation_split_percentage, source
        )
    return splits


def pack_token_ids(
    documents: Sequence[Sequence[int]],
    block_size: int,
    eos_token_id: int,
    keep_partial_block: bool = False,
    pad_token_id: int | None = None,
) -> dict[str, list[list[int]]]:
    """Concatenate tokenized documents, each followed by ``eos_token_id``, and cut them into ``block_size`` blocks.

    ``labels`` equal ``input_ids`` (the model shifts them). The tokens left after the last full block are dropped,
    unless ``keep_partial_block``: then they form one more block, right-padded with ``pad_token_id`` (default: the
    EOS id) and labels ``-100`` on the padding, so that no padded position is ever scored.

    >>> pack_token_ids([[5, 6, 7], [8, 9]], block_size=4, eos_token_id=0)
    {'input_ids': [[5, 6, 7, 0]], 'labels': [[5, 6, 7, 0]]}
    >>> pack_token_ids([[5, 6, 7], [8, 9]], block_size=4, eos_token_id=0, keep_partial_block=True, pad_token_id=1)
    {'input_ids': [[5, 6, 7, 0], [8, 9, 0, 1]], 'labels': [[5, 6, 7, 0], [8, 9, 0, -100]]}
    """
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2 (one input and one next-token target), got {block_size}")
    stream: list[int] = []
    for ids in documents:
        if len(ids):
            stream.extend(ids)
            stream.append(eos_token_id)
    full = len(stream) // block_size * block_size
    input_ids = [stream[i : i + block_size] for i in range(0, full, block_size)]
    labels = [list(block) for block in input_ids]
    rest = stream[full:]
    # A one-token remainder has no next-token target: nothing to score.
    if keep_partial_block and len(rest) > 1:
        padding = block_size - len(rest)
        pad = eos_token_id if pad_token_id is None else pad_token_id
        input_ids.append(rest + [pad] * padding)
        labels.append(rest + [IGNORE_INDEX] * padding)
    return {"input_ids": input_ids, "labels": labels}


#: Longest text given to the tokenizer in one call. A longer document is tokenized in pieces of at most this many
#: characters (:func:`split_long_text`): one 50 MB single-line document tokenized whole peaked at 9.4 GB of RAM.
MAX_TOKENIZE_CHARS = 100_000
_CUT_BEFORE_WHITESPACE = re.compile(r"\S(?=\s)")


def split_long_text(text: str, max_chars: int = MAX_TOKENIZE_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` characters that join back to it.

    Each cut goes just before a run of whitespace that follows a non-space character, in the second half of the
    piece when there is one there, so that byte-level BPE tokenizers (GPT-2, GPT-NeoX: Mamba's), whose pre-tokenizer
    never joins across such a point, give the same tokens as for the whole text. A piece without whitespace is cut
    at ``max_chars`` (a boundary effect inside that "word" only).

    >>> split_long_text("aaaa bbbb cccc", max_chars=8)
    ['aaaa', ' bbbb', ' cccc']
    >>> split_long_text("abcdefghij", max_chars=4)
    ['abcd', 'efgh', 'ij']
    """
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2, got {max_chars}")
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = None
        for match in _CUT_BEFORE_WHITESPACE.finditer(text, start + max_chars // 2 - 1, end + 1):
            cut = match.end()
        cut = cut or end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text with ``add_special_tokens=True``."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def tokenize_texts(tokenizer, texts: list[str], max_chars: int | None = None) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=True)["input_ids"]``, with each text longer than ``max_chars`` (default
    :data:`MAX_TOKENIZE_CHARS`) tokenized piece by piece (:func:`split_long_text`) so that memory stays bounded by
    the piece size; its special tokens are added once, around the whole document."""
    max_chars = MAX_TOKENIZE_CHARS if max_chars is None else max_chars
    long = [i for i, text in enumerate(texts) if len(text) > max_chars]
    if not long:
        return tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    encoded = [None] * len(texts)
    short = [i for i in range(len(texts)) if len(texts[i]) <= max_chars]
    if short:
        for i, ids in zip(
            short, tokenizer([texts[i] for i in short], add_special_tokens=True, verbose=False)["input_ids"]
        ):
            encoded[i] = ids
    before, after = _special_tokens_around(tokenizer)
    for i in long:
        ids = list(before)
        for piece in split_long_text(texts[i], max_chars):
            ids.extend(tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"])
        encoded[i] = ids + after
    return encoded


def _tokenize_and_pack(batch: dict, tokenizer, block_size: int, keep_partial_block: bool) -> dict:
    encoded = tokenize_texts(tokenizer, batch["text"])
    return pack_token_ids(
        encoded,
        block_size,
        tokenizer.eos_token_id,
        keep_partial_block=keep_partial_block,
        pad_token_id=tokenizer.pad_token_id,
    )


def pack_dataset(
    dataset,
    tokenizer,
    block_size: int,
    keep_partial_block: bool = False,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    batch_size: int = 1000,
):
    """Tokenize a ``text`` dataset and pack it into ``block_size`` blocks (see :func:`pack_token_ids`).

    Documents are packed ``batch_size`` at a time; in training (``keep_partial_block=False``) each batch's last
    incomplete block is dropped, so at most ``block_size - 1`` tokens per ``batch_size`` documents go unused.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no eos_token: packing separates documents with it. "
            "Set one, e.g. `tokenizer.eos_token = '<|endoftext|>'`, and save the tokenizer."
        )
    kwargs: dict[str, Any] = {
        "batched": True,
        "batch_size": batch_size,
        "fn_kwargs": {"tokenizer": tokenizer, "block_size": block_size, "keep_partial_block": keep_partial_block},
        "remove_columns": ["text"],
    }
    from datasets import IterableDataset

    if not isinstance(dataset, IterableDataset):
        kwargs.update(
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            desc=f"Tokenizing and packing into blocks of {block_size}",
        )
    return dataset.map(_tokenize_and_pack, **kwargs)
