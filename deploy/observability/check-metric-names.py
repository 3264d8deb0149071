#!/usr/bin/env python3
"""Checks that every metric the dashboard and the alert rules use is one the
binaries export.

Usage: check-metric-names.py SCRAPE... (Prometheus text files: the API's and
the worker's /metrics after a scenario; marketplace/tests/metrics/check.sh
saves them)

The metric names are taken from the PromQL of deploy/observability/alerts.yml
(every `expr:`) and of grafana/dashboards/marketplace.json (every target's
`expr`): identifiers that are not functions, keywords, label names (inside
`{...}`, `by (...)`, `on (...)`...) or Grafana variables (`$__rate_interval`).
A histogram's `_bucket`, `_sum` and `_count` series are names of their own in
a scrape, so they match as they are. Names Prometheus makes itself (`up`)
need no scrape. Standard library only. Exits 1, listing them, if a name is
missing from every scrape.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE / "alerts.yml"
DASHBOARDS = sorted((HERE / "grafana" / "dashboards").glob("*.json"))

# Series Prometheus records about its scrapes, not the targets' own.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "le", "atan2",
}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def rule_expressions(path):
    """The `expr:` values of a rules file: one line, or a `|`/`>` block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    exprs = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, value = len(match.group(1)), match.group(2).strip()
        if value and value[0] not in "|>":
            exprs.append(value.strip("'\""))
            continue
        block = []
        for following in lines[index + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following)
        exprs.append("\n".join(block))
    return exprs


def dashboard_expressions(path):
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def metric_names(expr):
    """The metric names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?[A-Za-z0-9_]+\}?", " ", text)  # Grafana variables
    names = set()
    for match in IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        start = match.start()
        if start and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # part of a number (1e3, 0.99)
        names.add(name)
    return names


def exported(paths):
    names = set()
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith("# TYPE "):
                names.add(line.split()[2])
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    have = exported(argv[1:])
    used = {}
    for expr in rule_expressions(RULES):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(RULES.name)
    for dashboard in DASHBOARDS:
        for expr in dashboard_expressions(dashboard):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(dashboard.name)
    if not used:
        print("check-metric-names: no metric found in the rules or the dashboards", file=sys.stderr)
        return 1
    def known(name):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return name in have or base in have or name in SYNTHETIC

    missing = {name: files for name, files in used.items() if not known(name)}
    for name in sorted(missing):
        print(f"MISSING  {name} (used by {', '.join(sorted(missing[name]))})")
    if missing:
        print(f"check-metric-names: {len(missing)} of {len(used)} metrics used are not exported")
        return 1
    print(f"check-metric-names: all {len(used)} metrics used by {RULES.name} and "
          f"{', '.join(d.name for d in DASHBOARDS)} are exported: {' '.join(sorted(used))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
