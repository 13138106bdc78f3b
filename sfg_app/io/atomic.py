"""Files appear whole or not at all: written to a temporary name beside the target, then renamed.

A run killed while writing (or two runs writing the same split file) must never leave a
half-written image, split or landmark file that the next run would read as valid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

from sfg_app.io.formats import split_extension


def temporary_name(name: str) -> str:
    """The hidden name under which ``name`` is written before it is renamed (the
    extension kept: writers choose the format by it)."""
    stem, ext = split_extension(name)
    return f".{stem}.{uuid.uuid4().hex[:12]}.tmp{ext}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path in the folder of ``path``, with its extension (writers choose the
    format by it); renamed onto ``path`` when the block succeeds, removed when it fails.

    The block may write a file or a folder (a SavedModel); a folder replaces an existing
    folder at ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, temporary_name(os.path.basename(path)))
    try:
        yield temporary
        if os.path.isdir(temporary) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        elif os.path.exists(temporary):
            os.remove(temporary)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
