"""Loading text corpora and packing them into blocks (biomamba_hf.data.clm)."""

from __future__ import annotations

import doctest
import gzip
import json

import pytest
from helpers import data_dir

from biomamba_hf.data import clm
from biomamba_hf.data.clm import (
    DATASET_TEXT_FIELDS,
    check_text_file,
    extract_text,
    file_format,
    load_text_datasets,
    pack_dataset,
    pack_token_ids,
    parse_text_fields,
)


def write_jsonl(path, records, compress=None):
    compress = str(path).endswith(".gz") if compress is None else compress
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


DOCS = [f"Document {i}: aspirin inhibits platelet aggregation in patient {i}." for i in range(40)]


def test_docstring_examples():
    assert doctest.testmod(clm, raise_on_error=False).failed == 0


@pytest.mark.parametrize(
    ("name", "builder"),
    [("a.txt", "text"), ("a.txt.gz", "text"), ("b.json", "json"), ("c.JSONL", "json"), ("dir/d.jsonl.gz", "json")],
)
def test_file_format_accepts_text_and_json(name, builder):
    assert file_format(name) == builder


@pytest.mark.parametrize("name", ["train.csv", "train.parquet.gz", "train", "train.gz"])
def test_file_format_rejects_other_extensions_naming_the_file(name):
    with pytest.raises(ValueError, match=rf"--validation_file {name}: unsupported file extension .*\.jsonl\[\.gz\]"):
        file_format(name, "--validation_file")


def test_parse_text_fields():
    assert parse_text_fields(None) == ("text",)
    assert parse_text_fields(None, "ncbi/pubmed") == DATASET_TEXT_FIELDS["ncbi/pubmed"]
    assert parse_text_fields("abstract", "ncbi/pubmed") == ("abstract",)
    assert parse_text_fields("a.b, c") == ("a.b", "c")
    with pytest.raises(ValueError, match="--text_column 'title,' has an empty field name"):
        parse_text_fields("title,")


def ncbi_record(pmid, title, abstract):
    """A record shaped like those of the Hub dataset ncbi/pubmed (only the fields used here)."""
    return {
        "MedlineCitation": {
            "PMID": pmid,
            "Article": {"ArticleTitle": title, "Abstract": {"AbstractText": abstract}, "Language": "eng"},
        },
        "PubmedData": {"PublicationStatus": "ppublish"},
    }


def test_extract_text_joins_nested_title_and_abstract_like_the_shared_files():
    fields = DATASET_TEXT_FIELDS["ncbi/pubmed"]
    record = ncbi_record(1, "Spermidine  protects neurons", "It  does.\nIn flies.")
    assert extract_text(record, fields) == "Spermidine protects neurons. It does. In flies."
    assert extract_text(ncbi_record(2, "Is it safe?", "Yes."), fields) == "Is it safe? Yes."
    # A title without an abstract is not an abstract: skipped (empty text).
    assert extract_text(ncbi_record(3, "Title only", ""), fields) == ""
    assert extract_text(ncbi_record(4, "Title only", None), fields) == ""


def test_extract_text_errors_name_source_record_and_field():
    with pytest.raises(
        ValueError, match=r"x.jsonl: record 7 \(id 'pmid:9'\) has no field 'text' .*\['abstract', 'id'\]"
    ):
        extract_text({"id": "pmid:9", "abstract": "..."}, ("text",), "x.jsonl", 7)
    with pytest.raises(
        ValueError,
        match=r"ncbi: record 0 has no field 'MedlineCitation.Article.Abstract.AbstractText' "
        r"\(MedlineCitation.Article has fields \['ArticleTitle'\]\)",
    ):
        extract_text(
            {"MedlineCitation": {"Article": {"ArticleTitle": "t"}}}, DATASET_TEXT_FIELDS["ncbi/pubmed"], "ncbi"
        )
    with pytest.raises(ValueError, match=r"f.json: record 3 \(id 5\): field 'text' holds a list, not a string"):
        extract_text({"id": 5, "text": ["a", "b"]}, ("text",), "f.json", 3)


def test_load_jsonl_gz_with_validation_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl.gz", [{"id": i, "text": t, "source": "x"} for i, t in enumerate(DOCS)])
    valid = write_jsonl(tmp_path / "dev.json", [{"text": "Held out."}, {"text": "  "}, {"text": "Also held out."}])
    splits = load_text_datasets(train_file=train, validation_file=valid)
    assert splits["train"].column_names == ["text"]
    assert splits["train"]["text"] == DOCS
    assert splits["validation"]["text"] == ["Held out.", "Also held out."]  # the blank record is skipped


def test_txt_file_one_document_per_line_and_validation_split(tmp_path):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(DOCS) + "\n\n")
    splits = load_text_datasets(train_file=str(path), validation_split_percentage=10, keep_linebreaks=False)
    validation = [int(t.split()[1].rstrip(":")) for t in splits["validation"]["text"]]
    train = [int(t.split()[1].rstrip(":")) for t in splits["train"]["text"]]
    assert validation == [9, 19, 29, 39]  # one record in ten, spread over the file
    assert train == [i for i in range(40) if i not in validation]


def test_missing_text_column_names_the_file_and_field(tmp_path):
    path = write_jsonl(tmp_path / "abstracts.jsonl", [{"id": "a", "abstract": "Aspirin."}])
    with pytest.raises(ValueError, match=r"--train_file .*abstracts.jsonl: no field 'text' in the records \(fields: "):
        load_text_datasets(train_file=path)
    splits = load_text_datasets(train_file=path, validation_file=path, text_column="abstract")
    assert splits["train"]["text"] == ["Aspirin."]


def test_missing_file_and_conflicting_sources(tmp_path):
    with pytest.raises(ValueError, match=r"--validation_file .*nope.jsonl: no such file"):
        load_text_datasets(
            train_file=write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}]), validation_file=str(tmp_path / "nope.jsonl")
        )
    with pytest.raises(ValueError, match="either --dataset_name or --train_file"):
        load_text_datasets(dataset_name="ncbi/pubmed", train_file="t.jsonl")
    with pytest.raises(ValueError, match=r"--validation_split_percentage must be between 0 and 100 .* got 0"):
        load_text_datasets(
            train_file=write_jsonl(tmp_path / "t2.jsonl", [{"text": "a"}]), validation_split_percentage=0
        )


def test_check_text_file_counts_records_and_accepts_a_json_document(tmp_path):
    assert check_text_file(write_jsonl(tmp_path / "t.jsonl.gz", [{"text": "a"}, {"text": "b"}])) == 2
    document = tmp_path / "t.json"
    document.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=1))  # one JSON document over lines
    assert load_text_datasets(train_file=str(document), validation_file=str(document))["train"]["text"] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("blank.jsonl", b"\n  \n", r"blank.jsonl has no record \(only blank lines\)"),
        ("list.jsonl", b'{"text": "a"}\n[1, 2]\n', r"list.jsonl: line 2 is a JSON list, not an object"),
        ("latin1.txt.gz", gzip.compress("caf\xe9\n".encode("latin-1")), r"latin1.txt.gz is not UTF-8 text .*line 1"),
        ("broken.jsonl.gz", b"not gzip", r"broken.jsonl.gz cannot be read .*complete gzip file"),
    ],
)
def test_check_text_file_names_the_file_and_line(name, content, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"--validation_file .*{message}"):
        check_text_file(str(path), "--validation_file")


def test_dataset_folder_with_nested_pubmed_records(tmp_path):
    """--dataset_name with a local folder in the nested ncbi/pubmed record layout and dotted --text_column."""
    folder = tmp_path / "pubmed"
    folder.mkdir()
    records = [ncbi_record(i, f"Title {i}", f"Abstract {i}." if i % 3 else "") for i in range(12)]
    write_jsonl(folder / "train.jsonl", records)
    write_jsonl(folder / "validation.jsonl", records[:3])
    fields = ",".join(DATASET_TEXT_FIELDS["ncbi/pubmed"])
    splits = load_text_datasets(dataset_name=str(folder), text_column=fields)
    assert splits["train"]["text"][:2] == ["Title 1. Abstract 1.", "Title 2. Abstract 2."]
    assert len(splits["train"]) == 8  # the 4 records without an abstract are skipped
    assert splits["validation"]["text"] == ["Title 1. Abstract 1.", "Title 2. Abstract 2."]


def test_streaming_gives_the_same_texts(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl.gz", [{"text": t} for t in DOCS])
    eager = load_text_datasets(train_file=train, validation_split_percentage=5)
    lazy = load_text_datasets(train_file=train, validation_split_percentage=5, streaming=True)
    assert [r["text"] for r in lazy["train"]] == eager["train"]["text"]
    assert [r["text"] for r in lazy["validation"]] == eager["validation"]["text"]


def test_pack_token_ids_separates_documents_with_eos_and_never_pads_training():
    packed = pack_token_ids([[5, 6], [], [7, 8, 9], [10]], block_size=3, eos_token_id=0)
    # stream: 5 6 0 7 8 9 0 10 0 -> three full blocks, the empty document adds nothing
    assert packed["input_ids"] == [[5, 6, 0], [7, 8, 9], [0, 10, 0]]
    assert packed["labels"] == packed["input_ids"]
    dropped = pack_token_ids([[5, 6, 7, 8]], block_size=3, eos_token_id=0)
    assert dropped["input_ids"] == [[5, 6, 7]]  # remainder "8 0" dropped in training
    with pytest.raises(ValueError, match="block_size must be at least 2"):
        pack_token_ids([[1]], block_size=1, eos_token_id=0)


def test_pack_token_ids_keeps_a_padded_last_block_for_evaluation():
    packed = pack_token_ids([[5, 6, 7, 8]], block_size=3, eos_token_id=0, keep_partial_block=True, pad_token_id=1)
    assert packed["input_ids"] == [[5, 6, 7], [8, 0, 1]]
    assert packed["labels"] == [[5, 6, 7], [8, 0, -100]]
    # One leftover token has no next-token target: no block for it.
    single = pack_token_ids([[5, 6]], block_size=3, eos_token_id=0, keep_partial_block=True)
    assert single["input_ids"] == [[5, 6, 0]]


def test_pack_dataset_counts_every_token_in_evaluation(tokenizer, tmp_path):
    from datasets import Dataset

    texts = DOCS[:7]
    dataset = Dataset.from_dict({"text": texts})
    n_tokens = sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)  # + EOS per document
    evaluation = pack_dataset(dataset, tokenizer, block_size=16, keep_partial_block=True, batch_size=3)
    labels = [label for block in evaluation["labels"] for label in block if label != -100]
    assert len(labels) == n_tokens
    assert all(len(block) == 16 for block in evaluation["input_ids"])
    training = pack_dataset(dataset, tokenizer, block_size=16, batch_size=3)
    assert all(-100 not in block for block in training["labels"])
    assert len(training) * 16 <= n_tokens
    ids = [i for block in training["input_ids"] for i in block]
    assert ids[: len(tokenizer(texts[0])["input_ids"]) + 1] == tokenizer(texts[0])["input_ids"] + [0]


def test_pack_dataset_needs_an_eos_token(tokenizer):
    from datasets import Dataset

    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="has no eos_token: packing separates documents with it"):
        pack_dataset(Dataset.from_dict({"text": ["a"]}), tokenizer, 8)


@pytest.mark.real_data
def test_real_pubmed_dev_file_loads():
    path = data_dir() / "pubmed" / "dev.jsonl.gz"
    splits = load_text_datasets(train_file=str(path), validation_split_percentage=3)
    assert len(splits["train"]) + len(splits["validation"]) == 611
    assert all(text.strip() for text in splits["validation"]["text"])


@pytest.mark.parametrize(("records", "held_out"), [(2, 1), (5, 1), (10, 1), (19, 1), (40, 2), (1000, 50)])
def test_the_validation_split_leaves_both_sides_a_sensible_share(records, held_out, tmp_path, caplog):
    """A 10-record file lost half its records to validation (records i % 100 < 5); now 5 %, at least one, never all."""
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": f"Record {i}."} for i in range(records)])
    with caplog.at_level("INFO", logger="biomamba_hf.data.clm"):
        splits = load_text_datasets(train_file=path, validation_split_percentage=5)
    assert (len(splits["train"]), len(splits["validation"])) == (records - held_out, held_out)
    assert set(splits["train"]["text"]).isdisjoint(splits["validation"]["text"])
    assert f"{held_out} of the {records} records of --train_file {path}" in caplog.text


def test_a_single_record_is_too_small_to_split_and_says_so(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": "Only one record."}])
    with pytest.raises(ValueError, match=r"--train_file .*one.jsonl has 1 record\(s\) with text, too few to hold some "
                       r"out for validation \(--validation_split_percentage 5\): pass a --validation_file"):  # fmt: skip
        load_text_datasets(train_file=path, validation_split_percentage=5)


def test_long_documents_are_tokenized_in_bounded_pieces_with_the_same_tokens(tokenizer, monkeypatch):
    from helpers import SENTENCES

    text = "  ".join(SENTENCES * 20) + "\n  tail"  # ~17,000 characters, double spaces and a line break
    pieces = clm.split_long_text(text, max_chars=300)
    assert "".join(pieces) == text and max(map(len, pieces)) <= 300 and len(pieces) > 50
    assert all(piece[-1:].strip() and not piece[-1].isspace() for piece in pieces[:-1])  # cut before whitespace
    whole = tokenizer(text)["input_ids"]
    calls = []
    original = type(tokenizer).__call__

    def spy(self, texts, *args, **kwargs):
        calls.append(max(map(len, [texts] if isinstance(texts, str) else texts)))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", spy)
    assert clm.tokenize_texts(tokenizer, [text, "short one"], max_chars=300) == [
        whole,
        tokenizer("short one")["input_ids"],
    ]
    assert max(calls) <= 300  # the long document never reached the tokenizer whole
    monkeypatch.setattr(clm, "MAX_TOKENIZE_CHARS", 300)
    packed = clm._tokenize_and_pack({"text": [text]}, tokenizer, block_size=64, keep_partial_block=True)
    assert sum(packed["input_ids"], [])[: len(whole)] == whole
    assert clm.split_long_text("x" * 1000, max_chars=300) == ["x" * 300] * 3 + ["x" * 100]  # no whitespace: hard cuts
