"""Bounded file access confined to allowed roots: ``ReadFile`` and ``WriteFile``.

Both refuse every path until bound to roots with ``confined_to(...)``. Paths are resolved
(symlinks followed) before the check, so ``..`` and symlinks cannot escape a root. Relative paths
are taken relative to the first root. Sizes are bounded by ``max_bytes``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field

from jido._action import Action, ActionContext
from jido._errors import JidoError, ValidationError

__all__ = ["AccessDeniedError", "ReadFile", "WriteFile"]

DEFAULT_MAX_BYTES = 1_048_576

_F = TypeVar("_F", bound="_FileAction")


class AccessDeniedError(JidoError):
    """A path lies outside the roots an action may touch. Use a path under an allowed root."""

    type = "access_denied"


class _FileAction(Action):
    """Shared confinement logic of the file actions."""

    category = "files"
    allowed_roots: ClassVar[tuple[Path, ...]] = ()
    max_bytes: ClassVar[int] = DEFAULT_MAX_BYTES

    @classmethod
    def confined_to(
        cls: type[_F], *roots: str | os.PathLike[str], max_bytes: int | None = None
    ) -> type[_F]:
        """A subclass (same tool name) that may only touch files under ``roots``."""
        if not roots:
            raise ValueError("confined_to() needs at least one root directory")
        resolved = tuple(Path(r).resolve() for r in roots)
        namespace: dict[str, Any] = {
            "name": cls.name,
            "__doc__": cls.__doc__,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "allowed_roots": resolved,
            "max_bytes": cls.max_bytes if max_bytes is None else max_bytes,
        }
        return type(cls.__name__, (cls,), namespace)

    @classmethod
    def _resolve(cls, path: str) -> Path:
        roots = cls.allowed_roots
        if not roots:
            raise AccessDeniedError(
                f"{cls.name} is not bound to any root directory; create it with "
                f"{cls.__name__}.confined_to('/some/dir')",
                details={"action": cls.name, "path": path},
            )
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = roots[0] / candidate
        resolved = candidate.resolve()
        for root in roots:
            if resolved == root or resolved.is_relative_to(root):
                return resolved
        raise AccessDeniedError(
            f"path {path!r} is outside the allowed roots "
            f"({', '.join(str(r) for r in roots)}); use a path under one of them",
            details={"action": cls.name, "path": path, "roots": [str(r) for r in roots]},
        )


class ReadFile(_FileAction):
    """Read a text file (UTF-8) under the allowed roots, at most ``max_bytes`` bytes."""

    name = "read_file"
    tags = ("files", "read")

    class Params(BaseModel):
        path: str = Field(description="File path (relative paths are under the first root)")
        max_bytes: int | None = Field(
            default=None, ge=1, description="Read at most this many bytes (capped by the action)"
        )
        offset: int = Field(default=0, ge=0, description="Start reading at this byte offset")

    def run(self, params: Params, ctx: ActionContext) -> dict[str, Any]:
        """Read the file (confined to the allowed roots, at most ``max_bytes``)."""
        path = self._resolve(params.path)
        limit = (
            self.max_bytes if params.max_bytes is None else min(params.max_bytes, self.max_bytes)
        )
        if not path.is_file():
            raise ValidationError(
                f"{params.path!r} is not an existing file",
                details={
                    "action": self.name,
                    "errors": [{"loc": ["path"], "msg": "no such file", "type": "not_found"}],
                },
            )
        size = path.stat().st_size
        with path.open("rb") as fh:
            fh.seek(params.offset)
            data = fh.read(limit + 1)
        truncated = len(data) > limit
        data = data[:limit]
        return {
            "path": str(path),
            "content": data.decode("utf-8", errors="replace"),
            "bytes": len(data),
            "size": size,
            "truncated": truncated,
        }


class WriteFile(_FileAction):
    """Write text (UTF-8) to a file under the allowed roots, at most ``max_bytes`` bytes."""

    name = "write_file"
    tags = ("files", "write")

    class Params(BaseModel):
        path: str = Field(description="File path (relative paths are under the first root)")
        content: str = Field(description="Text to write")
        mode: Literal["overwrite", "append", "create"] = Field(
            default="overwrite",
            description="overwrite the file, append to it, or create it (fails if it exists)",
        )
        make_dirs: bool = Field(default=False, description="Create missing parent directories")

    def run(self, params: Params, ctx: ActionContext) -> dict[str, Any]:
        """Write the file (confined to the allowed roots, at most ``max_bytes``)."""
        path = self._resolve(params.path)
        data = params.content.encode("utf-8")
        if len(data) > self.max_bytes:
            raise ValidationError(
                f"content is {len(data)} bytes; at most {self.max_bytes} may be written",
                details={
                    "action": self.name,
                    "errors": [
                        {
                            "loc": ["content"],
                            "msg": f"content is {len(data)} bytes; limit {self.max_bytes}",
                            "type": "too_large",
                        }
                    ],
                },
            )
        if params.make_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.parent.is_dir():
            raise ValidationError(
                f"directory {str(path.parent)!r} does not exist (set make_dirs=true to create it)",
                details={
                    "action": self.name,
                    "errors": [
                        {"loc": ["path"], "msg": "parent directory missing", "type": "not_found"}
                    ],
                },
            )
        flags = {"overwrite": "wb", "append": "ab", "create": "xb"}[params.mode]
        try:
            with path.open(flags) as fh:
                fh.write(data)
        except FileExistsError:
            raise ValidationError(
                f"{params.path!r} already exists (mode 'create'); use mode 'overwrite' or 'append'",
                details={
                    "action": self.name,
                    "errors": [{"loc": ["path"], "msg": "file exists", "type": "exists"}],
                },
            ) from None
        return {"path": str(path), "bytes_written": len(data), "mode": params.mode}
