"""Every public name is exported exactly once, resolves, and is documented."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["jido", "jido.ai", "jido.ai.testing", "jido.ai.mcp", "foundation"]


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_resolve_once_and_have_docstrings(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names)), "a name is listed twice in __all__"
    for name in names:
        obj = getattr(module, name)
        if callable(obj):
            assert obj.__doc__, f"{package}.{name} has no docstring"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_public_name_left_out_of_all(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith(package)
    }
    assert public <= set(module.__all__), (
        f"exported but not in __all__: {public - set(module.__all__)}"
    )
