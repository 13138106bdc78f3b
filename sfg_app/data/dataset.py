"""Which files make up the dataset, which subject each belongs to, and the split into phases.

Every input section ([MR], [CT], [LABEL], ...) finds its own files, either by searching
folders (``path_to_search`` with ``filename_contains`` / ``filename_not_contains``) or
from a ``csv_file``; each file gets a subject id, and subjects are matched across sections
by id. The id of a file is its name without the extension, with ``filename_removefromid``
(a regex) removed, or by default the ``filename_contains`` strings removed, then
stripped of ``_-.`` and spaces at both ends: ``sub01_ct.nii.gz`` with
``filename_contains = _ct`` is subject ``sub01``.

Folder search is not recursive. It sees image files (by extension, so BIDS ``.json``
side cars are ignored) and sub-folders (read as DICOM series); names starting with a dot
are skipped.

The split file (``subject_id,training|validation|inference``, no header) is drawn once
from the fractions and the seed and reused afterwards, whatever the fractions say then.
Rule for subjects found on disk but absent from an existing split file: a DataError
listing them (a new subject is never silently put into a phase; delete the file to draw
again or add rows by hand). Subjects listed in the file but no longer found are ignored.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sfg_app.arguments import fraction
from sfg_app.errors import ConfigError, DataError
from sfg_app.io.atomic import atomic_write_text
from sfg_app.io.formats import SEARCHABLE_EXTENSIONS, split_extension
from sfg_app.io.paths import check_name

PHASES = ("training", "validation", "inference")
_LISTED = 20  # ids named in a message before "... and N more"


@dataclass(frozen=True)
class SectionSource:
    """Where the files (or per-subject values) of one input section come from.

    ``csv_file`` holds rows ``subject_id,path`` (a header row ``subject_id,path`` is
    allowed; relative paths are relative to the CSV's folder). With ``value_column`` it is
    instead a table with a header naming ``subject_id`` and that column, giving one number
    per subject (an image-level target: a class, an age). ``optional`` sections may lack
    subjects; the others must have every subject.
    """

    name: str
    path_to_search: Sequence[str] = ()
    filename_contains: Sequence[str] = ()
    filename_not_contains: Sequence[str] = ()
    filename_removefromid: str | None = None
    csv_file: str | None = None
    value_column: str | None = None
    optional: bool = False

    @classmethod
    def of_section(cls, name: str, section, optional: bool = False) -> "SectionSource":
        """The source that an input section's settings (``settings.inputs[name]``) name."""
        return cls(
            name=name, path_to_search=tuple(str(p) for p in section.path_to_search or ()),
            filename_contains=tuple(section.filename_contains or ()),
            filename_not_contains=tuple(section.filename_not_contains or ()),
            filename_removefromid=section.filename_removefromid,
            csv_file=None if section.csv_file is None else str(section.csv_file),
            value_column=section.value_column, optional=optional)

    def __post_init__(self):
        for key in ("path_to_search", "filename_contains", "filename_not_contains"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(value))
        if not self.csv_file and (self.value_column or not self.path_to_search):
            raise ConfigError(
                f"[{self.name}] needs `path_to_search` (folders to search) or `csv_file`"
                f"{' (`value_column` reads a csv_file)' if self.value_column else ''}. "
                f"Received path_to_search={self.path_to_search!r}, csv_file={self.csv_file!r}.")
        if self.csv_file and self.path_to_search:
            raise ConfigError(
                f"[{self.name}] has both `csv_file` and `path_to_search`; give one. Received "
                f"csv_file={self.csv_file!r}, path_to_search={self.path_to_search!r}.")
        if self.filename_removefromid is not None:
            try:
                re.compile(self.filename_removefromid)
            except re.error as err:
                raise ConfigError(
                    f"Invalid value for [{self.name}] `filename_removefromid`. Expected a "
                    f"regular expression. Received {self.filename_removefromid!r} ({err}).") \
                    from err


@dataclass(frozen=True)
class SubjectFiles:
    """One subject: a file path per image section and a number per value section."""

    subject_id: str
    paths: dict[str, str]
    values: dict[str, float] = field(default_factory=dict)


def subject_id_from_name(file_name: str, source: SectionSource,
                         suffixes_only: bool = False) -> str:
    """The subject id of a file: its name less the extension and what
    ``filename_removefromid`` matches, or else less each ``filename_contains`` part
    (anywhere, as NiftyNet; only a whole suffix with ``suffixes_only``, for files named
    by the user one by one), then less the separators left at its ends (a leading ``-``
    is kept: it can belong to the id)."""
    stem = split_extension(file_name)[0]
    if source.filename_removefromid is not None:
        stem = re.sub(source.filename_removefromid, "", stem)
    else:
        for part in filter(None, source.filename_contains):
            if not suffixes_only:
                stem = stem.replace(part, "")
            elif stem.endswith(part):
                stem = stem[:-len(part)]
    return stem.lstrip("_. ").rstrip("_-. ")


def _matches(name: str, source: SectionSource) -> bool:
    return (all(part in name for part in source.filename_contains)
            and not any(part in name for part in source.filename_not_contains))


def _add(found: dict[str, str], subject_id: str, path: str, source: SectionSource) -> None:
    if not subject_id:
        raise DataError(
            f"[{source.name}] the file {path!r} gives an empty subject id once "
            "`filename_contains` / `filename_removefromid` is removed from its name. Adjust "
            "`filename_removefromid` so that the subject's identifier remains.")
    check_name(subject_id, f"[{source.name}] the subject id of {path!r}", DataError)
    if subject_id in found:
        raise DataError(
            f"[{source.name}] two files give the subject id {subject_id!r}: {found[subject_id]!r} "
            f"and {path!r}. Each subject needs one file per section: narrow the section with "
            "`filename_contains` / `filename_not_contains`, or change `filename_removefromid`.")
    found[subject_id] = path


def search_section(source: SectionSource) -> dict[str, str]:
    """``{subject_id: path}`` of the files in ``path_to_search`` that pass the filters."""
    found: dict[str, str] = {}
    seen = 0
    for folder in source.path_to_search:
        if not os.path.isdir(folder):
            raise DataError(f"[{source.name}] `path_to_search` folder {folder!r} does not exist "
                            "or is not a folder. Check the path (relative paths are relative "
                            f"to the working directory {os.getcwd()!r}).")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".") or not (
                    os.path.isdir(path) or split_extension(name)[1] in SEARCHABLE_EXTENSIONS):
                continue
            seen += 1
            if _matches(name, source):
                _add(found, subject_id_from_name(name, source), path, source)
    if not found:
        raise DataError(
            f"[{source.name}] no image found in `path_to_search` {list(source.path_to_search)} "
            f"({seen} image files or folders there) with filename_contains="
            f"{list(source.filename_contains)} and filename_not_contains="
            f"{list(source.filename_not_contains)}. Check the folders and the filters.")
    return found


def _csv_rows(path: str, what: str) -> list[tuple[int, list[str]]]:
    """Non-empty rows of a CSV file with their line numbers; ``what`` names the file in errors."""
    if not os.path.isfile(path):
        raise DataError(f"{what} {path!r} does not exist. Check the path.")
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = [(number, [cell.strip() for cell in row])
                for number, row in enumerate(csv.reader(stream), start=1)]
    rows = [(number, row) for number, row in rows if any(row)]
    if not rows:
        raise DataError(f"{what} {path!r} is empty.")
    return rows


def read_section_csv(source: SectionSource) -> dict[str, str]:
    """``{subject_id: path}`` from rows ``subject_id,path``; every path must exist."""
    rows = _csv_rows(source.csv_file, f"[{source.name}] `csv_file`")
    if [cell.lower() for cell in rows[0][1]] == ["subject_id", "path"]:
        rows = rows[1:]
    base = os.path.dirname(os.path.abspath(source.csv_file))
    found: dict[str, str] = {}
    for number, row in rows:
        if len(row) != 2 or not all(row):
            raise DataError(f"[{source.name}] `csv_file` {source.csv_file!r} line {number}: "
                            f"expected `subject_id,path`. Received {','.join(row)!r}.")
        _add(found, row[0], os.path.join(base, os.path.expanduser(row[1])), source)
    missing = [f"{sid}: {path}" for sid, path in found.items() if not os.path.exists(path)]
    if missing:
        raise DataError(f"[{source.name}] `csv_file` {source.csv_file!r} names "
                        f"{len(missing)} file(s) that do not exist: {_listing(missing)}.")
    return found


def read_section_values(source: SectionSource) -> dict[str, float]:
    """``{subject_id: value}`` from the ``value_column`` of the section's CSV table."""
    rows = _csv_rows(source.csv_file, f"[{source.name}] `csv_file`")
    header = rows[0][1]
    if "subject_id" not in header or source.value_column not in header:
        raise DataError(
            f"[{source.name}] `csv_file` {source.csv_file!r} needs a header row naming the "
            f"columns `subject_id` and `{source.value_column}` (the `value_column`). "
            f"Received header {header}.")
    id_column, value_column = header.index("subject_id"), header.index(source.value_column)
    values: dict[str, float] = {}
    for number, row in rows[1:]:
        cells = row + [""] * (len(header) - len(row))
        subject_id, text = cells[id_column], cells[value_column]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not subject_id or not math.isfinite(value):
            raise DataError(
                f"[{source.name}] `csv_file` {source.csv_file!r} line {number}: expected a "
                f"subject id and a finite number in column `{source.value_column}`. Received "
                f"subject_id={subject_id!r}, {source.value_column}={text!r}.")
        check_name(subject_id, f"[{source.name}] `csv_file` {source.csv_file!r} line "
                               f"{number}: the subject id", DataError)
        if subject_id in values:
            raise DataError(f"[{source.name}] `csv_file` {source.csv_file!r} line {number}: "
                            f"subject {subject_id!r} appears twice.")
        values[subject_id] = value
    return values


def find_subjects(sources: Sequence[SectionSource]) -> list[SubjectFiles]:
    """The subjects of the dataset, sorted by id, each with an entry for every section.

    A subject missing a required section is a DataError listing, per section, which
    subjects lack it; optional sections may be missing (the entry is left out).
    """
    names = [source.name for source in sources]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"Expected one or more input sections with distinct names. "
                          f"Received {names}.")
    paths: dict[str, dict[str, str]] = {}
    values: dict[str, dict[str, float]] = {}
    for source in sources:
        if source.value_column:
            values[source.name] = read_section_values(source)
        elif source.csv_file:
            paths[source.name] = read_section_csv(source)
        else:
            paths[source.name] = search_section(source)
    found = {**paths, **values}
    subject_ids = sorted(set().union(*(set(entries) for entries in found.values())))
    lacking = {source.name: [sid for sid in subject_ids if sid not in found[source.name]]
               for source in sources if not source.optional}
    lacking = {name: ids for name, ids in lacking.items() if ids}
    if lacking:
        lines = "; ".join(f"[{name}] has no entry for {len(ids)} subject(s): {_listing(ids)}"
                          for name, ids in lacking.items())
        raise DataError(
            f"Subjects are missing required sections: {lines}. Each subject needs an entry in "
            "every required section: add the files, exclude the subjects "
            "(`filename_not_contains`), check that `filename_removefromid` gives the same id "
            "in every section, or declare the section optional.")
    return [SubjectFiles(
        subject_id=sid,
        paths={name: entries[sid] for name, entries in paths.items() if sid in entries},
        values={name: entries[sid] for name, entries in values.items() if sid in entries})
        for sid in subject_ids]


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


# Splits ---------------------------------------------------------------------------------

def draw_split(subject_ids: Iterable[str], exclude_fraction_for_validation: float = 0.0,
               exclude_fraction_for_inference: float = 0.0, seed: int = 0) -> dict[str, str]:
    """``{subject_id: phase}``, the same for the same ids (in any order), fractions and seed.

    A non-zero fraction gets at least one subject; at least one subject is left for training.
    """
    validation = fraction(exclude_fraction_for_validation, "exclude_fraction_for_validation")
    inference = fraction(exclude_fraction_for_inference, "exclude_fraction_for_inference")
    if validation + inference >= 1.0:
        raise ConfigError(
            "Invalid values for arguments `exclude_fraction_for_validation` and "
            "`exclude_fraction_for_inference`. Expected a sum below 1 (some subjects must "
            f"train). Received {validation} + {inference} = {validation + inference}.")
    ids = sorted(set(subject_ids))
    counts = [max(1, round(f * len(ids))) if f > 0 else 0 for f in (validation, inference)]
    if len(ids) - sum(counts) < 1:
        raise DataError(
            f"Cannot split {len(ids)} subject(s) into {counts[0]} for validation, {counts[1]} "
            "for inference and at least 1 for training. Add subjects or lower "
            "`exclude_fraction_for_validation` / `exclude_fraction_for_inference`.")
    order = np.random.default_rng(seed).permutation(len(ids))
    phases = (["validation"] * counts[0] + ["inference"] * counts[1]
              + ["training"] * (len(ids) - sum(counts)))
    return {ids[index]: phase for index, phase in zip(order, phases)}


def read_split_file(path: str) -> dict[str, str]:
    """``{subject_id: phase}`` from a split file; DataError naming the line otherwise."""
    split: dict[str, str] = {}
    for number, row in _csv_rows(path, "The split file"):
        if len(row) != 2 or row[1] not in PHASES or row[0] in split:
            problem = ("a subject listed twice" if row[0] in split else
                       f"expected `subject_id,{'|'.join(PHASES)}`")
            raise DataError(f"The split file {path!r} line {number}: {problem}. Received "
                            f"{','.join(row)!r}. Fix the line or delete the file to draw a "
                            "new split.")
        split[row[0]] = row[1]
    return split


def write_split_file(path: str, split: dict[str, str]) -> None:
    atomic_write_text(path, "".join(f"{sid},{split[sid]}\n" for sid in sorted(split)))


def load_or_make_split(dataset_split_file: str, subject_ids: Iterable[str],
                       exclude_fraction_for_validation: float = 0.0,
                       exclude_fraction_for_inference: float = 0.0,
                       seed: int = 0) -> dict[str, str]:
    """The phase of each subject: read from ``dataset_split_file``, or drawn and written there.

    See the module docstring for subjects new since the file was written.
    """
    ids = sorted(set(subject_ids))
    if not os.path.exists(dataset_split_file):
        split = draw_split(ids, exclude_fraction_for_validation, exclude_fraction_for_inference,
                           seed)
        write_split_file(dataset_split_file, split)
        return split
    split = read_split_file(dataset_split_file)
    new = [sid for sid in ids if sid not in split]
    if new:
        raise DataError(
            f"The split file {dataset_split_file!r} has no phase for {len(new)} subject(s) "
            f"found in the data: {_listing(new)}. Add rows `subject_id,training|validation|"
            "inference` for them, or delete the file to draw a new split of all subjects (the "
            "old split is then lost).")
    return {sid: split[sid] for sid in ids}


def subjects_in_phase(subjects: Sequence[SubjectFiles], split: dict[str, str],
                      phase: str) -> list[SubjectFiles]:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}; got {phase!r}.")
    return [subject for subject in subjects if split.get(subject.subject_id) == phase]
