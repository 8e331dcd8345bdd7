"""Run every benchmark: ``python -m bench [--smoke] [--only NAME ...]``.

Writes ``bench/results/<utc-stamp>.json`` and, on a full (non-smoke) run,
``bench/results/latest.json``, and prints a table. A full run of the whole suite (no
``--only``) also refreshes the generated summary block at the top of ``BENCHMARKS.md``
and the plots. ``--smoke`` runs each benchmark for a few seconds at most (used by CI so
the suite cannot rot); it never downloads anything and writes nothing that is committed.

``python -m bench compare OLD.json NEW.json [--threshold 0.15]`` compares two results
files and exits with status 1 when a figure regressed beyond the threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench._harness import Row, fmt, fmt_ratio, set_output_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

#: Per-module time limits (seconds): a hung benchmark is reported, not waited on forever.
SMOKE_LIMIT = 120.0
FULL_LIMIT = 3600.0


def _modules(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def _machine() -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    mem_total = None
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        load = []
    return {
        "loadavg_1_5_15_min": load,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": cpu_model,
        "memory_bytes": mem_total,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


async def _within(coro: Any, limit: float, console: Console) -> list[Row]:
    """Await ``coro`` for at most ``limit`` seconds; past it, print where every task of the
    loop is waiting (what hung), then cancel it and raise ``TimeoutError``."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            if other is not asyncio.current_task():
                other.print_stack(limit=12, file=stacks)
        console.print(stacks.getvalue(), style="dim", markup=False, highlight=False)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 60)
        raise TimeoutError
    result: list[Row] = task.result()
    return result


async def _run_module(name: str, quick: bool, console: Console, limit: float) -> list[Row]:
    """Run one module; a failure becomes an ``error`` row instead of ending the suite."""
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        got: list[Row] = await _within(module.run(quick=quick), limit, console)
    except Exception as exc:  # report and continue: one broken benchmark must not hide others
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if isinstance(exc, TimeoutError):
            detail = f"exceeded the {limit:.0f}s limit"
        console.print(f"  [bold red]failed[/bold red]: {detail}")
        console.print(traceback.format_exc(), style="dim", markup=False, highlight=False)
        return [
            Row(
                group=name.removeprefix("bench_"),
                name="(benchmark failed)",
                unit="",
                ours=float("nan"),
                baseline_name="",
                baseline=float("nan"),
                note=detail,
                status="error",
                bench=name,
            )
        ]
    for row in got:
        if not row.bench:
            row.bench = name
    console.print(f"  {len(got)} figure(s) in {time.perf_counter() - t0:.1f}s")
    return got


async def _run_all(names: list[str], quick: bool, console: Console) -> list[Row]:
    rows: list[Row] = []
    limit = SMOKE_LIMIT if quick else FULL_LIMIT
    for name in names:
        console.print(f"[bold cyan]▶ {name}[/bold cyan]")
        rows.extend(await _run_module(name, quick, console, limit))
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
        "note",
    ):
        table.add_column(col)
    for r in rows:
        note = escape(r.note if r.status == "ok" else f"[{r.status}] {r.note}")
        table.add_row(
            r.group,
            r.name,
            fmt(r.ours, r.unit),
            fmt(r.p99, r.unit) if r.p99 is not None else "",
            r.baseline_name,
            fmt(r.baseline, r.unit),
            fmt_ratio(r),
            r.target,
            note,
        )
    return table


def _merge_latest(payload: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Merge a partial (``--only``) run into ``latest.json``: replace only the modules run.

    The full run's date, command and machine are kept; the partial run is listed under
    ``partial_runs`` (date, command, modules).
    """
    latest = RESULTS / "latest.json"
    if not latest.exists():
        return payload
    try:
        old = json.loads(latest.read_text())
    except (OSError, json.JSONDecodeError):
        return payload
    kept = [r for r in old.get("rows", []) if r.get("bench") not in names]
    merged = dict(old)
    merged["rows"] = kept + payload["rows"]
    merged["partial_runs"] = [
        *old.get("partial_runs", []),
        {"date": payload["date"], "command": payload["command"], "modules": names},
    ]
    return merged


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=220)
    return console


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    console = _console()
    names = _modules(args.only)
    if not names:
        console.print(f"no benchmark module matches {args.only!r}")
        return 2
    full_suite = not args.only and not args.smoke
    artefacts = RESULTS if full_suite else Path(tempfile.mkdtemp(prefix="bench-artefacts-"))
    set_output_dir(artefacts)
    machine_at_start = _machine()
    rows = asyncio.run(_run_all(names, args.smoke, console))
    console.print(_table(rows))
    machine = _machine()
    machine["loadavg_at_start"] = machine_at_start["loadavg_1_5_15_min"]
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload: dict[str, Any] = {
        "date": stamp,
        "smoke": args.smoke,
        "command": " ".join([".venv/bin/python -m bench", *map(shlex.quote, argv)]).strip(),
        "commit": _git_commit(),
        "modules": names,
        "machine": machine,
        "rows": [r.to_dict() for r in rows],
    }
    out = args.out or RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(payload, indent=2))
    if not args.smoke:
        latest = payload if full_suite else _merge_latest(payload, names)
        (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2))
    if full_suite:
        from bench._report import update_benchmarks_md

        update_benchmarks_md(BENCHMARKS_MD, payload, artefacts)
        console.print(f"summary refreshed in {BENCHMARKS_MD.name}")
    console.print(f"results written to {out}")
    failed = [r for r in rows if r.status == "error"]
    if failed:
        console.print(f"[bold red]{len(failed)} benchmark(s) failed[/bold red]")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected benchmarks (or ``compare``), print and save results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from bench.compare import main as compare_main

        return compare_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        epilog="Also: python -m bench compare OLD.json NEW.json [--threshold 0.15]",
    )
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--only", nargs="*", default=[], help="substring filter on module names")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    return _run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
