"""Compare two benchmark results files and flag regressions.

``python -m bench compare OLD.json NEW.json [--threshold 0.15] [--metric ratio|absolute]``

Rows are matched by ``(bench, group, name)``. By default the compared figure is the
**ratio** ours / same-run baseline, because it cancels most of the machine's noise;
``--metric absolute`` compares the raw medians instead. A figure regressed when it moved in
its bad direction by more than ``threshold`` (relative): a latency (``better == "lower"``)
that grew above ``old × (1 + threshold)``, a throughput (``better == "higher"``) that fell
below ``old × (1 - threshold)``. Rows unmeasured on either side are listed, not flagged.
Exit status: 0 when nothing regressed, 1 on any regression, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Metric = Literal["ratio", "absolute"]
Verdict = Literal["regressed", "improved", "same", "added", "removed", "unmeasured"]


class ResultsFileError(ValueError):
    """A results file cannot be read or is not a benchmark results JSON."""


@dataclass(frozen=True)
class Change:
    """One row's comparison between an old and a new run."""

    key: tuple[str, str, str]
    better: str
    old: float | None
    new: float | None
    verdict: Verdict

    @property
    def change(self) -> float | None:
        """Relative change new / old - 1 (``None`` when either side is unmeasured)."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return self.new / self.old - 1.0


def load(path: Path) -> dict[str, Any]:
    """Read a results JSON written by ``python -m bench``."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultsFileError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ResultsFileError(
            f"{path} is not a benchmark results file (expected an object with a 'rows' list)"
        )
    return data


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (str(row.get("bench", "")), str(row.get("group", "")), str(row.get("name", "")))


def _value(row: dict[str, Any], metric: Metric) -> float | None:
    if row.get("status", "ok") != "ok":
        return None
    raw = row.get("ratio") if metric == "ratio" else row.get("ours")
    if raw is None:
        return None
    value = float(raw)
    return value if math.isfinite(value) and value > 0 else None


def classify(old: float, new: float, better: str, threshold: float) -> Verdict:
    """Verdict for one figure moving from ``old`` to ``new``."""
    if better == "higher":
        if new < old * (1.0 - threshold):
            return "regressed"
        if new > old * (1.0 + threshold):
            return "improved"
        return "same"
    if new > old * (1.0 + threshold):
        return "regressed"
    if new < old * (1.0 - threshold):
        return "improved"
    return "same"


def compare(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    threshold: float = 0.15,
    metric: Metric = "ratio",
) -> list[Change]:
    """Compare two results payloads row by row (order of the new run, then removed rows)."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    old_rows = {_key(r): r for r in old["rows"]}
    new_rows = {_key(r): r for r in new["rows"]}
    out: list[Change] = []
    for key, row in new_rows.items():
        before = old_rows.get(key)
        better = str(row.get("better", "lower"))
        new_v = _value(row, metric)
        if before is None:
            out.append(Change(key, better, None, new_v, "added"))
            continue
        old_v = _value(before, metric)
        if old_v is None or new_v is None:
            out.append(Change(key, better, old_v, new_v, "unmeasured"))
            continue
        out.append(Change(key, better, old_v, new_v, classify(old_v, new_v, better, threshold)))
    for key, row in old_rows.items():
        if key not in new_rows:
            out.append(
                Change(key, str(row.get("better", "lower")), _value(row, metric), None, "removed")
            )
    return out


def render(changes: list[Change], *, threshold: float, metric: Metric) -> str:
    """A plain-text report of the comparison."""
    lines = [f"comparing {metric} (threshold {threshold:.0%})"]
    marks = {
        "regressed": "REGRESSED",
        "improved": "improved",
        "same": "",
        "added": "added",
        "removed": "removed",
        "unmeasured": "unmeasured",
    }
    for c in changes:
        bench, group, name = c.key
        old = "—" if c.old is None else f"{c.old:.4g}"
        new = "—" if c.new is None else f"{c.new:.4g}"
        delta = "" if c.change is None else f"{c.change:+.1%}"
        lines.append(
            f"{marks[c.verdict]:>10}  {group}/{name} [{bench}] "
            f"({c.better} is better): {old} → {new} {delta}".rstrip()
        )
    regressed = sum(c.verdict == "regressed" for c in changes)
    lines.append(f"{regressed} regression(s) beyond {threshold:.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: compare two results files; exit 1 on regression, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m bench compare")
    parser.add_argument("old", type=Path, help="earlier results JSON")
    parser.add_argument("new", type=Path, help="later results JSON")
    parser.add_argument(
        "--threshold", type=float, default=0.15, help="relative change flagged (default 0.15)"
    )
    parser.add_argument(
        "--metric",
        choices=["ratio", "absolute"],
        default="ratio",
        help="compare ours/baseline ratios (default) or absolute medians",
    )
    args = parser.parse_args(argv)
    if args.threshold < 0:
        parser.error(f"--threshold must be >= 0, got {args.threshold}")
    try:
        old, new = load(args.old), load(args.new)
    except ResultsFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    changes = compare(old, new, threshold=args.threshold, metric=args.metric)
    print(render(changes, threshold=args.threshold, metric=args.metric))
    return 1 if any(c.verdict == "regressed" for c in changes) else 0


if __name__ == "__main__":
    sys.exit(main())
