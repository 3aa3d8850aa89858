"""User text files and the evidence-task adapter: vocabularies, padding, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from attnkit.data.evidence import make_evidence_task
from attnkit.data.text import (
    Vocabulary,
    evidence_dataset,
    load_text_file,
    pad_ids,
    read_text_splits,
    tokenize,
)
from attnkit.data.vectors import read_word_vectors

ROWS = [
    {"review": "A great, great film!", "sentiment": "pos"},
    {"review": "Dull and far too long.", "sentiment": "neg"},
    {"review": "Great acting", "sentiment": "pos"},
    {"review": "too long", "sentiment": "neg"},
    {"review": "I loved it", "sentiment": "pos"},
    {"review": "boring", "sentiment": "neg"},
    {"review": "great fun", "sentiment": "pos"},
    {"review": "long and dull", "sentiment": "neg"},
    {"review": "wonderful", "sentiment": "pos"},
    {"review": "awful", "sentiment": "neg"},
]


def write_csv(path, rows, columns=("review", "sentiment"), delimiter=","):
    lines = [delimiter.join(columns)]
    lines += [delimiter.join(f'"{row[c]}"' for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_tokenize_and_vocabulary():
    assert tokenize("Don't stop!") == ["don", "'", "t", "stop", "!"]
    assert tokenize("Big Dog", lowercase=False) == ["Big", "Dog"]
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "b", "a"]], min_count=2)
    assert vocab.tokens == ("<pad>", "<unk>", "b", "a")  # by frequency, c dropped
    assert vocab.encode(["a", "zzz", "b"]) == [3, 1, 2]
    assert vocab.decode([3, 2, 0, 0]) == ["a", "b"]
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(("a", "b"))


def test_pad_ids():
    ids, lengths = pad_ids([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    ids, lengths = pad_ids([[5, 6, 7], [8]], length=2)
    assert ids.tolist() == [[5, 6], [8, 0]] and lengths.tolist() == [2, 1]


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_load_text_file(tmp_path, kind):
    if kind == "jsonl":
        path = write_jsonl(tmp_path / "reviews.jsonl", ROWS)
    else:
        delimiter = "\t" if kind == "tsv" else ","
        path = write_csv(tmp_path / f"reviews.{kind}", ROWS, delimiter=delimiter)
    data = load_text_file(path, text_column="review", label_column="sentiment", seed=1)
    assert data.classes == ("neg", "pos")
    assert (len(data.train), len(data.val), len(data.test)) == (8, 1, 1)
    # the vocabulary is built from the training split only
    train_words = {w for i in range(len(data.train)) for w in data.train.text(i).split()}
    assert set(data.vocabulary.tokens[2:]) == train_words
    # every row comes back once, with its label
    seen = {}
    for split in (data.train, data.val, data.test):
        for i in range(len(split)):
            seen[split.text(i)] = split.classes[int(split.labels[i])]
    expected = {
        " ".join(w if w in data.vocabulary.tokens else "<unk>" for w in tokenize(r["review"])):
        r["sentiment"] for r in ROWS
    }  # fmt: skip
    assert seen == expected
    batch = next(iter(DataLoader(data.train, batch_size=4)))
    assert batch["tokens"].shape == batch["mask"].shape == (4, data.train.tokens.shape[1])
    assert torch.equal(batch["mask"], batch["tokens"] != 0)
    assert batch["mask"].sum(1).min() >= 1 and batch["label"].shape == (4,)


def test_max_length_and_min_count(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", ROWS)
    data = load_text_file(path, "review", "sentiment", max_length=2, min_count=2)
    assert data.train.tokens.shape[1] == 2
    assert "great" in data.vocabulary.tokens and "wonderful" not in data.vocabulary.tokens


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text_file(tmp_path / "nope.csv")


def test_unknown_extension(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("text,label\nhi,1\n")
    with pytest.raises(ValueError, match=r"\.csv.*reviews\.txt"):
        load_text_file(path)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_wrong_columns_lists_the_columns_found(tmp_path, kind):
    path = (
        write_csv(tmp_path / "r.csv", ROWS)
        if kind == "csv"
        else write_jsonl(tmp_path / "r.jsonl", ROWS)
    )
    with pytest.raises(
        ValueError, match=r"\['text', 'label'\] not found.*\['review', 'sentiment'\]"
    ):
        load_text_file(path)
    with pytest.raises(ValueError, match=r"\['label'\] not found"):
        load_text_file(path, text_column="review")


def test_empty_files(tmp_path):
    for name, content in [("a.csv", ""), ("b.csv", "text,label\n"), ("c.jsonl", "\n\n")]:
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match="no data rows"):
            load_text_file(tmp_path / name)


def test_empty_text(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["review"] = "   "
    with pytest.raises(ValueError, match="row 4 has an empty 'review'"):
        load_text_file(write_jsonl(tmp_path / "r.jsonl", rows), "review", "sentiment")
    rows[3]["review"] = None
    with pytest.raises(ValueError, match="row 4 has an empty 'review'"):
        load_text_file(write_jsonl(tmp_path / "r.jsonl", rows), "review", "sentiment")


def test_empty_label_and_single_class(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[0]["sentiment"] = ""
    with pytest.raises(ValueError, match="row 1 has an empty 'sentiment'"):
        load_text_file(write_csv(tmp_path / "r.csv", rows), "review", "sentiment")
    rows = [{**r, "sentiment": "pos"} for r in ROWS]
    with pytest.raises(ValueError, match="single class 'pos'"):
        load_text_file(write_csv(tmp_path / "r.csv", rows), "review", "sentiment")


def test_bad_json_line_and_too_few_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "hi", "label": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 must be a JSON object"):
        load_text_file(path)
    path.write_text('{"text": "hi", "label": 1}\n{"text": "hi"\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_text_file(path)
    path.write_text('{"text": "hi", "label": 1}\n{"text": "yo", "label": 0}\n')
    with pytest.raises(ValueError, match="none for training"):
        load_text_file(path)


def test_evidence_dataset_keeps_positions_and_words():
    task = make_evidence_task(40, length=10, classes=3, seed=2)
    data = evidence_dataset(task)
    assert len(data) == 40 and data.classes == ("0", "1", "2")
    assert data.tokens.ne(0).all()  # no padding: every example is full length
    assert data.text(5) == task.text(5)
    item = data[5]
    assert torch.equal(item["evidence"], task.evidence[5]) and int(item["label"]) == task.labels[5]
    words = data.text(5).split()
    evidence_words = [words[i] for i in task.evidence[5].nonzero().flatten().tolist()]
    assert all(w.startswith(f"class{int(task.labels[5])}_") for w in evidence_words)
    part = data.subset([5, 0])
    assert torch.equal(part.evidence[0], task.evidence[5]) and part.text(1) == task.text(0)


def test_a_split_column_is_honoured(tmp_path):
    """The file's own split wins over the fractions; dev/validation/val all mean validation."""
    names = [
        "train",
        "dev",
        "TEST ",
        "train",
        "validation",
        "train",
        "test",
        "val",
        "train",
        "train",
    ]
    rows = [{**row, "split": name} for row, name in zip(ROWS, names, strict=True)]
    path = write_csv(tmp_path / "r.csv", rows, columns=("review", "sentiment", "split"))
    for seed in (0, 1):  # the seed does not move a row the file placed
        splits = read_text_splits(path, "review", "sentiment", seed=seed, test_fraction=0.5)
        assert splits.texts["val"] == [ROWS[i]["review"] for i in (1, 4, 7)]
        assert splits.texts["test"] == [ROWS[i]["review"] for i in (2, 6)]
        assert splits.texts["train"] == [ROWS[i]["review"] for i in (0, 3, 5, 8, 9)]
        assert splits.labels["test"] == ["pos", "pos"] and "'split' column" in splits.how
        data = load_text_file(path, "review", "sentiment", seed=seed, test_fraction=0.5)
        assert (len(data.train), len(data.val), len(data.test)) == (5, 3, 2)
        assert data.train.text(0) == "a great , great film !"
    # exp_split (Jain & Wallace's files) is found too; a file without dev rows gets val_fraction
    # of its train rows as validation
    rows = [{**row, "exp_split": "test" if i < 2 else "train"} for i, row in enumerate(ROWS)]
    data = load_text_file(write_jsonl(tmp_path / "r.jsonl", rows), "review", "sentiment",
                          val_fraction=0.25)  # fmt: skip
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    splits = read_text_splits(tmp_path / "r.jsonl", "review", "sentiment", val_fraction=0.25)
    assert splits.texts["test"] == [ROWS[0]["review"], ROWS[1]["review"]]
    assert "'exp_split' column" in splits.how
    rows[3]["exp_split"] = "holdout"
    with pytest.raises(ValueError, match=r"row 4 has 'exp_split' = 'holdout'; expected one of"):
        load_text_file(write_jsonl(tmp_path / "r.jsonl", rows), "review", "sentiment")


def test_the_seed_moves_the_shuffled_split_and_zero_fractions_leave_splits_empty(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", ROWS)
    tests = {
        seed: load_text_file(path, "review", "sentiment", seed=seed, test_fraction=0.3).test
        for seed in range(4)
    }
    assert len({tuple(t.text(i) for i in range(len(t))) for t in tests.values()}) > 1
    data = load_text_file(path, "review", "sentiment", test_fraction=0)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 1, 0)
    assert data.test.tokens.shape[0] == 0


def test_errors_name_the_command_line_spelling(tmp_path):
    path = write_csv(tmp_path / "r.csv", ROWS)
    with pytest.raises(ValueError, match="-o text_column=NAME -o label_column=NAME"):
        load_text_file(path)
    with pytest.raises(ValueError, match=r"split column 'part' not found.*-o split_column="):
        load_text_file(path, "review", "sentiment", split_column="part")


def test_word_vectors_from_a_word2vec_or_glove_file(tmp_path):
    tokens = ("<pad>", "<unk>", "good", "Bad", "missing")
    glove = tmp_path / "glove.txt"
    glove.write_text("good 1 2 3\nbad -1 0.5 0\nother 9 9 9\n")
    word2vec = tmp_path / "vectors.txt"
    word2vec.write_text("3 3\n" + glove.read_text())
    for path in (glove, word2vec):
        result = read_word_vectors(path, tokens)
        assert result.found == 2 and result.vectors.shape == (5, 3)
        assert result.vectors[2].tolist() == [1, 2, 3] and result.vectors[3].tolist() == [
            -1,
            0.5,
            0,
        ]
        assert result.vectors[0].eq(0).all()  # padding
        assert result.vectors[4].abs().sum() > 0  # a seeded random vector, not zeros
    bad = tmp_path / "bad.txt"
    bad.write_text("good 1 2 3\nbad 1 2\n")
    with pytest.raises(ValueError, match="line 2 has 2 values, the first vector 3"):
        read_word_vectors(bad, tokens)


def test_a_vector_file_without_any_vocabulary_word_is_an_error(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("zebra 1 2\n")
    with pytest.raises(ValueError, match="none of the vocabulary's 2 words is in the file"):
        read_word_vectors(path, ("<pad>", "<unk>", "good", "bad"))
