"""The bench's ``oracle-grid`` row: the counterfactual on each scan's own grid, only where the grids differ."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from harmkit.bench.ground_truth import GRID_ORACLE, add_grid_oracle_row
from harmkit.cache import Cache
from harmkit.data import Cohort, Scan
from harmkit.execution import TaskResult
from harmkit.methods import Method


def _image(path, spacing, size=(12, 12, 8)):
    x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size[::-1]), indexing="ij")[2]
    # a ramp in mm along x: linear interpolation onto any grid reproduces it exactly inside the volume
    image = sitk.GetImageFromArray(1.0 + 0.1 * x * spacing[0])
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return str(path)


def _context(tmp_path, scan_spacing, counterfactual_spacing):
    size = (12, 12, 8)
    cf_size = tuple(int(round(n * s / c)) for n, s, c in zip(size, scan_spacing, counterfactual_spacing))
    reference = Scan("r1", "A", _image(tmp_path / "r1.nii.gz", scan_spacing, size))
    source = Scan("s1", "B", _image(tmp_path / "s1.nii.gz", scan_spacing, size), masks={"lesion": "lesion.nii.gz"})
    counterfactual = Scan("s1@A", "A", _image(tmp_path / "s1_at_A.nii.gz", counterfactual_spacing, cf_size))
    gan = Method("gan", ("cyclegan",))
    return SimpleNamespace(
        cohort=Cohort([reference, source], tmp_path),
        counterfactuals=Cohort([counterfactual], tmp_path),
        counterfactual=lambda sid, ref: counterfactual if (sid, ref) == ("s1", "A") else None,
        references=["A"],
        methods=[Method("none", ()), gan, Method("oracle", (), control="oracle")],
        image_methods=[gan],
        cache=Cache(tmp_path / "cache"),
        harmonized={},
        map=lambda fn, items, label="": [TaskResult(value=fn(item)) for item in items],
    )


def test_no_grid_oracle_row_when_every_scan_shares_its_counterfactuals_grid(tmp_path):
    ctx = _context(tmp_path, (2.0, 2.0, 3.0), (2.0, 2.0, 3.0))
    add_grid_oracle_row(ctx)
    assert [m.label for m in ctx.methods] == ["none", "gan", "oracle"]
    assert ctx.harmonized == {}


def test_the_grid_oracle_puts_the_counterfactual_on_the_scans_grid_with_the_scans_masks(tmp_path):
    ctx = _context(tmp_path, (4.0, 4.0, 3.0), (2.0, 2.0, 3.0))
    add_grid_oracle_row(ctx)
    assert [m.label for m in ctx.methods] == ["none", "gan", "oracle", GRID_ORACLE]
    assert ctx.methods[-1].control == GRID_ORACLE and not ctx.methods[-1].stages
    scans = ctx.harmonized[(GRID_ORACLE, "A")]
    assert set(scans) == {"s1"}  # the reference's own scans stay as they are
    replaced = scans["s1"]
    assert replaced.masks == {"lesion": "lesion.nii.gz"} and replaced.site == "B"
    image = sitk.ReadImage(str(replaced.image))
    original = sitk.ReadImage(ctx.cohort.get("s1").image)
    assert image.GetSize() == original.GetSize() and image.GetSpacing() == original.GetSpacing()
    # the ramp, sampled at the scan's voxel centres (away from the border, where the 2 mm grid ends first)
    inner = sitk.GetArrayFromImage(image)[1:-1, 1:-1, 1:-2]
    expected = sitk.GetArrayFromImage(original)[1:-1, 1:-1, 1:-2]
    np.testing.assert_allclose(inner, expected, atol=1e-4)
    # a second run takes the resampled image from the cache
    again = _context(tmp_path, (4.0, 4.0, 3.0), (2.0, 2.0, 3.0))
    again.map = lambda *a, **k: (_ for _ in ()).throw(AssertionError("resampled again"))
    add_grid_oracle_row(again)
    assert str(again.harmonized[(GRID_ORACLE, "A")]["s1"].image) == str(replaced.image)
