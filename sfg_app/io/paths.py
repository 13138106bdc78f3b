"""Where outputs may go: names that stay in their folder, folders that can be written.

Every name that becomes part of an output path (a subject id from a file name, a CSV
file or ``--input``; a task name) is checked once, where it enters, by ``check_name``;
every output path is built by ``output_path``, which checks again that it resolves
inside its folder (a symbolic link in the folder may point elsewhere) and that nothing is
there unless overwriting was asked for. ``writable_folder`` is the preflight of a
command: it creates the folder and writes a file there before any work is done, so that
a full disk or a read-only folder is reported in seconds, not after hours of inference.
"""

from __future__ import annotations

import errno
import os
import uuid

from sfg_app.errors import OutputError
from sfg_app.io.atomic import temporary_name

_FORBIDDEN = {"/": "a path separator '/'", "\\": "a path separator '\\'", "\0": "a NUL byte"}


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one part of a file name inside a folder, or None."""
    if not name or not name.strip():
        return "it is empty"
    for character, what in _FORBIDDEN.items():
        if character in name:
            return f"it holds {what}"
    if ".." in name:
        return "it holds '..'"
    if any(ord(character) < 32 for character in name):
        return "it holds a control character"
    return None


def check_name(name: str, what: str, error=OutputError) -> str:
    """``name`` if it can be part of a file name, else ``error`` naming ``what`` it is
    (e.g. "the subject id made from the file '/data/x.nii.gz'")."""
    problem = name_problem(name)
    if problem:
        raise error(f"{what} is {name!r}: {problem}, and it becomes part of output file "
                    "names. A name must stay inside its output folder: no '/', '\\', '..', "
                    "control characters, not empty. Rename the file, or fix the id.")
    return name


def real_paths(paths) -> frozenset[str]:
    """The resolved paths of ``paths`` (links followed), for ``output_path``'s
    ``protected``: resolved once per run, not once per output."""
    return frozenset(os.path.realpath(p) for p in paths)


def _name_limit(folder: str) -> int:
    """The longest file name (bytes) of the file system of ``folder`` (or of its nearest
    existing parent); 255, the usual limit, when the system does not say."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def output_path(folder: str | os.PathLike, name: str, overwrite: bool = False,
                protected: frozenset[str] = frozenset()) -> str:
    """``folder/name`` after checking that it resolves inside ``folder``, that it is not
    one of the ``protected`` paths (``real_paths`` of the inputs: never overwritten,
    even with ``overwrite``), and that no file is there unless ``overwrite``."""
    folder = os.fspath(folder)
    path = os.path.join(folder, name)
    real_folder, real_path = os.path.realpath(folder), os.path.realpath(path)
    if os.path.commonpath([real_folder, real_path]) != real_folder or real_path == real_folder:
        raise OutputError(f"The output {path} resolves to {real_path}, outside its folder "
                          f"{folder}; nothing was written. Remove the link, or choose "
                          "another output folder.")
    if real_path in protected:
        raise OutputError(f"The output {path} would overwrite an input image. Choose another "
                          "output folder ([INFERENCE] save_seg_dir or --output).")
    longest = _name_limit(folder)
    if len(temporary_name(name).encode("utf-8")) > longest:
        raise OutputError(
            f"The output {path} is written first under a temporary name "
            f"({len(temporary_name(name).encode('utf-8'))} bytes), longer than the "
            f"{longest} bytes a file name may have in {folder}; nothing was written. "
            "Shorten the input's file name (the output is named after it).")
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"The output {path} exists already. Remove it, choose another output "
                          "folder, or pass --overwrite (or set [INFERENCE] overwrite = true) "
                          "to replace it.")
    return path


def writable_folder(folder: str | os.PathLike, what: str) -> str:
    """Creates ``folder`` (and its parents) and checks that a file can be written in it;
    an OutputError naming ``what`` the folder is for otherwise."""
    folder = os.fspath(folder)
    try:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, "a file is there, not a folder", folder)
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".sfg_write_test_{uuid.uuid4().hex[:8]}")
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
        os.remove(probe)
    except OSError as error:
        raise OutputError(f"Cannot write {what} in {folder}: {describe_os_error(error)}. "
                          "Choose another folder, or free space / fix its permissions; "
                          "nothing was done.") from None
    return folder


def describe_os_error(error: OSError) -> str:
    """An OSError as one line that names its path and says what the system refused."""
    reason = error.strerror or str(error)
    hint = {errno.ENOSPC: " (the disk is full)", errno.EDQUOT: " (the disk quota is used up)",
            errno.EACCES: " (no permission)", errno.EPERM: " (no permission)",
            errno.EROFS: " (a read-only file system)",
            errno.ENOTDIR: " (a file is where a folder should be)",
            errno.EISDIR: " (a folder is where a file should be)"}.get(error.errno, "")
    paths = [p for p in (error.filename, error.filename2) if p]
    where = f" ({' -> '.join(os.fspath(p) for p in paths)})" if paths else ""
    return f"{reason}{hint}{where}"
