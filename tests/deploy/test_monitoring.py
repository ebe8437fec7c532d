"""deploy/monitoring and /metrics under promtool: the live exposition of every service, the alert rules
and their unit tests, and the dashboard's queries (PromQL that parses, metrics that exist)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mkr.registry import SERVICES
from tests.support import Stack, contract_report, new_municipality, wait_for

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
# Not exposed by the services: Prometheus' own and the blackbox exporter's.
EXTERNAL = {"up", "probe_success"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: `make test` installs it (Debian package prometheus)")
    return found


def run(*args: str, stdin: bytes | None = None, cwd: Path = MONITORING) -> str:
    done = subprocess.run([promtool(), *args], input=stdin, cwd=cwd, capture_output=True, timeout=60)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


def test_alert_rules_pass_check_and_their_unit_tests() -> None:
    assert "SUCCESS" in run("check", "rules", "alerts.yml")
    assert "SUCCESS" in run("test", "rules", "alerts_test.yml")
    alerts = {r["alert"] for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert alerts == tested  # every alert has a unit test
    for wanted in ("MkrOutboxBacklogGrowing", "MkrConsumerLag", "MkrNotReady", "MkrSlaBreachesRising",
                   "MkrDeadLetters"):
        assert wanted in alerts


def test_the_example_scrape_configuration_is_valid() -> None:
    run("check", "config", "prometheus.yml")


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    queries = _dashboard_queries()
    assert len(queries) >= 12
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": q.replace("$__rate_interval", "5m").replace("$service", ".*")}
        for i, q in enumerate(queries)
    ]}]}
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump(rules))
    assert "SUCCESS" in run("check", "rules", "dashboard-rules.yml", cwd=tmp_path)


async def _traffic(stack: Stack) -> None:
    """Requests on each service (a 201, a 404 with an id in the path, a 422), and an event consumed."""
    town = new_municipality()
    coordinator = stack.auth("coordinator", town)
    created = await stack.intake.post("/v1/cases", json=contract_report(town), headers=coordinator)
    assert created.status_code == 201
    case_id = created.json()["id"]
    assert (await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)).status_code == 200
    assert (await stack.intake.post("/v1/cases", json={"municipality": town}, headers=coordinator)).status_code == 422
    for name in SERVICES:
        assert (await stack.clients[name].get("/no/such/path/00000000-0000-4000-8000-000000000000")).status_code == 404

    async def referred() -> bool:
        text = (await stack.referral.get("/metrics")).text
        return "mkr_events_consumed_total{" in text

    await wait_for(referred, timeout=30, what="an event consumed")


async def test_live_metrics_of_every_service_pass_promtool(stack: Stack) -> None:
    await _traffic(stack)
    exposed: set[str] = set()
    for name in SERVICES:
        response = await stack.clients[name].get("/metrics")
        assert response.status_code == 200
        run("check", "metrics", stdin=response.content)
        text = response.text
        assert f'service="{name}"' in text  # its own requests, per route template
        for line in text.splitlines():
            if line.startswith("mkr_http_requests_total{"):
                route = re.search(r'route="([^"]*)"', line)
                assert route and not UUID.search(route.group(1)), line  # templates, never raw paths
                assert "?" not in route.group(1)
            if line.startswith("# TYPE "):
                exposed.add(line.split()[2])
    assert '/v1/cases/{case_id}' in (await stack.intake.get("/metrics")).text
    assert 'route="unmatched"' in (await stack.intake.get("/metrics")).text
    for wanted in ("mkr_http_requests_total", "mkr_http_request_duration_seconds", "mkr_outbox_pending",
                   "mkr_events_consumed_total", "mkr_notification_delivery_attempts_total",
                   "mkr_referral_sla_breaches_total"):
        assert wanted in exposed, wanted

    # Every mkr_* metric the rules and the dashboard use exists.
    used = set(re.findall(r"\b(mkr_[a-z_]+)", (MONITORING / "alerts.yml").read_text() + " ".join(_dashboard_queries())))
    known = {m for name in exposed for m in (name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum")}
    assert used - known == set()
    assert EXTERNAL  # up and probe_success come from Prometheus and the blackbox exporter
