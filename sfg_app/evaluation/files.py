"""Writing a result file whole or not at all: a temporary name in the same folder, then
``os.replace``, so a reader (or a crash) never sees half a file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result to ``path``.

    The temporary file is created by ``write`` with ordinary permissions (umask), in the
    destination folder (created if needed) so the rename stays on one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda name: Path(name).write_text(text, encoding="utf-8"))
