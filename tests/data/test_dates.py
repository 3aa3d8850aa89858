"""Date normalization task: every input reads back to its target through ``datetime``."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import torch

from attnkit.data.dates import FORMATS, WEEKDAYS, make_date_task


def test_formats_are_distinct_and_read_back_by_strptime():
    examples = [f.example for f in FORMATS]
    assert len(FORMATS) >= 6 and len(set(examples)) == len(FORMATS)
    assert "9 may 1998" in examples and "May 9, 1998" in examples and "09/05/98" in examples
    assert "saturday 9 may 1998" in examples and "1998.05.09" in examples
    for f in FORMATS:
        assert datetime.strptime(f.example, f.pattern).date() == date(1998, 5, 9), f.name


def test_every_example_round_trips_through_datetime():
    task = make_date_task(300, 50, 50, seed=3)
    for split in (task.train, task.val, task.test):
        for i in range(len(split)):
            d, text = split.dates[i], split.texts[i]
            fmt = task.formats[int(split.formats[i])]
            assert datetime.strptime(text, fmt.pattern).date() == d
            assert date.fromisoformat(task.decode(split.targets[i])) == d
            assert task.decode(split.targets[i]) == d.isoformat()
            n = int(split.lengths[i])
            assert n == len(text)
            assert "".join(task.source_vocab.decode(split.sources[i, :n].tolist())) == text
            assert split.sources[i, n:].eq(0).all()
            if "weekday" in fmt.name.lower():
                assert WEEKDAYS[d.weekday()] in text.lower()


def test_splits_have_disjoint_dates_all_formats_and_shared_shapes():
    task = make_date_task(2000, 300, 300, seed=0)
    train, val, test = (set(s.dates) for s in (task.train, task.val, task.test))
    assert len(train) == 2000 and not train & val and not train & test and not val & test
    assert set(task.train.formats.tolist()) == set(range(len(FORMATS)))
    assert task.train.sources.shape[1] == task.test.sources.shape[1]
    assert task.train.targets.shape == (2000, 11)  # 10 ISO characters and </s>
    lengths = task.train.lengths
    assert int(lengths.min()) == 8 and int(lengths.max()) >= 25  # "09/05/98" .. long weekdays
    item = task.train[0]
    assert set(item) == {"source", "length", "target", "format"}
    assert all(date(1970, 1, 1) <= d <= date(2049, 12, 31) for d in task.train.dates)


def test_seed_gives_the_same_task():
    a, b, c = (
        make_date_task(50, 5, 5, seed=1),
        make_date_task(50, 5, 5, seed=1),
        make_date_task(50, 5, 5, seed=2),
    )
    assert a.train.texts == b.train.texts and torch.equal(a.train.sources, b.train.sources)
    assert a.train.texts != c.train.texts


def test_subset():
    task = make_date_task(20, 0, 0)
    part = task.train.subset([3, 1])
    assert part.texts == (task.train.texts[3], task.train.texts[1])
    assert torch.equal(part.targets[1], task.train.targets[1])


def test_errors():
    with pytest.raises(ValueError, match="distinct dates"):
        make_date_task(20, 0, 0, start=date(2000, 1, 1), end=date(2000, 1, 10))
    with pytest.raises(ValueError, match="two-digit years"):
        make_date_task(5, 0, 0, start=date(1900, 1, 1))
    with pytest.raises(ValueError, match="n_train >= 1"):
        make_date_task(0)
    with pytest.raises(ValueError, match="formats"):
        make_date_task(5, formats=())
