"""The service's routers: each holds its concern's routes, and apps built from the same routers
keep their own store, metrics and alert rules."""

from fastapi.testclient import TestClient
from monitor_testing import AUTH, TOKEN, make_record

from attnkit.monitor.routers import alerts, dashboard, ingest, metrics, queries
from attnkit.monitor.server import create_app
from attnkit.monitor.settings import Settings


def routes(router) -> set[tuple[str, str]]:
    return {(method, route.path) for route in router.routes for method in route.methods}


def test_each_router_holds_its_concern():
    assert routes(ingest.router) == {("POST", "/v1/records"), ("POST", "/v1/records/batch")}
    assert routes(queries.router) == {
        ("GET", "/v1/records"), ("GET", "/v1/records/{request_id:path}"), ("GET", "/v1/groups"),
        ("GET", "/v1/series"), ("GET", "/v1/drift"),
    }  # fmt: skip
    assert routes(alerts.router) == {("GET", "/v1/alerts"), ("POST", "/v1/alerts/evaluate")}
    assert routes(metrics.router) == {("GET", "/metrics")}
    assert routes(dashboard.router) == {("GET", "/"), ("GET", "/static/{name}")}


def test_two_apps_share_routers_but_not_their_services(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "low"\nsignal = "lookback_ratio"\nkind = "threshold"\n'
                     'op = "<"\nvalue = 0.9\n')  # fmt: skip
    first = create_app(Settings(db=f"sqlite:///{tmp_path / 'a.db'}", tokens=(TOKEN,)))
    second = create_app(Settings(db=f"sqlite:///{tmp_path / 'b.db'}", tokens=(TOKEN,), rules=rules))
    with TestClient(first) as a, TestClient(second) as b:
        posted = a.post("/v1/records/batch", json={"records": [make_record(i) for i in range(3)]},
                        headers=AUTH)  # fmt: skip
        assert posted.json() == {"inserted": 3, "duplicates": 0}
        assert len(a.get("/v1/records", headers=AUTH).json()["records"]) == 3
        assert b.get("/v1/records", headers=AUTH).json()["records"] == []
        assert a.get("/v1/alerts", headers=AUTH).json()["rules"] == []
        assert b.get("/v1/alerts", headers=AUTH).json()["rules"] == ["low"]
        ingested = [
            line for line in a.get("/metrics", headers=AUTH).text.splitlines()
            if line.startswith("attnkit_records_ingested_total")
        ]  # fmt: skip
        assert ingested == ["attnkit_records_ingested_total 3.0"]
        assert "attnkit_records_ingested_total 0.0" in b.get("/metrics", headers=AUTH).text
