"""What a config key is: its value type, default and doc (``Key``), and the value types.

The config schema declares its sections with these, and a task type declares its own
``[TASK]`` keys with them (``tasks/base.py``); this module sits below both, so that a task
module never imports the config system, which looks the task types up through the
registry to read their keys (an import loop the registry's strings would hide).

Config text is never run through ``ast.literal_eval``: ``'10'`` and ``'03'`` are both
integers, ``1/3`` is a number where numbers are expected, ``(64, 64, 32)`` a tuple. Each
type turns a value into its typed form and knows the phrase that describes what it
expects; that phrase appears in both error messages and the reference text. A value comes
either as text (INI files, YAML scalars, ``--set``) or as a Python object
(``settings_from_dict``); both routes give the same result.
"""

from __future__ import annotations

import difflib
import math
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Sequence


class Invalid(Exception):
    """A value does not fit its type; ``hint`` is an optional sentence on how to fix it."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


def closest(word: str, candidates: Sequence[str], cutoff: float = 0.6) -> str | None:
    """The candidate most similar to ``word`` (case-insensitive), if any is close enough."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[match[0]] if match else None


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    match = closest(word, candidates)
    return f"Did you mean {match!r}?" if match else ""


def split_items(text: str, brackets: bool) -> list[str]:
    """Comma-separated items; with ``brackets``, one pair of () or [] around them is dropped.

    A trailing comma is allowed, as in Python's ``(0,)``.
    """
    text = text.strip()
    if brackets and len(text) >= 2 and (text[0], text[-1]) in {("(", ")"), ("[", "]")}:
        text = text[1:-1].strip()
    if not text:
        return []
    # Lines of a multi-line INI value are items too, with or without a trailing comma.
    items = [item.strip() for item in re.sub(r",?\s*\n\s*", ",", text).split(",")]
    if items[-1] == "":
        items.pop()
    if "" in items:
        raise Invalid("An item is empty: remove the extra comma.")
    return items


class ValueType:
    """Base: text goes to ``parse``, other Python objects to ``from_object``.

    ``expected`` describes the accepted values in error messages; ``reference`` in the
    reference text, where it may say more.
    """

    expected = "a value"

    @property
    def reference(self) -> str:
        return self.expected

    def convert(self, value: Any, base_dir: pathlib.Path) -> Any:
        if isinstance(value, str):
            return self.parse(value.strip(), base_dir)
        return self.from_object(value, base_dir)

    def parse(self, text: str, base_dir: pathlib.Path) -> Any:
        raise NotImplementedError

    def from_object(self, value: Any, base_dir: pathlib.Path) -> Any:
        raise Invalid()

    def to_plain(self, value: Any) -> Any:
        """The YAML-ready form of a typed value."""
        return value


def _shown(number) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _bound_phrase(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None and not low_open and not high_open:
        return f" from {_shown(low)} to {_shown(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_shown(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_shown(high)}")
    return " " + " and ".join(parts) if parts else ""


class Bounded(ValueType):
    """A number between optional bounds; ``noun`` names the kind of number."""

    noun = ""

    def __init__(self, low=None, high=None, low_open: bool = False, high_open: bool = False):
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open
        self.expected = self.noun + _bound_phrase(low, high, low_open, high_open)

    def check(self, number):
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            raise Invalid()
        if self.high is not None and (number > self.high
                                      or (self.high_open and number == self.high)):
            raise Invalid()
        return number


class Int(Bounded):
    noun = "an integer"
    _pattern = re.compile(r"[+-]?[0-9]+")

    def parse(self, text, base_dir):
        # More digits than any size or count: refused before Python converts them (it
        # refuses above 4300 digits with its own error).
        if len(text) > 40 or not self._pattern.fullmatch(text):
            raise Invalid()
        return self.check(int(text))

    def from_object(self, value, base_dir):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid()
        return self.check(value)


class Float(Bounded):
    """A finite number; in text, a fraction such as ``1/3`` is accepted too."""

    noun = "a number"

    def parse(self, text, base_dir):
        numerator, slash, denominator = text.partition("/")
        try:
            number = float(numerator)
            if slash:
                number /= float(denominator)
        except (ValueError, ZeroDivisionError):
            raise Invalid() from None
        return self.from_object(number, base_dir)

    def from_object(self, value, base_dir):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid()
        try:
            number = float(value)
        except OverflowError:
            raise Invalid("It is too large.") from None
        if not math.isfinite(number):
            raise Invalid("Infinite and NaN values are not allowed.")
        return self.check(number)


class Bool(ValueType):
    expected = "true or false"
    _words = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}

    def parse(self, text, base_dir):
        try:
            return self._words[text.lower()]
        except KeyError:
            raise Invalid() from None

    def from_object(self, value, base_dir):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise Invalid()


class Str(ValueType):
    expected = "a string"

    def parse(self, text, base_dir):
        return text


class Regex(Str):
    expected = "a regular expression"

    def parse(self, text, base_dir):
        try:
            re.compile(text)
        except re.error as error:
            raise Invalid(f"It is not a valid regular expression: {error}.") from None
        return text


class Name(Str):
    """The name of a section or a task: letters, digits, ``_`` and ``-``."""

    expected = "a name of letters, digits, _ and -"
    pattern = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, expected: str | None = None):
        if expected:
            self.expected = expected

    def parse(self, text, base_dir):
        if not self.pattern.fullmatch(text):
            raise Invalid()
        return text


class Choice(ValueType):
    """One of fixed words, matched case-insensitively and stored in its declared spelling."""

    def __init__(self, *options: str):
        self.options = options
        self.expected = "one of " + ", ".join(options)

    def parse(self, text, base_dir):
        for option in self.options:
            if option.lower() == text.lower():
                return option
        raise Invalid(did_you_mean(text, self.options))


class Path(ValueType):
    """A path; ``~`` is expanded and a relative path is taken from ``base_dir``."""

    expected = "a path"

    def parse(self, text, base_dir):
        if "\x00" in text:
            raise Invalid("A path cannot hold a NUL character.")
        path = pathlib.Path(os.path.expanduser(text))
        return pathlib.Path(os.path.abspath(base_dir / path))

    def from_object(self, value, base_dir):
        if isinstance(value, os.PathLike):
            return self.parse(os.fspath(value), base_dir)
        raise Invalid()

    def to_plain(self, value):
        return str(value)


class Tuple(ValueType):
    """Comma-separated items of one type, stored as a tuple.

    ``length`` fixes the number of items; otherwise ``min_length`` and ``max_length``
    bound it. ``brackets`` lets the text be wrapped in () or [].
    """

    def __init__(self, item: ValueType, length: int | None = None, min_length: int = 0,
                 max_length: int | None = None, brackets: bool = True, unique: bool = False,
                 expected: str | None = None):
        self.item = item
        self.min_length = length if length is not None else min_length
        self.max_length = length if length is not None else max_length
        self.brackets = brackets
        self.unique = unique
        self.expected = expected or self._describe()

    def _describe(self) -> str:
        if self.min_length == self.max_length:
            count = f"{self.min_length}"
        elif self.max_length is None:
            count = f"{self.min_length} or more" if self.min_length else "any number of"
        else:
            count = f"{self.min_length} to {self.max_length}"
        return f"a tuple of {count} values, each {self.item.expected}"

    def parse(self, text, base_dir):
        return self._items(split_items(text, self.brackets), base_dir)

    def from_object(self, value, base_dir):
        if isinstance(value, (list, tuple)):
            return self._items(value, base_dir)
        return self._items([value], base_dir)

    def _items(self, items, base_dir) -> tuple:
        if len(items) < self.min_length or (self.max_length is not None
                                            and len(items) > self.max_length):
            raise Invalid(f"It has {len(items)} value{'s' if len(items) != 1 else ''}.")
        values = []
        for index, item in enumerate(items):
            try:
                values.append(self.item.convert(item, base_dir))
            except Invalid as error:
                raise Invalid(f"Item {index + 1} ({item!r}) is not {self.item.expected}. "
                              f"{error.hint}".strip()) from None
        if self.unique and len(set(values)) != len(values):
            raise Invalid("A value is repeated.")
        return self.check(tuple(values))

    def check(self, values: tuple) -> tuple:
        return values

    def to_plain(self, value):
        return [self.item.to_plain(item) for item in value]


def list_of(item: ValueType, what: str) -> Tuple:
    """A comma-separated list of at least one item, e.g. ``image = MR, CT``."""
    return Tuple(item, min_length=1, brackets=isinstance(item, Name), unique=True,
                     expected=f"a comma-separated list of {what}")


class Range(Tuple):
    """Two numbers ``(lo, hi)``; ``strict`` demands lo < hi, otherwise lo <= hi."""

    def __init__(self, item: ValueType, strict: bool = False):
        self.strict = strict
        super().__init__(item, length=2)
        self.expected = (f"a tuple of 2 values (lo, hi), each {item.expected}, "
                         f"with lo {'<' if strict else '<='} hi")

    def check(self, values):
        low, high = values
        if low > high or (self.strict and low == high):
            raise Invalid(f"lo must be {'less than' if self.strict else 'at most'} hi.")
        return values


class FlipAxes(Tuple):
    """Spatial axes 0 to 2; NiftyNet's ``-1`` means no axis."""

    def __init__(self):
        super().__init__(Int(-1, 2), min_length=0, max_length=3, unique=True,
                         expected="a tuple of distinct axes from 0 to 2, possibly empty "
                                  "(-1 also means none)")

    def check(self, values):
        if values == (-1,):
            return ()
        if -1 in values:
            raise Invalid("-1 (no axis) cannot be combined with axes.")
        return values


class Axcodes(Tuple):
    """One orientation letter per axis, one from each of the pairs R/L, A/P, S/I."""

    _pairs = ("RL", "AP", "SI")

    def __init__(self):
        super().__init__(Choice(*"RLAPSI"), length=3,
                         expected="a tuple of 3 letters, one of R/L, one of A/P and one of "
                                  "S/I, e.g. (R, A, S)")

    def check(self, values):
        pairs = sorted(next(i for i, pair in enumerate(self._pairs) if code in pair)
                       for code in values)
        if pairs != [0, 1, 2]:
            raise Invalid("Each of R/L, A/P and S/I must appear once.")
        return values


class Union(ValueType):
    """The first of several types that accepts the value."""

    def __init__(self, *members: ValueType, expected: str | None = None):
        self.members = members
        self.expected = expected or " or ".join(member.expected for member in members)

    def convert(self, value, base_dir):
        hints = []
        for member in self.members:
            try:
                return member.convert(value, base_dir)
            except Invalid as error:
                hints.append((member, error.hint))
        if isinstance(value, str) and not re.search(r"[,(\[]", value):
            # A single word: the hint of a word member ("Did you mean ...?"), not that a
            # tuple member found one item.
            hints = [(member, hint) for member, hint in hints if isinstance(member, Choice)]
        raise Invalid(next((hint for _, hint in hints if hint), ""))

    def to_plain(self, value):
        return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Key:
    """One key: ``applies_to`` names the section kinds that use it (None: every kind).

    A key that does not apply to a section is an error when set there and None in the
    settings (``config/validate.py`` names the kinds of each section).
    """

    name: str
    type: ValueType
    default: Any = None
    doc: str = ""
    required: bool = False
    applies_to: frozenset[str] | None = None


def key(name: str, type: ValueType, default: Any = None, doc: str = "", *,
        required: bool = False, applies_to: tuple[str, ...] | None = None) -> Key:
    return Key(name, type, default, doc, required,
               frozenset(applies_to) if applies_to is not None else None)
