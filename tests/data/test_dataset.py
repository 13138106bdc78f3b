"""Dataset discovery on real folders and CSV files, and reproducible split files."""

import os

import numpy as np
import pytest

from sfg_app.data.dataset import (SectionSource, draw_split, find_subjects,
                                  load_or_make_split, read_split_file, subjects_in_phase)
from sfg_app.errors import ConfigError, DataError
from sfg_app.io import write_image


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name, np.zeros((2, 2, 2), np.uint8), np.eye(4))


@pytest.fixture
def pelvis(tmp_path):
    """Three subjects with MR, CT and labels in one folder, plus files to be ignored."""
    folder = tmp_path / "pelvis"
    _touch_images(folder, [f"sub{i}_{kind}.nii.gz" for i in (1, 2, 3)
                           for kind in ("mr", "ct", "seg")])
    (folder / "sub1_mr.json").write_text("{}")         # a BIDS side car
    (folder / ".sub4_mr.nii.gz").write_text("hidden")  # e.g. a half-written temporary file
    return folder


def test_sections_are_matched_by_subject_id(pelvis):
    subjects = find_subjects([
        SectionSource("MR", path_to_search=[str(pelvis)], filename_contains=["_mr"]),
        SectionSource("CT", path_to_search=[str(pelvis)], filename_contains="_ct"),
        SectionSource("LABEL", path_to_search=[str(pelvis)], filename_contains=["_seg"])])
    assert [s.subject_id for s in subjects] == ["sub1", "sub2", "sub3"]
    assert subjects[1].paths == {name: os.path.join(pelvis, f"sub2_{kind}.nii.gz")
                                 for name, kind in (("MR", "mr"), ("CT", "ct"), ("LABEL", "seg"))}


def test_not_contains_and_removefromid(tmp_path):
    folder = tmp_path / "data"
    _touch_images(folder, ["T1_case-01_v2.nii.gz", "T1_case-02_v2.nii.gz", "T1_case-03_bad.nii.gz"])
    subjects = find_subjects([SectionSource(
        "MR", path_to_search=[str(folder)], filename_contains=["T1"],
        filename_not_contains=["bad"], filename_removefromid=r"^T1_|_v\d+$")])
    assert [s.subject_id for s in subjects] == ["case-01", "case-02"]


def test_several_folders_and_a_dicom_series_folder(tmp_path):
    _touch_images(tmp_path / "a", ["s1_ct.mha"])
    (tmp_path / "b" / "s2_ct").mkdir(parents=True)
    subjects = find_subjects([SectionSource(
        "CT", path_to_search=[str(tmp_path / "a"), str(tmp_path / "b")],
        filename_contains=["_ct"])])
    assert {s.subject_id: s.paths["CT"] for s in subjects} == {
        "s1": str(tmp_path / "a" / "s1_ct.mha"), "s2": str(tmp_path / "b" / "s2_ct")}


def test_subjects_missing_sections_are_listed_per_section(pelvis):
    os.remove(pelvis / "sub2_ct.nii.gz")
    os.remove(pelvis / "sub3_ct.nii.gz")
    os.remove(pelvis / "sub1_seg.nii.gz")
    sources = [SectionSource("MR", path_to_search=[str(pelvis)], filename_contains=["_mr"]),
               SectionSource("CT", path_to_search=[str(pelvis)], filename_contains=["_ct"]),
               SectionSource("LABEL", path_to_search=[str(pelvis)], filename_contains=["_seg"])]
    with pytest.raises(DataError, match=r"\[CT\] has no entry for 2 subject\(s\): sub2, sub3; "
                                        r"\[LABEL\] has no entry for 1 subject\(s\): sub1\..*"
                                        r"declare the section optional"):
        find_subjects(sources)


def test_optional_section_may_be_missing(pelvis):
    os.remove(pelvis / "sub1_seg.nii.gz")
    subjects = find_subjects([
        SectionSource("MR", path_to_search=[str(pelvis)], filename_contains=["_mr"]),
        SectionSource("LABEL", path_to_search=[str(pelvis)], filename_contains=["_seg"],
                      optional=True)])
    assert [sorted(s.paths) for s in subjects] == [["MR"], ["LABEL", "MR"], ["LABEL", "MR"]]


def test_empty_folder_names_the_section_folder_and_filters(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"\[MR\] no image found in `path_to_search` "
                                        r"\['.*empty'\] \(0 image files or folders there\) "
                                        r"with filename_contains=\['_mr'\] and "
                                        r"filename_not_contains=\['bad'\]"):
        find_subjects([SectionSource("MR", path_to_search=[str(tmp_path / "empty")],
                                     filename_contains=["_mr"], filename_not_contains=["bad"])])


def test_no_match_counts_what_was_there(pelvis):
    with pytest.raises(DataError, match=r"\[PET\] no image found .*\(9 image files or folders "
                                        r"there\) with filename_contains=\['_pet'\]"):
        find_subjects([SectionSource("PET", path_to_search=[str(pelvis)],
                                     filename_contains=["_pet"])])


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"\[MR\] `path_to_search` folder '.*nope' does not exist"):
        find_subjects([SectionSource("MR", path_to_search=[str(tmp_path / "nope")])])


def test_two_files_with_one_id(pelvis):
    with pytest.raises(DataError, match=r"\[ANY\] two files give the subject id 'sub1'.*"
                                        r"sub1_ct\.nii\.gz.*sub1_mr\.nii\.gz"):
        find_subjects([SectionSource("ANY", path_to_search=[str(pelvis)],
                                     filename_removefromid=r"_(mr|ct|seg)$")])


def test_invalid_regex_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[MR\] `filename_removefromid`.*regular expression"):
        SectionSource("MR", path_to_search=[str(tmp_path)], filename_removefromid="(unclosed")


def test_section_needs_a_source():
    with pytest.raises(ConfigError, match=r"\[MR\] needs `path_to_search`.*or `csv_file`"):
        SectionSource("MR")


def test_csv_file_with_relative_paths_and_a_header(tmp_path):
    _touch_images(tmp_path / "images", ["a.nii.gz", "b.nii.gz"])
    (tmp_path / "mr.csv").write_text("subject_id,path\ns1,images/a.nii.gz\n\ns2,"
                                     f"{tmp_path / 'images' / 'b.nii.gz'}\n")
    subjects = find_subjects([SectionSource("MR", csv_file=str(tmp_path / "mr.csv"))])
    assert [(s.subject_id, s.paths["MR"]) for s in subjects] == [
        ("s1", str(tmp_path / "images" / "a.nii.gz")),
        ("s2", str(tmp_path / "images" / "b.nii.gz"))]


def test_csv_file_naming_missing_files(tmp_path):
    (tmp_path / "mr.csv").write_text("s1,gone.nii.gz\ns2,also_gone.nii.gz\n")
    with pytest.raises(DataError, match=r"\[MR\] `csv_file` '.*mr\.csv' names 2 file\(s\) that "
                                        r"do not exist: s1: .*gone\.nii\.gz, s2: "):
        find_subjects([SectionSource("MR", csv_file=str(tmp_path / "mr.csv"))])


def test_csv_file_with_a_bad_line(tmp_path):
    (tmp_path / "mr.csv").write_text("s1,a.nii.gz,extra\n")
    with pytest.raises(DataError, match=r"mr\.csv' line 1: expected `subject_id,path`\. "
                                        r"Received 's1,a\.nii\.gz,extra'"):
        find_subjects([SectionSource("MR", csv_file=str(tmp_path / "mr.csv"))])


def test_value_column_gives_image_level_targets(pelvis, tmp_path):
    (tmp_path / "ages.csv").write_text("subject_id,sex,age\nsub1,F,61\nsub2,M,70.5\nsub3,F,58\n")
    subjects = find_subjects([
        SectionSource("MR", path_to_search=[str(pelvis)], filename_contains=["_mr"]),
        SectionSource("AGE", csv_file=str(tmp_path / "ages.csv"), value_column="age")])
    assert [s.values for s in subjects] == [{"AGE": 61.0}, {"AGE": 70.5}, {"AGE": 58.0}]
    assert all(list(s.paths) == ["MR"] for s in subjects)


def test_value_column_with_a_non_number(tmp_path):
    (tmp_path / "ages.csv").write_text("subject_id,age\nsub1,61\nsub2,unknown\n")
    with pytest.raises(DataError, match=r"ages\.csv' line 3: expected a subject id and a finite "
                                        r"number in column `age`\. Received subject_id='sub2', "
                                        r"age='unknown'"):
        find_subjects([SectionSource("AGE", csv_file=str(tmp_path / "ages.csv"),
                                     value_column="age")])


def test_value_column_missing_from_the_header(tmp_path):
    (tmp_path / "ages.csv").write_text("subject_id,years\nsub1,61\n")
    with pytest.raises(DataError, match=r"header row naming the columns `subject_id` and `age`"):
        find_subjects([SectionSource("AGE", csv_file=str(tmp_path / "ages.csv"),
                                     value_column="age")])


# Splits ----------------------------------------------------------------------------------

IDS = [f"s{i:02d}" for i in range(20)]


def test_split_is_reproducible_and_has_the_fractions():
    split = draw_split(IDS, 0.2, 0.1, seed=7)
    assert split == draw_split(list(reversed(IDS)), 0.2, 0.1, seed=7)
    assert split != draw_split(IDS, 0.2, 0.1, seed=8)
    phases = list(split.values())
    assert (phases.count("validation"), phases.count("inference"),
            phases.count("training")) == (4, 2, 14)


def test_a_small_non_zero_fraction_gets_one_subject():
    phases = list(draw_split(IDS[:5], 0.05, 0.0, seed=0).values())
    assert phases.count("validation") == 1 and phases.count("training") == 4


def test_split_file_is_written_once_and_reused(tmp_path):
    path = str(tmp_path / "run" / "split.csv")
    first = load_or_make_split(path, IDS, 0.2, 0.0, seed=1)
    lines = open(path).read().splitlines()
    assert lines[0] == f"s00,{first['s00']}" and len(lines) == 20
    assert load_or_make_split(path, IDS, 0.5, 0.3, seed=99) == first
    assert load_or_make_split(path, IDS[:10], 0.5, 0.3, seed=99) == \
        {sid: first[sid] for sid in IDS[:10]}


def test_subjects_new_since_the_split_file_are_an_error(tmp_path):
    path = str(tmp_path / "split.csv")
    load_or_make_split(path, IDS, 0.2)
    with pytest.raises(DataError, match=r"split\.csv' has no phase for 2 subject\(s\) found in "
                                        r"the data: new1, new2\. Add rows.*or delete the file"):
        load_or_make_split(path, IDS + ["new1", "new2"], 0.2)


def test_bad_split_file_line(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("s00,training\ns01,testing\n")
    with pytest.raises(DataError, match=r"split\.csv' line 2: expected `subject_id,training\|"
                                        r"validation\|inference`\. Received 's01,testing'"):
        read_split_file(str(path))


@pytest.mark.parametrize("validation, inference, match", [
    (1.0, 0.0, r"argument `exclude_fraction_for_validation`.*\[0, 1\).*=1\.0"),
    (0.0, -0.1, r"argument `exclude_fraction_for_inference`"),
    (0.6, 0.5, r"Expected a sum below 1")])
def test_fractions_are_checked(validation, inference, match):
    with pytest.raises(ConfigError, match=match):
        draw_split(IDS, validation, inference)


def test_too_few_subjects_to_split():
    with pytest.raises(DataError, match=r"Cannot split 2 subject\(s\) into 1 for validation, "
                                        r"1 for inference and at least 1 for training"):
        draw_split(["a", "b"], 0.1, 0.1)


def test_subjects_in_phase(pelvis):
    subjects = find_subjects([SectionSource("MR", path_to_search=[str(pelvis)],
                                            filename_contains=["_mr"])])
    split = {"sub1": "training", "sub2": "validation", "sub3": "training"}
    assert [s.subject_id for s in subjects_in_phase(subjects, split, "training")] == \
        ["sub1", "sub3"]


def test_subject_ids_keep_a_leading_dash_and_user_files_lose_only_whole_suffixes():
    from sfg_app.data.dataset import subject_id_from_name

    source = SectionSource("MR", path_to_search=["."], filename_contains=["_mr"])
    assert subject_id_from_name("-01_mr.nii.gz", source) == "-01"
    assert subject_id_from_name("x_mri.nii.gz", source) == "xi"  # discovery: NiftyNet's rule
    assert subject_id_from_name("x_mri.nii.gz", source, suffixes_only=True) == "x_mri"
    assert subject_id_from_name("case_7_mr.nii.gz", source, suffixes_only=True) == "case_7"
