"""Run every benchmark: ``python -m bench [--smoke] [--only NAME ...]``.

Writes ``bench/results/<utc-stamp>.json`` and ``bench/results/latest.json`` and prints a table.
``--smoke`` runs each benchmark for a few seconds at most (used by CI so the suite cannot rot).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._harness import Row, fmt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _modules(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def _machine() -> dict[str, Any]:
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


async def _run_all(names: list[str], quick: bool, console: Console) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        console.print(f"[bold cyan]▶ {name}[/bold cyan]")
        t0 = time.perf_counter()
        got: list[Row] = await module.run(quick=quick)
        console.print(f"  {len(got)} figure(s) in {time.perf_counter() - t0:.1f}s")
        rows.extend(got)
    return rows


def _table(rows: list[Row]) -> Table:
    table = Table(title="Foundation benchmarks (ratio = ours / same-run baseline)")
    for col in (
        "group",
        "figure",
        "ours p50",
        "ours p99",
        "baseline",
        "baseline p50",
        "ratio",
        "target",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.group,
            r.name,
            fmt(r.ours, r.unit),
            fmt(r.p99, r.unit) if r.p99 is not None else "",
            r.baseline_name,
            fmt(r.baseline, r.unit),
            f"{r.ratio:.2f}×",
            r.target,
        )
    return table


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected benchmarks, print and save results."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--only", nargs="*", default=[], help="substring filter on module names")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    console = Console()
    rows = asyncio.run(_run_all(_modules(args.only), args.smoke, console))
    console.print(_table(rows))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = {
        "date": stamp,
        "smoke": args.smoke,
        "machine": _machine(),
        "rows": [r.to_dict() for r in rows],
    }
    out = args.out or RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(payload, indent=2))
    if not args.smoke:
        (RESULTS / "latest.json").write_text(json.dumps(payload, indent=2))
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
