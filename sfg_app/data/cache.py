"""Preprocessed subjects kept for the whole run: in memory, on disk as .npy, or not at all.

Preprocessing (reorient, resample, normalise) costs far more than cutting a window, and a
subject gives many windows, so each subject is preprocessed once. ``cache``:

- ``memory``: arrays kept in this process. Threads share them; a worker *process* gets a
  copy of every array when the cache is sent to it (use ``disk`` with process workers).
- ``disk``: each array written once as ``<folder>/subject_00000/000.npy`` and opened as a
  read-only memmap: worker processes reopen the files (the cache pickles as its folder),
  the operating system's page cache holds one copy for all of them, and a later run
  with the same ``fingerprint`` reuses the files without preprocessing again.
- ``none``: the loader runs at every access (for data too large for memory and disk).

Volumes are stored C-contiguous, floating point as float32, integers (labels) as they are.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sfg_app.arguments import integer, one_of
from sfg_app.errors import ConfigError, DataError
from sfg_app.io.atomic import atomic_path, atomic_write_text

CACHE_MODES = ("memory", "disk", "none")

Loader = Callable[[int], Mapping[str, np.ndarray]]


class VolumeCache(Sequence):
    """``cache[i]`` is subject ``i`` as ``{section: array}``, from ``loader(i)`` once.

    ``fingerprint`` identifies what the loader produces (e.g. a hash of the preprocessing
    settings and input files): files on disk made under another fingerprint are remade.
    """

    def __init__(self, loader: Loader | None, count: int, *, cache: str = "memory",
                 folder: str | os.PathLike | None = None, fingerprint: str = ""):
        one_of(cache, "cache", CACHE_MODES)
        if cache == "disk" and folder is None:
            raise ConfigError("Invalid value for argument `folder`. cache = disk needs a folder "
                              "to write the preprocessed volumes to. Received folder=None.")
        self.loader, self.count, self.mode = loader, integer(count, "count", 1), cache
        self.folder = None if folder is None else Path(folder)
        self.fingerprint = str(fingerprint)
        self._subjects: dict[int, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.count:
            raise IndexError(f"Subject {index} out of range: the cache holds {self.count}.")
        if self.mode == "none":
            return _standardise(self._load(index))
        subject = self._subjects.get(index)
        if subject is None:
            with self._lock:  # one load per subject even when threads ask at once
                subject = self._subjects.get(index)
                if subject is None:
                    subject = self._from_disk(index) if self.mode == "disk" else None
                    if subject is None:
                        subject = self._store(index, _standardise(self._load(index)))
                    self._subjects[index] = subject
        return subject

    def fill(self) -> "VolumeCache":
        """Loads every subject now, e.g. before worker processes start."""
        for index in range(self.count):
            self[index]
        return self

    def _load(self, index: int) -> Mapping[str, np.ndarray]:
        if self.loader is None:
            raise DataError(f"Subject {index} is not in the cache folder {self.folder} and this "
                            "copy of the cache has no loader. Call fill() before handing the "
                            "cache to worker processes.")
        return self.loader(index)

    def _subject_folder(self, index: int) -> Path:
        return self.folder / f"subject_{index:05d}"

    def _from_disk(self, index: int) -> dict[str, np.ndarray] | None:
        manifest = self._subject_folder(index) / "manifest.json"
        try:
            record = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("fingerprint") != self.fingerprint:
            return None
        return {name: np.load(self._subject_folder(index) / file, mmap_mode="r")
                for name, file in record["sections"]}

    def _store(self, index: int, subject: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.mode != "disk":
            return subject
        folder = self._subject_folder(index)
        files = []
        for number, (name, array) in enumerate(subject.items()):
            file = f"{number:03d}.npy"
            with atomic_path(folder / file) as temporary:
                np.save(temporary, array)
            files.append([name, file])
        atomic_write_text(folder / "manifest.json", json.dumps(
            {"fingerprint": self.fingerprint, "sections": files}, indent=1))
        return self._from_disk(index)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        if self.mode == "disk":
            state["_subjects"] = {}  # memmaps reopen from their files, not pickled whole
            if all(self._from_disk(i) is not None for i in range(self.count)):
                state["loader"] = None
        elif self.mode == "memory" and len(self._subjects) == self.count:
            state["loader"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _standardise(subject: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, array in subject.items():
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
            array = array.astype(np.float32, copy=False)
        out[name] = np.ascontiguousarray(array)
    return out


def as_subjects(subjects: Sequence[Mapping[str, np.ndarray]] | VolumeCache
                ) -> Sequence[Mapping[str, np.ndarray]]:
    """Subjects given as a list of dicts become a memory cache (standardised arrays)."""
    if isinstance(subjects, VolumeCache):
        return subjects
    subjects = list(subjects)
    if not subjects:
        raise DataError("No subjects to draw windows from: the list of subjects is empty. "
                        "Check the dataset split (training subjects).")
    return VolumeCache(subjects.__getitem__, len(subjects), cache="memory").fill()
