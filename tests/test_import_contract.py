"""The layering rules: ``jido`` never imports ``foundation``; ``foundation``'s layers hold."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "check_imports", ROOT / "scripts" / "check_imports.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jido_source_never_imports_foundation() -> None:
    assert _checker().violations(ROOT / "src" / "jido") == []


def test_checker_flags_a_violation(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("from foundation import Node\nimport foundation.x\n")
    (tmp_path / "ok.py").write_text("import foundations_of_math\nfrom . import foundation\n")
    found = _checker().violations(tmp_path)
    assert len(found) == 2
    assert all("bad.py" in line for line in found)


def test_importing_jido_does_not_load_foundation() -> None:
    code = "import sys, jido; print('foundation' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_foundation_layers_hold() -> None:
    assert _checker().layer_violations(ROOT / "src" / "foundation") == []


def test_layer_checker_flags_a_later_layer(tmp_path: Path) -> None:
    pkg = tmp_path / "foundation"
    (pkg / "nats").mkdir(parents=True)
    (pkg / "messaging").mkdir()
    (pkg / "nats" / "kv.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from foundation.messaging.ref import ClusterRef\n"
    )
    (pkg / "messaging" / "ref.py").write_text("from foundation.nats.kv import KV\n")
    found = _checker().layer_violations(pkg)
    assert len(found) == 1
    assert "kv.py:3" in found[0]
