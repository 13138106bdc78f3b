"""A run folder (`[SYSTEM] model_dir`): one writer at a time, and the identity of the
network its checkpoints hold.

Why: a checkpoint restores into any network whose variables happen to fit it, so a config
edited after training (tasks reordered, another network) ran a different network on the
trained weights and wrote wrong outputs with exit 0; and two `sfg_train` on one folder
interleaved their checkpoints. The identity (what defines the network and the meaning of
its outputs, as ``{"SECTION.key": value}``) is recorded when training starts, and every
later command compares the config's with it before any work. The lock is the operating
system's (`flock`), released when its process ends however it ends: no stale lock to
clean.
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


class RunFolderBusy(ConfigError):
    """Another process trains in the run folder."""


class NetworkMismatch(ConfigError):
    """The config describes another network than the run folder's."""


class RunFolder:
    """The files of a run that every command agrees on."""

    SETTINGS = "settings.yaml"
    SETTINGS_HISTORY = "settings_history"
    NETWORK = "network.yaml"
    LOCK = "sfg_train.lock"

    def __init__(self, path):
        self.path = Path(path)

    @property
    def settings(self) -> Path:
        return self.path / self.SETTINGS

    @property
    def network(self) -> Path:
        return self.path / self.NETWORK

    # -- one writer -----------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, command_line: str):
        """Holds the folder's lock while the block runs; a RunFolderBusy naming the
        holder's pid and command line when another process holds it. The folder must
        exist."""
        path = self.path / self.LOCK
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
        """Writes ``settings.yaml``; a different earlier one is kept, dated, in
        ``settings_history/`` (a resume may change what does not define the network)."""
        try:
            before = self.settings.read_text(encoding="utf-8")
        except FileNotFoundError:
            before = None
        if before is not None and before != text:
            stamp = time.strftime("%Y-%m-%dT%H-%M-%S",
                                  time.localtime(self.settings.stat().st_mtime))
            history = self.path / self.SETTINGS_HISTORY
            history.mkdir(exist_ok=True)
            atomic_write_text(history / f"settings_{stamp}.yaml", before)
        if before != text:
            atomic_write_text(self.settings, text)


def _shown(value) -> str:
    return "(none)" if value is None else repr(value)
