"""The dashboard and the alert rules use only catalogued metrics (metrics.txt) and the
labels those have, and the catalogue follows Prometheus' naming conventions. That the services export every
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


# Labels every scraped series has, from Prometheus; `le` is a histogram bucket's.
SCRAPE_LABELS = {"job", "instance", "le"}


def catalogue():
    entries = {}
    for line in (HERE / "metrics.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, services, labels, description = line.split(None, 4)
            entries[name] = (kind, services, description, set(labels.split(",")) - {"-"})
    return entries


def label_names(text):
    """The label names an expression groups, joins or matches by, and those a legend or
    an annotation shows ({{x}}, $labels.x)."""
    names = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        names |= {n.strip() for n in group.split(",") if n.strip()}
    for matchers in re.findall(r"\{([^{}]*)\}", re.sub(r'"[^"]*"', '""', text)):
        names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    names |= set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", text))
    names |= set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


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


def test_the_label_extraction_finds_groupings_matchers_and_legends():
    expr = 'sum by (job, topic) (rate(x_total{outcome="a",route!~"/b|{c}"}[5m])) / on (job) y'
    assert label_names(expr) == {"job", "topic", "outcome", "route"}
    assert label_names("{{job}} {{ partition }}: {{ $labels.kind }}") == {"job", "partition", "kind"}


def test_only_labels_the_metrics_have_are_used():
    entries = catalogue()
    texts = [(where, expr, expr) for where, expr in [*dashboard_exprs(), *rule_exprs()]]
    texts += [(p["title"], t["expr"], t["legendFormat"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    texts += [
        (r["alert"], r["expr"], " ".join(r["annotations"].values())) for g in RULES["groups"] for r in g["rules"]
    ]
    wrong = set()
    for where, expr, text in texts:
        metrics = {base_name(n, entries) for n in metric_names(expr)}
        known = SCRAPE_LABELS.union(*(entries[m][3] for m in metrics if m in entries))
        wrong |= {(where, label) for label in label_names(text) - known}
    assert not wrong, f"labels none of their metrics has: {sorted(wrong)}"


def test_every_catalogued_metric_is_used():
    used = {base_name(n, catalogue()) for _, e in [*dashboard_exprs(), *rule_exprs()] for n in metric_names(e)}
    assert set(catalogue()) - used == set()


def test_names_follow_the_conventions():
    for name, (kind, _, _, _) in catalogue().items():
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
