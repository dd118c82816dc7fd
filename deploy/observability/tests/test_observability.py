"""The dashboard and the alert rules use only catalogued metrics (metrics.txt), and the
catalogue follows Prometheus' naming conventions. That the services export every
catalogued metric is checked against the running services by
crates/system-tests/tests/metrics.rs.
"""

import json
import pathlib
import re

import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parents[1]
DASHBOARD = json.loads((HERE / "dashboard.json").read_text())
RULES = yaml.safe_load((HERE / "alerts.yml").read_text())

# PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def catalogue():
    entries = {}
    for line in (HERE / "metrics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, services, description = line.split(None, 3)
            entries[name] = (kind, services, description)
    return entries


def metric_names(expr):
    """The metric names an expression reads: what is left once strings, label matchers,
    grouping clauses, ranges, variables, numbers and function calls are taken out."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        if word in KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def base_name(name, entries):
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and entries.get(stem, ("",))[0] == "histogram":
            return stem
    return name


def dashboard_exprs():
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def rule_exprs():
    for group in RULES["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def test_the_extraction_finds_metrics_and_nothing_else():
    expr = 'histogram_quantile(0.99, sum by (le, job) (rate(a_seconds_bucket{x="y"}[$__rate_interval]))) / on (job) b_total > 0.5 and c'
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_only_catalogued_metrics_are_used(source):
    entries = catalogue()
    exprs = list(dashboard_exprs() if source == "dashboard" else rule_exprs())
    assert exprs
    unknown = {
        (where, name) for where, expr in exprs for name in metric_names(expr) if base_name(name, entries) not in entries
    }
    assert not unknown, f"not in metrics.txt: {sorted(unknown)}"


def test_every_catalogued_metric_is_used():
    used = {base_name(n, catalogue()) for _, e in [*dashboard_exprs(), *rule_exprs()] for n in metric_names(e)}
    assert set(catalogue()) - used == set()


def test_names_follow_the_conventions():
    for name, (kind, _, _) in catalogue().items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert kind in {"counter", "gauge", "histogram"}, name
        assert name.endswith("_total") == (kind == "counter"), f"{name}: counters, and only they, end in _total"
        # Time in seconds, never milliseconds; histograms name their base unit.
        assert not re.search(r"_(ms|millis|milliseconds|minutes)(_|$)", name), name
        if kind == "histogram":
            assert name.endswith(("_seconds", "_rows", "_bytes", "_records")), name


def test_every_panel_and_alert_says_what_it_is():
    for panel in DASHBOARD["panels"]:
        assert panel["title"]
        if panel["type"] == "timeseries":
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
    for _, rule in [(g, r) for g in RULES["groups"] for r in g["rules"]]:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
