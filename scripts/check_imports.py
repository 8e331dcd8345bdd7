"""Import contract: ``jido`` must never import ``foundation``.

Parses every module under ``src/jido`` (no code runs) and exits non-zero listing
each offending import. Run by CI and by ``tests/test_import_contract.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FORBIDDEN = "foundation"


def violations(root: Path) -> list[str]:
    """Return ``path:line: statement`` for every import of ``foundation`` under ``root``."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name == FORBIDDEN or name.startswith(FORBIDDEN + "."):
                    found.append(f"{path}:{node.lineno}: imports {name}")
    return found


def main() -> int:
    """Check ``src/jido`` and report; exit code 1 on any violation."""
    root = Path(__file__).resolve().parent.parent / "src" / "jido"
    bad = violations(root)
    for line in bad:
        print(line)
    if bad:
        print(f"import contract broken: jido imports {FORBIDDEN} ({len(bad)} place(s))")
        return 1
    print("import contract kept: jido does not import foundation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
