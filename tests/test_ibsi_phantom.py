"""pyradiomics (through the ``radiomics`` extractor) reproduces the IBSI 1 digital phantom.

Reference values: IBSI 1 consensus values (Zwanenburg et al., Radiology 2020), as
tabulated in tests/data/ibsi1-digital-phantom/ (see its README for source and licence).
IBSI prescribes no image processing for the digital phantom: no resampling and
grey levels equal to the phantom's integer intensities. With pyradiomics that is
``resampled_spacing=None`` and a fixed bin width of 1 (bin edges start at the
minimum, 1, so intensity k falls in bin k).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import SimpleITK as sitk

pytest.importorskip("radiomics")

from harmkit_radiomics import RadiomicsExtractor  # noqa: E402
from harmkit_radiomics.ibsi import DEVIATIONS, IBSI_TAGS, NO_REFERENCE, to_ibsi  # noqa: E402

DATA = Path(__file__).parent / "data" / "ibsi1-digital-phantom"
PHANTOM_VOXELS = 74  # voxels inside the phantom's mask (README)
ALL_CLASSES = ["firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape"]


def _reference() -> dict[str, tuple[float, float]]:
    values = {}
    with open(DATA / "ibsi_1_dig_phantom.csv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            if row["reference value"]:
                values[row["tag"]] = (
                    float(row["reference value"]),
                    float(row["tolerance"] or 0),
                )
    return values


def _allowed_difference(reference: float, tolerance: float) -> float:
    """IBSI's tolerance, or, where it is 0, half a unit in the third significant digit
    (the reference values are given to three significant digits)."""
    if reference == 0:
        return max(tolerance, 1e-6)
    rounding = 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)
    return max(tolerance, rounding) * 1.0001


def test_phantom_mask_has_the_documented_voxel_count():
    mask = sitk.ReadImage(str(DATA / "mask" / "mask.nii.gz"))
    assert int(sitk.GetArrayViewFromImage(mask).sum()) == PHANTOM_VOXELS


@pytest.fixture(scope="module")
def phantom_features() -> dict[str, float]:
    image = sitk.ReadImage(str(DATA / "image" / "phantom.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(DATA / "mask" / "mask.nii.gz"))
    extractor = RadiomicsExtractor(bin_width=1.0, resampled_spacing=None, classes=ALL_CLASSES)
    return extractor.extract(image, mask)


def test_every_computed_feature_is_mapped_or_documented_without_reference(
    phantom_features,
):
    unaccounted = sorted(set(phantom_features) - set(IBSI_TAGS) - set(NO_REFERENCE))
    assert unaccounted == []


def test_every_mapped_tag_has_a_reference_value():
    reference = _reference()
    assert sorted(tag for tag in IBSI_TAGS.values() if tag not in reference) == []


@pytest.mark.parametrize("feature", sorted(set(IBSI_TAGS) - set(DEVIATIONS)))
def test_feature_matches_ibsi_reference(phantom_features, feature):
    reference, tolerance = _reference()[IBSI_TAGS[feature]]
    value = phantom_features[feature]
    assert abs(value - reference) <= _allowed_difference(reference, tolerance), (
        f"{feature}={value:.6g}, IBSI {IBSI_TAGS[feature]}={reference}"
    )


@pytest.mark.parametrize("feature", sorted(DEVIATIONS))
def test_documented_deviation_matches_after_conversion(phantom_features, feature):
    reference, tolerance = _reference()[IBSI_TAGS[feature]]
    raw = phantom_features[feature]
    converted = to_ibsi(feature, raw, voxels=PHANTOM_VOXELS)
    assert abs(converted - reference) < abs(raw - reference)  # the conversion explains the difference
    assert abs(converted - reference) <= _allowed_difference(reference, tolerance)


def test_the_paper_classes_are_all_covered_by_the_comparison():
    paper_features = RadiomicsExtractor().feature_classes()
    covered = [f for f in paper_features if f in IBSI_TAGS]
    assert len(paper_features) == 93
    assert len(covered) == 91  # all but TotalEnergy and MCC
    assert sorted(set(paper_features) - set(covered)) == [
        "firstorder_TotalEnergy",
        "glcm_MCC",
    ]
