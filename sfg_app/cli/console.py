"""What a command prints, where it goes: the console, the run's log file, not the noise.

Inside ``console_session(prog, log_path)``:
- everything printed to ``sys.stdout`` / ``sys.stderr`` also goes to the log file
  (appended, one header line per command run, as NiftyNet kept one in its model
  folder), a progress line redrawn with carriage returns kept once, as last drawn;
- warnings print as ``prog: warning: message`` (sfg's own) or in Python's format;
- what TensorFlow's C++ code writes to file descriptor 2 passes through a filter that
  drops the lines every CPU-only run prints and nobody can act on (the absl preamble,
  TensorFlow's oneDNN notice, which sfg replaces with its own, and the CUDA driver
  probes on a machine without an NVIDIA device); the other lines go to the console and
  the log.
The log file is a convenience: when it cannot be opened, the command runs without it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sys
import threading
import warnings

import sfg_app
from sfg_app.errors import SFGWarning

#: Native lines dropped on every machine: they say nothing a user can act on.
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    re.compile(r"^I0000 .*port\.cc:\d+\] oneDNN custom operations are on"),
    re.compile(r"^I0000 .*cudart_stub\.cc:\d+\] Could not find cuda drivers"),
    re.compile(r"^I0000 .*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with"),
)
#: Dropped only where no NVIDIA device exists (where one does, they explain a failure).
_NO_GPU_NOISE = (
    re.compile(r"^E0000 .*cuda_(platform|executor|diagnostics)\.cc:\d+\] failed call to cuInit"),
    re.compile(r"^I0000 .*cuda_diagnostics\.cc:\d+\]"),
)


def has_nvidia_device() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))


def is_noise(line: str, gpu: bool) -> bool:
    patterns = _NOISE if gpu else _NOISE + _NO_GPU_NOISE
    return any(pattern.search(line) for pattern in patterns)


class LogFile:
    """The log of a model folder, written line by line; thread safe (the native filter
    writes from its own thread). A carriage return starts the line again, so a progress
    line redrawn at every step is logged once, as it was last drawn."""

    def __init__(self, path: str):
        self._stream = open(path, "a", encoding="utf-8", errors="replace")
        self._line = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            *complete, self._line = (self._line + text).split("\n")
            for line in complete:
                self._stream.write(line.rsplit("\r", 1)[-1] + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._line.strip("\r"):
                self._stream.write(self._line.rsplit("\r", 1)[-1] + "\n")
            self._stream.close()


class _Tee:
    """A text stream that writes to the console stream and to the log."""

    def __init__(self, stream, log: LogFile | None):
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        self._stream.write(text)
        if self._log is not None:
            self._log.write(text)
        return len(text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding ... of the console
        return getattr(self._stream, name)


class _NativeFilter:
    """File descriptor 2 through a pipe read by a thread that drops the noise lines and
    forwards the rest to the real descriptor 2 (and the log)."""

    def __init__(self, log: LogFile | None):
        self._log, self._gpu = log, has_nvidia_device()
        sys.stderr.flush()
        self.saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True)
        self._thread.start()

    def _pump(self, read_end: int) -> None:
        pending = b""
        with open(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._forward(line + b"\n")
        if pending:
            self._forward(pending)

    def _forward(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        if is_noise(text, self._gpu):
            return
        os.write(self.saved, data)
        if self._log is not None:
            self._log.write(text)

    def close(self) -> None:
        os.dup2(self.saved, 2)  # closes the pipe's write end: the thread reads its end
        self._thread.join(timeout=2.0)
        os.close(self.saved)


@contextlib.contextmanager
def console_session(prog: str, log_path: str | None = None, argv=None):
    """The console of one command run (see the module docstring); yields the log's path,
    or None when there is no log.

    What it changes is the process's (``sys.stdout``, ``sys.stderr``, file descriptor 2,
    how warnings print), so only the command line's entry point enters it
    (``cli.common.run_command``). Each change is undone on the way out, the last first,
    however the block ends, and also when a later change could not be made.
    """
    with contextlib.ExitStack() as undo:
        log = _open_log(prog, log_path, argv)
        if log is not None:
            undo.callback(log.close)
        native = None
        try:
            native = _NativeFilter(log)
        except OSError:  # no descriptor 2 to filter (an embedded interpreter)
            pass
        else:
            undo.callback(native.close)
        # Python's own lines go straight to the console (not through the filter), once.
        console_err = sys.stderr
        if native is not None and _writes_to_fd(console_err, 2):
            console_err = open(native.saved, "w", buffering=1, encoding=sys.stderr.encoding,
                               errors="backslashreplace", closefd=False)
            undo.callback(console_err.close)
        undo.enter_context(_streams(_Tee(sys.stdout, log), _Tee(console_err, log)))
        undo.enter_context(warnings.catch_warnings())
        warnings.showwarning = _show_warning(prog)
        yield log_path if log is not None else None


@contextlib.contextmanager
def _streams(stdout, stderr):
    """``sys.stdout`` and ``sys.stderr`` replaced inside the block, flushed and put back
    after it."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def _open_log(prog: str, log_path: str | None, argv) -> LogFile | None:
    if log_path is None:
        return None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        log = LogFile(log_path)
    except OSError as error:
        print(f"{prog}: warning: no log file ({log_path}: {error.strerror or error})",
              file=sys.stderr)
        return None
    stamp = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    command = " ".join([prog] + list(sys.argv[1:] if argv is None else argv))
    log.write(f"=== {stamp} {command} (sfg {sfg_app.__version__}, pid {os.getpid()})\n")
    return log


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _show_warning(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SFGWarning):
            text = f"{prog}: warning: {message}\n"
        else:
            text = warnings.formatwarning(message, category, filename, lineno, line)
        (file or sys.stderr).write(text)
    return show
