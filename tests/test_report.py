"""Report: the HTML page, its PNG figures, escaping of untrusted text, the headline numbers, and
tolerance of missing metrics and empty sections."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from persyn.dataset import ExportRecord
from persyn.report import LedgerRow, ReportData, headline, write_report

HOSTILE = "<script>alert('pwned')</script>"
TEACHERS = ["qwen", "gemma", "smol"]


def make_data(**over) -> ReportData:
    allocation = {"qwen": 600, "gemma": 300, "smol": 100}
    ledger = [LedgerRow(t, "calibration", 100, 100 * 40, 100 * 150) for t in TEACHERS]
    ledger += [LedgerRow(t, "routed", n, n * 40, n * 150) for t, n in allocation.items()]
    fields = dict(
        title=f"Run {HOSTILE}",
        run_dir=Path("runs/demo"),
        config={"teachers": [{"name": "big", "api_key": "sk-secret-0123456789abcdef"}], "seed": 0},
        allocation=allocation,
        router_metrics={
            "random": {"hit@1": 0.21, "hit@3": 0.55, "regret": 0.61, "oracle_gain_recovered": -0.4},
            "router": {
                "hit@1": 0.64,
                "hit@3": 0.93,
                "regret": 0.12,
                "oracle_gain_recovered": 0.72,
                "mean_learnability": -1.3,
                "n": 200,
                "best_single": "qwen",
                "allocation": {"qwen": 120, "gemma": 80},  # nested values are left out of tables
            },
            "strongest": {"hit@1": 0.4, "regret": 0.3, "oracle_gain_recovered": 0.0},  # no hit@3
            "car": {"hit@1": 0.42, "hit@3": None, "regret": float("nan")},  # None and NaN: missing
            "oracle": {"hit@1": 1.0, "hit@3": 1.0, "regret": 0.0, "oracle_gain_recovered": 1.0},
        },
        ledger=ledger,
        gts={t: {"generations": 1000, "tokens": 1000 * 190, "cost": None} for t in TEACHERS},
        samples=[
            ExportRecord(
                "p1", f"Prompt {HOSTILE}", "Response & <b>bold</b> " * 100, "qwen", "persyn", quality=0.9
            ),
            ExportRecord("p2", "Plain prompt", "short", f"gemma{HOSTILE}", "persyn", learnability=-1.5),
        ],
        strategies={
            "persyn": {"generations": 1300, "rows": 1000, "mean_quality": 0.71},
            "strong": {"generations": 1000, "rows": 1000},
        },
        notes=[f"note {HOSTILE}"],
    )
    fields.update(over)
    return ReportData(**fields)


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] > 400 and img.size[1] > 150
        img.verify()
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.std() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    index = write_report(make_data(), out)
    return out, index, index.read_text(encoding="utf-8")


def test_html_references_pngs_that_exist_and_are_valid(report):
    out, index, html = report
    assert index == out / "index.html"
    srcs = image_sources(html)
    assert sorted(srcs) == ["allocation.png", "cost.png", "router_quality.png", "router_regret.png"]
    for src in srcs:
        assert_valid_png(out / src)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(srcs)
    # Offline: no external stylesheet, script or image.
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "<link" not in html


def test_hostile_text_is_escaped(report):
    _, _, html = report
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "sk-secret-0123456789abcdef" not in html and "&lt;redacted&gt;" in html


def test_headline_numbers(report):
    _, _, html = report
    # Spent: 3 x 100 calibration + 1000 routed = 1,300; GtS: 3 teachers x 1,000 prompts = 3,000.
    assert "1,300 generations instead of 3,000 (43.3% of Generate-then-Select)" in html
    # Tokens: 1,300 generations x 190 tokens against 3,000 x 190.
    assert "247,000 tokens instead of ~570,000 (43.3%)" in html
    head = headline(make_data())
    assert head["generations"] == 1300 and head["gts_generations"] == 3000
    assert math.isclose(head["generations_share"], 1300 / 3000)
    assert head["cost"] is None and head["cost_share"] is None  # nothing priced
    # Counting only the routed stage (e.g. when baselines were also generated).
    assert headline(make_data(headline_stages=["routed"]))["generations"] == 1000


def test_tables_show_every_number_and_dash_for_missing(report):
    _, _, html = report
    rows = {
        m.group(1): re.findall(r'<td class="num">([^<]*)</td>', m.group(0))
        for m in re.finditer(r"<tr[^>]*><td>(\w+)(?: ★)?</td>.*?</tr>", html)
    }
    # Columns: hit@1, hit@3, regret, oracle_gain_recovered, mean_learnability, n, best_single.
    assert rows["router"] == ["0.640", "0.930", "0.120", "0.720", "-1.300", "200", "qwen"]
    assert rows["strongest"] == ["0.400", "—", "0.300", "0.000", "—", "—", "—"]
    assert rows["car"] == ["0.420", "—", "—", "—", "—", "—", "—"]
    assert '<tr class="ours"><td>router ★</td>' in html
    assert html.index("router ★") < html.index("<td>random</td>")  # ours first
    assert '<td>qwen</td><td class="num">600</td><td class="num">60.0%</td>' in html
    assert (
        '<td>persyn</td><td class="num">1,300</td><td class="num">1,000</td><td class="num">0.710</td>'
        in html
    )
    assert "[2,300 chars]" in html  # a long response is truncated and says how long it was


def test_missing_metrics_and_empty_sections(tmp_path):
    # First a full report, then one with almost nothing: stale figures must go.
    write_report(make_data(), tmp_path)
    data = make_data(
        allocation={},
        router_metrics={"router": {"regret": 0.2}, "mix": {}},
        ledger=[],
        gts={},
        samples=[],
        strategies={},
        notes=[],
    )
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    assert image_sources(html) == ["router_regret.png"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["router_regret.png"]
    assert_valid_png(tmp_path / "router_regret.png")
    assert "No prompts routed yet." in html and "No samples." in html and "No generations recorded." in html
    assert "0 generations" in html
    # No metrics at all.
    html = write_report(make_data(router_metrics={}), tmp_path).read_text(encoding="utf-8")
    assert "No router metrics." in html and "router_regret.png" not in html


def test_priced_runs_get_a_cost_headline(tmp_path):
    ledger = [
        LedgerRow("qwen", "calibration", 10, 100, 200, cost=1.5),
        LedgerRow("qwen", "routed", 5, 50, 100, 0.5),
    ]
    data = make_data(
        ledger=ledger, gts={"qwen": {"generations": 40, "tokens": 1200, "cost": 8.0}}, allocation={"qwen": 5}
    )
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    assert "15 generations instead of 40 (37.5% of Generate-then-Select)" in html
    assert "cost 2.00 instead of ~8.00 (25.0%)" in html
    assert_valid_png(tmp_path / "cost.png")


def test_quality_section_shows_labels_and_reliability(tmp_path):
    quality = [
        {
            "method": "answers",
            "key": "answers:auto@2",
            "prompts": 40,
            "labels": 117,
            "failed": 3,
            "mean": 0.5,
            "timeouts": 2,
            "reliability": "verified answers",
        },
        {
            "method": "judge",
            "key": "judge:abc",
            "prompts": 60,
            "labels": 180,
            "failed": 0,
            "mean": -0.25,
            "reliability": "pairwise accuracy 0.80 (95% CI 0.72-0.87) on 120 labelled pairs",
        },
    ]
    html = write_report(make_data(quality=quality), tmp_path).read_text(encoding="utf-8")
    section = re.sub(r">\s+<", "><", html[html.index('id="quality"') : html.index('id="router"')])
    assert (
        '<td class="num">117</td><td class="num">3</td><td class="num">0.500</td><td class="num">2</td>'
        in section
    )
    assert (
        '<td class="num">180</td><td class="num">0</td><td class="num">-0.250</td><td class="num">—</td>'
        in section
    )
    assert "pairwise accuracy 0.80 (95% CI 0.72-0.87)" in section
    empty = write_report(make_data(), tmp_path / "empty").read_text(encoding="utf-8")
    assert "No quality scores recorded." in empty
