"""The alert rules of ``docs/alerts.yml``: ``promtool check rules`` and ``promtool test rules``
when promtool is installed (on ``PATH`` or named by ``$PROMTOOL``; with ``CI`` set a missing
promtool fails the test), and always a structural check that every rule names only metrics
the nodes export."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from foundation._metrics import REGISTRY

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docs" / "alerts.yml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")

# Families written by others than the nodes' registry: Prometheus' own ``up`` (the tenant
# quota gauges, ``foundation_quota_used`` / ``_limit``, are in the registry).
EXTERNAL = {"up"}
EXPECTED = {
    "FoundationNodeDown",
    "FoundationNodeFenced",
    "FoundationFencing",
    "FoundationFailoverSlow",
    "FoundationInboxLag",
    "FoundationDeadLettersGrowing",
    "FoundationQuotaNearLimit",
    "FoundationCommandLatencyHigh",
    "FoundationGcPauseLong",
}


def _promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def _rules() -> list[dict[str, str]]:
    rules: list[dict[str, str]] = []
    for line in RULES.read_text().splitlines():
        m = re.match(r"\s+- alert: (\S+)$", line)
        if m:
            rules.append({"alert": m.group(1)})
            continue
        m = re.match(r"\s+(expr|for|severity|summary|description): (.+)$", line)
        if m and rules:
            rules[-1][m.group(1)] = m.group(2)
    return rules


def _exported() -> set[str]:
    names: set[str] = set()
    for fam in REGISTRY.collect():
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    # counters are exposed with _total; histograms with _bucket/_sum/_count
    names.update(f"{n}_total" for n in list(names))
    names.update(f"{n}_{s}" for n in list(names) for s in ("bucket", "sum", "count"))
    return names


_FUNCS = {
    "max",
    "sum",
    "by",
    "increase",
    "rate",
    "histogram_quantile",
    "le",
    "on",
    "without",
    "ignoring",
}


def test_rules_are_complete_and_name_exported_metrics() -> None:
    from foundation._metrics import NODES  # noqa: F401 - the node families are registered

    rules = _rules()
    assert {r["alert"] for r in rules} == EXPECTED
    node_families = {
        "foundation_node_up",
        "foundation_node_fenced",
        "foundation_fences_total",
        "foundation_last_failover_seconds",
        "foundation_inbox_lag",
        "foundation_dead_letters_total",
    }
    exported = _exported() | node_families  # node families appear once a node runs
    for rule in rules:
        assert {"expr", "severity", "summary", "description"} <= rule.keys(), rule
        assert rule["severity"] in {"critical", "warning"}
        expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([a-z_, ]*\)\s*\(", " ", rule["expr"])
        metrics = {
            tok
            for tok in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr)
            if tok not in _FUNCS and not tok.isdigit()
        }
        for name in metrics:
            assert name in exported or name in EXTERNAL, f"{rule['alert']}: unknown {name}"
        assert "term" not in rule["expr"]


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = _promtool()
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the alert rules: promtool is not installed")
        pytest.skip("promtool is not installed")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr
