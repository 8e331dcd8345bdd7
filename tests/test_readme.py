"""The README's python examples run exactly as written and print what the README says.

A python block preceded by ``<!-- runnable -->`` is run as a script in a fresh interpreter;
every other python block must say why it is not run (``<!-- not run: reason -->``), so no
example can silently rot. The cluster example starts its own embedded ``nats-server``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_BLOCK = re.compile(r"(?:<!--\s*(?P<mark>[^>]*?)\s*-->\n)?```python\n(?P<code>.*?)```", re.S)

#: Section heading -> the exact stdout its runnable example prints (as the README states).
EXPECTED_STDOUT: dict[str, str] = {
    "Quick start": "5",
    "Cluster quick start": "{'balance': 5} n1 True",
    "Actions as LLM tools": "deposit ['amount']\n{\"deposited\":5}\nvalidation_error False",
    "LLM agents": "Deposited 5. 2 5",
    "Time and activation": "hits=1 rung=1",
}


def _python_blocks() -> list[tuple[str, str | None, str]]:
    """(section heading, marker or None, code) of every python block in the README."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.M)
        section = headings[-1].strip() if headings else ""
        blocks.append((section, match.group("mark"), match.group("code")))
    return blocks


def _runnable() -> list[tuple[str, str]]:
    return [(section, code) for section, mark, code in _python_blocks() if mark == "runnable"]


def test_every_python_block_is_run_or_says_why_not() -> None:
    blocks = _python_blocks()
    assert blocks, "README.md has no python blocks"
    for section, mark, _code in blocks:
        assert mark == "runnable" or (mark or "").startswith("not run:"), (
            f"python block under '## {section}' is neither marked '<!-- runnable -->' nor "
            "'<!-- not run: reason -->'"
        )


def test_every_expected_output_belongs_to_a_runnable_block() -> None:
    sections = [section for section, _code in _runnable()]
    assert sorted(sections) == sorted(EXPECTED_STDOUT), sections


@pytest.mark.parametrize("section", sorted(EXPECTED_STDOUT))
def test_readme_example_runs_as_written(section: str, tmp_path: Path) -> None:
    codes = [code for name, code in _runnable() if name == section]
    assert len(codes) == 1, f"expected one runnable block under '## {section}'"
    script = tmp_path / "example.py"
    script.write_text(codes[0], encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == EXPECTED_STDOUT[section]


def test_readme_links_point_at_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to missing {target}"
