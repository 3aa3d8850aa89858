"""The monitor reads the vocabulary of generation signals: tables, schemas, store, server,
dashboard, client and OpenTelemetry export name the same signals with the same ranges."""

import typing

import pytest
from fastapi.testclient import TestClient
from monitor_testing import make_record
from pydantic import ValidationError

from attnkit.llm.signals import RANGES, RECORD_SIGNALS, TOKEN_SIGNALS, VOCABULARY
from attnkit.monitor.schemas import RecordIn, TokenTraceIn
from attnkit.monitor.server import create_app
from attnkit.monitor.settings import Settings
from attnkit.monitor.tables import LENGTHS, RecordRow, RollupRow

NOT_SIGNALS = {
    "records": {"id", "request_id", "time", "model", "version", "tags", "trace", *LENGTHS},
    "rollups": {"width", "bucket", "model", "version", "count", "detector_count", *LENGTHS},
}


def test_table_signal_columns_are_the_vocabulary():
    assert RECORD_SIGNALS == RECORD_SIGNALS
    for row in (RecordRow, RollupRow):
        table = row.__table__
        columns = [c.name for c in table.columns if c.name not in NOT_SIGNALS[table.name]]
        assert columns == list(RECORD_SIGNALS), table.name


def test_schemas_hold_every_signal_with_its_range():
    record_fields, trace_fields = list(RecordIn.model_fields), list(TokenTraceIn.model_fields)
    assert [f for f in record_fields if f in VOCABULARY] == list(RECORD_SIGNALS)
    assert [f for f in trace_fields if f in VOCABULARY] == list(TOKEN_SIGNALS)
    for name in RECORD_SIGNALS:
        low, high = RANGES[name]
        for good in (low, high):
            RecordIn.model_validate(make_record(0, **{name: good}))
        for bad in (low - 1e-3, high + 1e-3):
            with pytest.raises(ValidationError, match=name):
                RecordIn.model_validate(make_record(0, **{name: bad}))
    assert RecordIn.model_fields["detector_score"].is_required() is False  # no trace holds it
    assert RecordIn.model_fields["lookback_ratio"].is_required()


def per_token_trace(**changes):
    trace = {
        "tokens": ["a", "b"], **{name: [0.5, 0.5] for name in TOKEN_SIGNALS},
        "context": {"start": 0, "tokens": ["a"]}, "leaned_on": [[], []],
    }  # fmt: skip
    return {**trace, **changes}


def test_token_trace_schema_checks_every_per_token_signal():
    TokenTraceIn.model_validate(per_token_trace())
    for name in TOKEN_SIGNALS:
        with pytest.raises(ValidationError, match=f"{name} must have one entry per token"):
            TokenTraceIn.model_validate(per_token_trace(**{name: [0.5]}))
        with pytest.raises(ValidationError, match=name):
            TokenTraceIn.model_validate(per_token_trace(**{name: [0.5, RANGES[name][1] + 1]}))


def test_server_and_dashboard_offer_every_stored_signal(tmp_path):
    from attnkit.monitor.routers.deps import Signal

    assert typing.get_args(Signal) == RECORD_SIGNALS + LENGTHS
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'v.db'}"))
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        page = client.get("/").text
    parameters = document["paths"]["/v1/series"]["get"]["parameters"]
    signal = next(p for p in parameters if p["name"] == "signal")
    assert signal["schema"]["enum"] == list(RECORD_SIGNALS + LENGTHS)
    for name in RECORD_SIGNALS:
        assert f'<option value="{name}">{VOCABULARY[name].label}</option>' in page
    assert page.count("<option value=") == len(RECORD_SIGNALS + LENGTHS) + 3 + 4  # by, range
    assert '<option value="sink">sink mass</option>' in page  # the page's words


def test_client_records_every_signal_of_the_vocabulary():
    import torch

    from attnkit.llm.generation import GenerationTrace
    from attnkit.monitor.client import summarize

    ratio = torch.full((2, 1, 2), 0.5)
    trace = GenerationTrace(
        text="ab", prompt_ids=torch.arange(4), new_ids=torch.tensor([1, 2]), context=(0, 3),
        layers=["l"], lookback_ratio=ratio, entropy=ratio * 2, sink=ratio / 2,
        max_weight=ratio, retrieval=ratio > 0.4,
    )  # fmt: skip
    record = summarize(trace, per_token=True)
    assert [k for k in record if k in VOCABULARY] == list(RECORD_SIGNALS)
    assert [k for k in record["trace"] if k in VOCABULARY] == list(TOKEN_SIGNALS)
    RecordIn.model_validate(record)
