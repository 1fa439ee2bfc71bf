"""The plugin-author toolkit: each shared rule, from its one home (harmkit.toolkit)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from rich.console import Console

import harmkit.toolkit as toolkit
from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError
from harmkit.manifest import write_cohort
from harmkit.toolkit import (
    GEOMETRY_TOLERANCE,
    feature_columns,
    geometry_difference,
    image_layout,
    progress,
    resolve_site_group,
    same_geometry,
)


def _image(spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), size=(4, 5, 6)) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _cohort() -> Cohort:
    """Sites CHUM and HMR pooled in group CHUM-HMR; site JGH its own group."""
    return Cohort(
        [
            Scan("p1", "CHUM", None, site_group="CHUM-HMR"),
            Scan("p2", "HMR", None, site_group="CHUM-HMR"),
            Scan("p3", "JGH", None),
        ]
    )


# -- geometry ----------------------------------------------------------------------


def test_same_geometry_accepts_spacing_within_the_tolerance():
    assert same_geometry(_image(), _image(spacing=(2.0 + 0.9 * GEOMETRY_TOLERANCE, 2.0, 3.0)))


def test_same_geometry_refuses_spacing_beyond_the_tolerance():
    assert not same_geometry(_image(), _image(spacing=(2.0 + 2 * GEOMETRY_TOLERANCE, 2.0, 3.0)))


def test_origin_may_differ_by_ten_times_the_tolerance():
    assert same_geometry(_image(), _image(origin=(9 * GEOMETRY_TOLERANCE, 0.0, 0.0)))
    assert not same_geometry(_image(), _image(origin=(12 * GEOMETRY_TOLERANCE, 0.0, 0.0)))


def test_geometry_difference_names_what_differs_for_images_and_headers():
    header = {
        "size": (4, 5, 6),
        "spacing": (2.0, 2.0, 3.0),
        "origin": (0.0, 0.0, 1.0),
        "direction": np.eye(3).ravel(),
    }
    assert geometry_difference(_image(), header) == "origin"
    assert geometry_difference(_image(size=(4, 5, 7)), _image()) == "size"
    assert geometry_difference(_image(), _image()) is None


def test_the_radiomics_plugin_uses_the_toolkit_geometry_rule():
    extractor = pytest.importorskip("harmkit_radiomics.extractor")
    assert extractor.same_geometry is same_geometry


# -- site groups -------------------------------------------------------------------


def test_a_site_group_name_resolves_to_itself():
    assert resolve_site_group(_cohort(), "CHUM-HMR") == "CHUM-HMR"


def test_a_site_name_resolves_to_its_group():
    assert resolve_site_group(_cohort(), "HMR") == "CHUM-HMR"
    assert resolve_site_group(_cohort(), "JGH") == "JGH"


def test_a_site_to_group_mapping_resolves_like_a_cohort():
    assert resolve_site_group({"CHUM": "CHUM-HMR", "HMR": "CHUM-HMR"}, "CHUM") == "CHUM-HMR"


def test_an_unknown_name_is_an_error_listing_the_site_groups():
    with pytest.raises(
        HarmkitError,
        match=r"--reference 'MGH' is not a site or site group.*CHUM-HMR, JGH",
    ):
        resolve_site_group(_cohort(), "MGH", what="--reference")


# -- feature tables ----------------------------------------------------------------


def test_feature_columns_leave_out_site_site_group_and_subject_id():
    table = pd.DataFrame(
        {
            "subject_id": ["a"],
            "site": ["A"],
            "site_group": ["A"],
            "glcm_Contrast": [1.0],
            "firstorder_Mean": [2.0],
        }
    )
    assert feature_columns(table) == ["glcm_Contrast", "firstorder_Mean"]


# -- image layout ------------------------------------------------------------------


def test_ids_that_differ_only_in_punctuation_get_different_folders(tmp_path):
    layout = image_layout(tmp_path, [Scan("P 1", "A", None), Scan("P_1", "A", None)])
    assert layout["P 1"].image != layout["P_1"].image
    assert layout["P_1"].image == tmp_path / "images" / "P_1" / "A_pet.nii.gz"


def test_ids_that_differ_only_in_case_get_different_folders(tmp_path):
    layout = image_layout(tmp_path, [Scan("ab", "A", None), Scan("AB", "A", None)])
    assert layout["ab"].folder.name.casefold() != layout["AB"].folder.name.casefold()


def test_write_cohort_writes_where_the_layout_says(tmp_path):
    mask = sitk.Image([4, 5, 6], sitk.sitkUInt8)
    mask.SetSpacing((2.0, 2.0, 3.0))
    scans = [Scan("P 1", "site A", _image(), {"lesion": mask})]
    write_cohort(scans, tmp_path)
    files = image_layout(tmp_path, scans)["P 1"]
    assert files.image.is_file() and files.mask("lesion").is_file()


# -- progress bars -----------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch):
    """Progress bars drawn on a fake terminal whose output the test can read."""
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setitem(toolkit._shared, "console", console)
    return console.file


def test_a_bar_over_items_yields_every_item_and_shows_the_count(terminal):
    assert list(progress(range(3), "reading", transient=False)) == [0, 1, 2]
    assert "reading" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_a_disabled_bar_prints_nothing(terminal):
    with progress(5, "training", enabled=False) as bar:
        bar.update(3, info="G 0.1")
    assert list(progress([1, 2], "reading", enabled=False)) == [1, 2]
    assert terminal.getvalue() == ""


def test_too_little_work_shows_no_bar(terminal):
    assert list(progress(range(3), "reading", min_total=8)) == [0, 1, 2]
    assert terminal.getvalue() == ""


def test_the_info_text_shows_after_the_times(terminal):
    with progress(10, "training", transient=False) as bar:
        bar.update(4, info="G 0.123")
    assert "G 0.123" in terminal.getvalue() and "4/10" in terminal.getvalue()


def test_a_nested_bar_joins_the_open_display(terminal):
    with progress(2, "outer") as outer:
        with progress(3, "inner") as inner:
            assert toolkit._shared["users"] == 2
            inner.advance(3)
        outer.advance(2)
    assert toolkit._shared["progress"] is None and toolkit._shared["users"] == 0
