"""A run folder (`[SYSTEM] model_dir`): the one owner of its layout, one writer at a
time, and the identity of the network its checkpoints hold.

Why: a checkpoint restores into any network whose variables happen to fit it, so a config
edited after training (tasks reordered, another network) ran a different network on the
trained weights and wrote wrong outputs with exit 0; and two `sfg_train` on one folder
interleaved their checkpoints. The identity (what defines the network and the meaning of
its outputs, as ``{"SECTION.key": value}``) is recorded when training starts, and every
later command compares the config's with it before any work. The lock is the operating
system's (`flock`), released when its process ends however it ends: no stale lock to
clean.

The layout, and why its names are spelled in one place, is `sfg_app/run_layout.py`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

import yaml

from sfg_app.errors import ConfigError
from sfg_app.io.atomic import atomic_write_text
from sfg_app.run_layout import RunLayout


class RunFolderBusy(ConfigError):
    """Another process trains in the run folder."""


class NetworkMismatch(ConfigError):
    """The config describes another network than the run folder's."""


class RunFolder(RunLayout):
    """The files of a run that every command agrees on (the module docstring maps them;
    the names are `RunLayout`'s)."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def settings(self) -> Path:
        return self.path / self.SETTINGS

    @property
    def settings_history(self) -> Path:
        return self.path / self.SETTINGS_HISTORY

    @property
    def network(self) -> Path:
        return self.path / self.NETWORK

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def split(self) -> Path:
        return self.path / self.SPLIT

    @property
    def histogram_ref(self) -> Path:
        return self.path / self.HISTOGRAM_REF

    def cache(self, phase: str) -> Path:
        """The preprocessed volumes of ``phase`` kept on disk (``[NETWORK] cache = disk``)."""
        return self.path / self.CACHE / phase

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def tensorboard(self, phase: str) -> Path:
        """The TensorBoard events of ``phase`` (``train``, ``validation``)."""
        return self.path / self.TENSORBOARD / phase

    def command_log(self, prog: str) -> Path:
        """The console of command ``prog`` (``sfg_train``): appended to by each run."""
        return self.path / f"{prog}{self.LOG_SUFFIX}"

    @property
    def grouping_history(self) -> Path:
        return self.path / self.GROUPING_HISTORY

    @property
    def grouping(self) -> Path:
        return self.path / self.GROUPING

    @property
    def grouping_yaml(self) -> Path:
        return self.grouping / self.GROUPING_YAML

    @property
    def grouping_png(self) -> Path:
        return self.grouping / self.GROUPING_PNG

    @property
    def grouping_history_png(self) -> Path:
        return self.grouping / self.GROUPING_HISTORY_PNG

    def inference(self, variant: str | None = None) -> Path:
        """The default outputs folder; with ``variant`` (a test-time architecture) the
        folder beside it that keeps those outputs apart: ``inference_<variant>``."""
        return self.path / _variant(self.INFERENCE, variant)

    def evaluation(self, variant: str | None = None) -> Path:
        """The default metrics folder; ``variant`` as for ``inference``."""
        return self.path / _variant(self.EVALUATION, variant)

    def metrics(self, folder=None) -> Path:
        """The per-subject metrics table in the evaluation ``folder`` (default: this
        run's ``evaluation()``; `[EVALUATION] save_csv_dir` may put it elsewhere)."""
        return Path(folder or self.evaluation()) / self.METRICS

    def metrics_summary(self, folder=None) -> Path:
        """The metrics' summary beside ``metrics(folder)``."""
        return Path(folder or self.evaluation()) / self.METRICS_SUMMARY

    @property
    def export(self) -> Path:
        return self.path / self.EXPORT

    def exported_keras(self, task: str, folder=None) -> Path:
        """Task ``task``'s compact network in the export ``folder`` (default: ``export``;
        `sfg_export --output` may put it elsewhere)."""
        return Path(folder or self.export) / f"{task}{self.KERAS_SUFFIX}"

    def exported_savedmodel(self, task: str, folder=None) -> Path:
        """The same network as a TensorFlow SavedModel folder, beside ``exported_keras``."""
        return Path(folder or self.export) / f"{task}{self.SAVEDMODEL_SUFFIX}"

    # -- one writer -----------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, command_line: str):
        """Holds the folder's lock while the block runs; a RunFolderBusy naming the
        holder's pid and command line when another process holds it. The folder must
        exist."""
        handle = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(handle, 4096, 0).decode("utf-8", "replace").strip()
                raise RunFolderBusy(
                    f"{self.path} is in use by another sfg_train ({holder or 'pid unknown'}): "
                    "one process trains in a run folder at a time. Wait for it to end, or "
                    "give this run another [SYSTEM] model_dir.") from None
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"pid {os.getpid()}: {command_line}\n".encode("utf-8"), 0)
            yield self
        finally:
            os.close(handle)  # releases the lock

    # -- the network's identity -----------------------------------------------------
    def recorded_identity(self) -> dict | None:
        """The identity recorded when training started; None before (or in a folder
        trained before identities were recorded)."""
        try:
            text = self.network.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            recorded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{self.network} is not the YAML that sfg_train writes "
                              f"({error}); restore it, or use a new [SYSTEM] model_dir.") \
                from None
        if not isinstance(recorded, dict):
            raise ConfigError(f"{self.network} is not the mapping that sfg_train writes; "
                              "restore it, or use a new [SYSTEM] model_dir.")
        return recorded

    def check_identity(self, identity: dict, what: str) -> None:
        """A NetworkMismatch listing each key as trained and as now, unless ``identity``
        is the recorded one (or none is recorded); a key that ``identity`` gives as None
        is not known now and not compared. ``what`` says what the command was about to
        do."""
        recorded = self.recorded_identity()
        if recorded is None:
            return
        keys = list(dict.fromkeys([*recorded, *identity]))
        differences = [key for key in keys if recorded.get(key) != identity.get(key)
                       and not (key in identity and identity[key] is None)]
        if not differences:
            return
        lines = "\n".join(f"  {key}: trained {_shown(recorded.get(key))}, now "
                          f"{_shown(identity.get(key))}" for key in differences)
        raise NetworkMismatch(
            f"The config describes another network than the one trained in {self.path}, "
            f"so it cannot {what}:\n{lines}\nUse the trained settings ({self.settings} is "
            "a config), or give the changed network a new [SYSTEM] model_dir.")

    def record_identity(self, identity: dict) -> None:
        atomic_write_text(self.network, yaml.safe_dump(identity, sort_keys=False))

    # -- the run's settings ---------------------------------------------------------
    def record_settings(self, text: str) -> None:
        """Writes the settings file; a different earlier one is kept, dated, in
        ``settings_history/`` (a resume may change what does not define the network)."""
        try:
            before = self.settings.read_text(encoding="utf-8")
        except FileNotFoundError:
            before = None
        if before is not None and before != text:
            stamp = time.strftime("%Y-%m-%dT%H-%M-%S",
                                  time.localtime(self.settings.stat().st_mtime))
            self.settings_history.mkdir(exist_ok=True)
            atomic_write_text(self.settings_history / f"settings_{stamp}.yaml", before)
        if before != text:
            atomic_write_text(self.settings, text)


def _variant(name: str, variant: str | None) -> str:
    return name if variant is None else f"{name}_{variant}"


def _shown(value) -> str:
    return "(none)" if value is None else repr(value)
