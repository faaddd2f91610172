"""The load-test tool against the running system (small numbers: this checks the tool, not speed)."""

from __future__ import annotations

import json

import pytest

from tests import load_test
from tests.helpers import MODELS

pytestmark = pytest.mark.e2e


def test_closed_loop_with_json_and_html_reports(api, tmp_path, capsys):
    report_path = tmp_path / "load.json"
    code = load_test.main(["--url", api.base_url, "--requests", "12", "--concurrent", "4", "--report", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["requests"] == 12 and report["success_rate"] == 1.0
    assert sum(report["per_model"].values()) == 12 and set(report["per_model"]) <= set(MODELS)
    assert sum(report["per_worker"].values()) == 12
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["health_ms"]["probes"] > 0
    assert len(report["samples"]) == 12
    assert "throughput" in capsys.readouterr().out

    html = tmp_path / "load.html"
    load_test.main(["--url", api.base_url, "--requests", "6", "--concurrent", "2", "--model", "squeezenet", "--report", str(html)])
    assert "data:image/png;base64," in html.read_text()


def test_burst_mode(api, tmp_path):
    report_path = tmp_path / "burst.json"
    code = load_test.main(["--url", api.base_url, "--requests", "9", "--concurrent", "8", "--burst-mode", "--burst-size", "3",
                           "--burst-interval", "0.2", "--model", "resnet18", "--priority", "high", "--images-per-request", "2",
                           "--report", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0 and report["per_model"] == {"resnet18": 9} and report["mode"].startswith("burst 3")
    assert report["success_rate"] == 1.0 and report["images_per_request"] == 2 and report["images_per_s"] > report["throughput_rps"]


def test_attack_report(api, redis_url, tmp_path, capsys):
    """`make attack-report` in miniature: two attacks, their answers and what followed them."""
    from tests import attack_report

    out = tmp_path / "attacks.json"
    assert attack_report.main(["--url", api.base_url, "--redis-url", redis_url, "--only", "JPEG", "--json", str(out)]) == 0
    rows = {row["attack"]: row for row in json.loads(out.read_text())["attacks"]}
    assert rows["JPEG wide sliver"]["answer"] == "success" and rows["JPEG of 1,000 scans (2000x2000)"]["answer"] == "image_too_complex"
    assert all(row["next_ordinary"] == "success" and row["same_pool_processes"] and row["worker_peak_rss_mb"] > 0 for row in rows.values())
    assert "hostile requests to resnet18" in capsys.readouterr().out  # the table
