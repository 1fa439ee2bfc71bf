"""The ``radiomics`` extractor plugin: the paper's 93 features, PET defaults, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("radiomics")

import harmkit as hk  # noqa: E402
from harmkit.errors import HarmkitError  # noqa: E402
from harmkit_radiomics import PAPER_FEATURE_COUNTS, RadiomicsExtractor  # noqa: E402


def make_volume(seed=0, shape=(24, 24, 24), spacing=(2.0, 2.0, 3.0), radius_mm=12.0, suv=6.0):
    """A noisy SUV image with a bright spherical lesion and its mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    dist = np.sqrt(
        ((z - centre[0]) * spacing[2]) ** 2 + ((y - centre[1]) * spacing[1]) ** 2 + ((x - centre[2]) * spacing[0]) ** 2
    )
    inside = dist <= radius_mm
    array = rng.gamma(9.0, 1.5 / 9.0, size=shape) + inside * rng.gamma(9.0, suv / 9.0, size=shape)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, 5.0, 100.0))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


@pytest.fixture(scope="module")
def volume():
    return make_volume()


@pytest.fixture(scope="module")
def default_features(volume):
    return RadiomicsExtractor().extract(*volume)


def test_plugin_is_registered_under_radiomics():
    assert isinstance(hk.get_extractor("radiomics"), RadiomicsExtractor)


def test_default_extracts_the_papers_93_features(default_features):
    assert len(default_features) == 93
    assert all(np.isfinite(v) for v in default_features.values())


def test_feature_classes_match_names_and_paper_counts(default_features):
    classes = RadiomicsExtractor().feature_classes()
    assert list(classes) == list(default_features)  # same names, same order
    counts = {c: list(classes.values()).count(c) for c in PAPER_FEATURE_COUNTS}
    assert counts == PAPER_FEATURE_COUNTS
    assert all(name.startswith(f"{cls}_") for name, cls in classes.items())
    assert "glcm_Contrast" in classes and "firstorder_Mean" in classes


def test_settings_record_the_pet_defaults_and_every_pyradiomics_setting():
    settings = RadiomicsExtractor().settings()
    s = settings["setting"]
    assert s["binWidth"] == 0.25
    assert s["resampledPixelSpacing"] == [3.0, 3.0, 3.0]
    assert s["interpolator"] == "sitkBSpline"
    assert s["voxelArrayShift"] == 0
    assert "padDistance" in s and "label" in s  # pyradiomics' own defaults are filled in
    assert settings["imageType"] == {"Original": {}}
    assert sorted(settings["featureClass"]) == sorted(PAPER_FEATURE_COUNTS)
    import json

    json.dumps(settings)  # goes into results and cache keys


def test_version_names_pyradiomics():
    from importlib.metadata import version

    assert f"pyradiomics {version('pyradiomics')}" in RadiomicsExtractor().version


def test_same_input_gives_identical_values(volume, default_features):
    again = RadiomicsExtractor().extract(*volume)
    assert again == default_features


def test_bin_width_changes_texture_but_not_mean(volume, default_features):
    coarse = RadiomicsExtractor(bin_width=1.0).extract(*volume)
    assert coarse["firstorder_Mean"] == pytest.approx(default_features["firstorder_Mean"])
    assert coarse["glcm_JointEntropy"] < default_features["glcm_JointEntropy"]


def test_resampling_is_applied(volume):
    image, mask = volume
    native = RadiomicsExtractor(resampled_spacing=None, classes={"shape": ["VoxelVolume"]}).extract(image, mask)
    resampled = RadiomicsExtractor(resampled_spacing=(4.0, 4.0, 4.0), classes={"shape": ["VoxelVolume"]}).extract(
        image, mask
    )
    assert native["shape_VoxelVolume"] == pytest.approx(int(sitk.GetArrayViewFromImage(mask).sum()) * 12.0)
    assert resampled["shape_VoxelVolume"] % 64.0 == 0  # whole 4 mm voxels
    assert resampled["shape_VoxelVolume"] == pytest.approx(native["shape_VoxelVolume"], rel=0.15)


def test_user_can_enable_other_classes_and_subsets(volume):
    extractor = RadiomicsExtractor(classes={"shape": None, "glcm": ["Contrast", "Idmn"]})
    values = extractor.extract(*volume)
    assert set(values) == set(extractor.feature_classes())
    assert "glcm_Contrast" in values and "shape_Sphericity" in values and "firstorder_Mean" not in values


def test_derived_image_types_are_prefixed(volume):
    extractor = RadiomicsExtractor(classes={"firstorder": ["Mean"]}, image_types={"Original": {}, "Square": {}})
    values = extractor.extract(*volume)
    assert set(values) == {"firstorder_Mean", "square_firstorder_Mean"}
    assert extractor.feature_classes() == {
        "firstorder_Mean": "firstorder",
        "square_firstorder_Mean": "firstorder",
    }


def test_pyradiomics_parameter_file(tmp_path, volume):
    params = tmp_path / "params.yaml"
    params.write_text(
        "setting:\n  binWidth: 0.5\n  resampledPixelSpacing: [2, 2, 2]\n"
        "imageType:\n  Original: {}\n"
        "featureClass:\n  firstorder: [Mean, Maximum]\n"
    )
    extractor = RadiomicsExtractor(params_file=params)
    assert set(extractor.extract(*volume)) == {"firstorder_Mean", "firstorder_Maximum"}
    settings = extractor.settings()
    assert settings["setting"]["binWidth"] == 0.5 and len(settings["params_file_sha256"]) == 64


def test_unknown_class_or_feature_is_a_user_error():
    with pytest.raises(HarmkitError, match="unknown feature class 'glcmx'"):
        RadiomicsExtractor(classes=["glcmx"]).feature_classes()
    with pytest.raises(HarmkitError, match="no feature"):
        RadiomicsExtractor(classes={"glcm": ["Contrastt"]}).feature_classes()


def test_nan_in_image_is_reported(volume):
    image, mask = volume
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = np.nan
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    with pytest.raises(HarmkitError, match="1 NaN"):
        RadiomicsExtractor().extract(bad, mask)


def test_mask_on_another_grid_is_reported(volume):
    image, mask = volume
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(HarmkitError, match="different grids"):
        RadiomicsExtractor().extract(image, shifted)


def test_empty_mask_is_reported(volume):
    image, mask = volume
    with pytest.raises(HarmkitError, match="mask is empty"):
        RadiomicsExtractor().extract(image, mask * 0)


def test_mask_smaller_than_one_resampled_voxel_is_reported(volume):
    image, _ = volume
    tiny = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    tiny[5, 5, 5:7] = 1  # 2 voxels of 12 mm3 < one 27 mm3 voxel
    mask = sitk.GetImageFromArray(tiny)
    mask.CopyInformation(image)
    with pytest.raises(HarmkitError, match="smaller than one resampled voxel"):
        RadiomicsExtractor().extract(image, mask)


def test_mask_empty_after_resampling_is_reported(volume):
    image, _ = volume
    thin = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    thin[5, 4:8, 4:8] = 1  # 16 voxels (192 mm3) in one 3 mm slice: more than one 125 mm3 voxel
    mask = sitk.GetImageFromArray(thin)
    mask.CopyInformation(image)
    with pytest.raises(HarmkitError, match="after resampling to"):  # but a single 5 mm voxel remains
        RadiomicsExtractor(resampled_spacing=(5.0, 5.0, 5.0)).extract(image, mask)


def test_extractor_pickles_for_worker_processes(volume, default_features):
    extractor = RadiomicsExtractor()
    extractor.extract(*volume)  # builds the pyradiomics engine
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone.extract(*volume) == default_features


def test_pyradiomics_prints_nothing(volume, capfd):
    RadiomicsExtractor(classes=["glcm"]).extract(*volume)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
