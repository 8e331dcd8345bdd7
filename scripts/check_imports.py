"""Import contracts: ``jido`` never imports ``foundation``, and ``foundation``'s layers hold.

Parses every module under ``src/jido`` and ``src/foundation`` (no code runs) and exits non-zero
listing each offending import. ``foundation``'s subsystems are layered (DESIGN §7): a module may
import only from its own layer or the layers before it (:data:`LAYERS`), imports under
``TYPE_CHECKING`` and inside functions included. Run by CI and by
``tests/test_import_contract.py``.
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


#: ``foundation``'s layers, first to last: the top-level module or subsystem folder names of each.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_errors", "_ids", "_wire", "_hooks", "_tracing", "_metrics", "_events"),
    ("nats",),
    ("membership", "registry", "coordination"),
    ("placement", "hosting"),
    ("messaging",),
    ("failover",),
    ("security", "tenancy"),
    ("_node", "_node_ops", "_node_types"),
    ("observability",),
    ("cli", "__main__", "demo_app", "testing"),
)


def _layer_of(part: str) -> int | None:
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    return None


def layer_violations(root: Path) -> list[str]:
    """Return ``path:line: statement`` for every import of a later layer under ``root``
    (the ``foundation`` package folder)."""
    found: list[str] = []
    package = root.name
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts == ("__init__.py",):
            continue  # the package's public API re-exports every layer
        own = _layer_of(rel.parts[0].removesuffix(".py"))
        if own is None:
            found.append(f"{path}: not in any layer of check_imports.LAYERS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == package:
                    targets = [f"{package}.{alias.name}" for alias in node.names]
                else:
                    targets = [node.module]
            for name in targets:
                parts = name.split(".")
                if parts[0] != package or len(parts) < 2:
                    continue
                rank = _layer_of(parts[1])
                if rank is not None and rank > own:
                    found.append(f"{path}:{node.lineno}: imports {name} (a later layer)")
    return found


def main() -> int:
    """Check ``src/jido`` and ``src/foundation`` and report; exit code 1 on any violation."""
    src = Path(__file__).resolve().parent.parent / "src"
    bad = violations(src / "jido")
    for line in bad:
        print(line)
    if bad:
        print(f"import contract broken: jido imports {FORBIDDEN} ({len(bad)} place(s))")
        return 1
    print("import contract kept: jido does not import foundation")
    layered = layer_violations(src / "foundation")
    for line in layered:
        print(line)
    if layered:
        print(f"layer order broken in foundation ({len(layered)} place(s))")
        return 1
    print("layer order kept in foundation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
