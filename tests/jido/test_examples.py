"""The runnable examples and the README quick start work exactly as written."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _readme_quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README.md has no python block under '## Quick start'"
    return match.group(1)


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(_readme_quick_start(), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_warehouse_example_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "warehouse.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "fulfilled 6 orders: o0, o1, o2, o3, o4, o5" in out.stdout
    assert "restored from SQLite: 6 fulfilled orders" in out.stdout


async def test_warehouse_example_in_process(tmp_path: Path) -> None:
    warehouse = _load(EXAMPLES / "warehouse.py")
    summary = await warehouse.main(tmp_path / "w.db")
    assert summary["fulfilled"] == [f"o{i}" for i in range(warehouse.ORDERS)]
    # more orders than initial stock: some were back-ordered, retried and restocked
    assert summary["backorders"] >= warehouse.ORDERS - warehouse.INITIAL_STOCK
    assert summary["restored_fulfilled"] == warehouse.ORDERS


def test_ai_assistant_example_runs_as_a_script_against_the_test_server() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "ai_assistant.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "I reserved 2 apples for you; 8 are left." in out.stdout
    assert "steps=3 tool_calls=3 apples_left=8 notes=['reserved 2 apples']" in out.stdout
