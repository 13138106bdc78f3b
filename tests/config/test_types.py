"""The small parser of each value type (no literal_eval: '10' and '03' are both ints)."""

import pathlib

import pytest

from sfg_app.keys import (
    Axcodes, Bool, Choice, FlipAxes, Float, Int, Invalid, Name, Path, Range, Tuple, Union,
    list_of)

HERE = pathlib.Path("/base")


def convert(value_type, value):
    return value_type.convert(value, HERE)


@pytest.mark.parametrize("text, value", [("10", 10), ("03", 3), ("-0", 0), (" +7 ", 7)])
def test_int_text(text, value):
    assert convert(Int(), text) == value


@pytest.mark.parametrize("value", ["1.0", "1e3", "0x10", "ten", "", "1_0", True, 2.0])
def test_int_rejects(value):
    with pytest.raises(Invalid):
        convert(Int(), value)


@pytest.mark.parametrize("text, value", [("0.5", 0.5), ("1e-3", 1e-3), ("1/3", 1 / 3),
                                         ("-2 / 4", -0.5), ("3", 3.0)])
def test_float_text(text, value):
    assert convert(Float(), text) == value


@pytest.mark.parametrize("value", ["1/0", "inf", "-nan", "1e400", "1/2/3", "a/b", False,
                                   10 ** 400])
def test_float_rejects(value):
    with pytest.raises(Invalid):
        convert(Float(), value)


def test_bounds_and_their_phrases():
    assert Float(0, low_open=True).expected == "a number > 0"
    assert Float(0, 1, high_open=True).expected == "a number >= 0 and < 1"
    assert Int(0, 5).expected == "an integer from 0 to 5"
    with pytest.raises(Invalid):
        convert(Float(0, 1, high_open=True), "1")
    assert convert(Float(0, 1, high_open=True), "0") == 0.0


@pytest.mark.parametrize("text, value", [("true", True), ("Yes", True), ("on", True),
                                         ("1", True), ("FALSE", False), ("no", False),
                                         ("off", False), ("0", False)])
def test_bool_words(text, value):
    assert convert(Bool(), text) is value


def test_choice_is_case_insensitive_and_suggests():
    assert convert(Choice("map", "sample"), "MAP") == "map"
    with pytest.raises(Invalid, match="Did you mean 'sample'"):
        convert(Choice("map", "sample"), "sampel")


@pytest.mark.parametrize("text, value", [("(64, 64, 32)", (64, 64, 32)),
                                         ("64, 64, 32", (64, 64, 32)),
                                         ("[64,64,32]", (64, 64, 32)),
                                         ("(64, 64, 32,)", (64, 64, 32))])
def test_tuple_forms(text, value):
    assert convert(Tuple(Int(1), 3), text) == value


def test_tuple_of_objects_and_errors():
    assert convert(Tuple(Float(), 2), [1, "1/2"]) == (1.0, 0.5)
    with pytest.raises(Invalid, match="It has 2 values"):
        convert(Tuple(Int(), 3), "(1, 2)")
    with pytest.raises(Invalid, match="An item is empty"):
        convert(Tuple(Int(), 3), "(1, , 2)")


def test_flip_axes():
    assert convert(FlipAxes(), "(0,)") == (0,)
    assert convert(FlipAxes(), "()") == ()
    assert convert(FlipAxes(), "-1") == ()
    with pytest.raises(Invalid, match="cannot be combined"):
        convert(FlipAxes(), "(-1, 0)")
    with pytest.raises(Invalid, match="repeated"):
        convert(FlipAxes(), "(1, 1)")


def test_ranges():
    assert convert(Range(Float()), "(-10, 10)") == (-10.0, 10.0)
    assert convert(Range(Float()), "(5, 5)") == (5.0, 5.0)
    with pytest.raises(Invalid, match="lo must be less than hi"):
        convert(Range(Float(), strict=True), "(5, 5)")


def test_axcodes():
    assert convert(Axcodes(), "(l, p, s)") == ("L", "P", "S")
    assert convert(Axcodes(), "S, R, A") == ("S", "R", "A")
    with pytest.raises(Invalid, match="must appear once"):
        convert(Axcodes(), "(R, R, S)")


def test_lists_of_names_and_paths():
    assert convert(list_of(Name(), "names"), "(organs, synth_ct)") == ("organs", "synth_ct")
    assert convert(list_of(Name(), "names"), "MR") == ("MR",)
    with pytest.raises(Invalid):
        convert(list_of(Name(), "names"), "my images")
    assert convert(list_of(Path(), "folders"), "a, /b") == (HERE / "a", pathlib.Path("/b"))


def test_path_is_absolute_and_normalised():
    assert convert(Path(), "x/../y") == HERE / "y"
    assert convert(Path(), pathlib.Path("/abs")) == pathlib.Path("/abs")
    assert Path().to_plain(HERE / "y") == "/base/y"


def test_union_takes_the_first_member_that_fits():
    prior = Union(Choice("uniform"), Tuple(Float(0), min_length=1))
    assert convert(prior, "uniform") == "uniform"
    assert convert(prior, "(0.5, 0.5)") == (0.5, 0.5)
    assert prior.to_plain((0.5, 0.5)) == [0.5, 0.5]
    with pytest.raises(Invalid, match="Did you mean 'uniform'"):
        convert(prior, "unifrom")
