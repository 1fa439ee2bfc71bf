"""Bad inputs, as a hostile but realistic new user gives them: one clear error each, nothing lost, nothing silent.

Every case runs a command on a small cohort built from the real IBSI STS scans (tests/data/ibsi1-pet) and
asserts the message, the exit code, that no traceback is shown, and that the inputs are byte-for-byte
unchanged afterwards. docs/bad-inputs.md lists the matrix (case -> behaviour).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("radiomics")

from harmkit.cli import main  # noqa: E402
from harmkit.errors import HarmkitError  # noqa: E402

DATA = Path(__file__).parent / "data" / "ibsi1-pet"
SCANS = [
    "STS_025",
    "STS_032",
    "STS_008",
    "STS_019",
    "STS_002",
    "STS_042",
]  # two per protocol (site)
FAST = "setting:\n  binWidth: 0.25\n  resampledPixelSpacing: [3, 3, 3]\nfeatureClass:\n  firstorder: [Mean, Maximum]\n"


# -- helpers -------------------------------------------------------------------------------------------------------


def make_cohort(root: Path) -> Path:
    """Copy the six real scans, their manifest and an unrelated notes.txt into ``root``; return the manifest."""
    root.mkdir(parents=True)
    for scan in SCANS:
        shutil.copytree(DATA / scan, root / scan)
    shutil.copy(DATA / "manifest.csv", root / "manifest.csv")
    (root / "notes.txt").write_text("my own notes\n")
    return root / "manifest.csv"


def hashes(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folders`` (to prove that inputs are unchanged)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()
    }


def cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``harmkit ARGS`` in this process; return (exit code, stdout + stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def refused(capsys, folder: Path, *args: str, code: int = 2) -> str:
    """Run a command that must fail: exit ``code``, no traceback, every file under ``folder`` unchanged."""
    before = hashes(folder)
    status, output = cli(capsys, *args)
    assert status == code, output
    assert "Traceback" not in output
    assert hashes(folder) == before
    return " ".join(output.split())  # rich wraps long lines


def edit_rows(manifest: Path, edit) -> None:
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        edit(row)
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def rewrite_image(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    array = change(sitk.GetArrayFromImage(image))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


@pytest.fixture
def cohort(tmp_path) -> Path:
    return make_cohort(tmp_path / "cohort")


@pytest.fixture
def fast(tmp_path) -> Path:
    params = tmp_path / "fast.yaml"
    params.write_text(FAST)
    return params


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A histogram-matching model trained on the real scans (reference: the 3.906 mm protocol; no mask_body)."""
    work = tmp_path_factory.mktemp("model")
    manifest = make_cohort(work / "train")
    out = work / "histmatch"
    assert main_ok(
        [
            "train",
            "--method",
            "histmatch",
            "--cohort",
            manifest,
            "--reference",
            "3.906mm",
            "--out",
            out,
        ]
    )
    return out


def main_ok(args) -> bool:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code == 0
    return True


# -- 1. no command deletes what it did not write ---------------------------------------------------------------------


def test_harmonize_overwrite_refuses_the_folder_holding_its_inputs(capsys, cohort, model):
    message = refused(
        capsys,
        cohort.parent,
        "harmonize",
        "--model",
        model,
        "--cohort",
        cohort,
        "--out",
        cohort.parent,
        "--overwrite",
    )
    assert "holds input(s) of this run" in message and "Choose a new output folder" in message


def test_harmonize_overwrite_refuses_a_folder_harmkit_did_not_write(capsys, cohort, model, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    message = refused(
        capsys,
        tmp_path,
        "harmonize",
        "--model",
        model,
        "--cohort",
        cohort,
        "--out",
        mine,
        "--overwrite",
    )
    assert "was not written by harmkit harmonize, so --overwrite will not replace it" in message


def test_harmonize_overwrite_replaces_its_own_output_and_marks_it(capsys, cohort, model, tmp_path):
    out = tmp_path / "harmonized"
    before = hashes(cohort.parent)
    for _ in range(2):
        status, output = cli(
            capsys,
            "harmonize",
            "--model",
            model,
            "--cohort",
            cohort,
            "--out",
            out,
            "--overwrite",
        )
        assert status == 0, output
    assert json.loads((out / ".harmkit-output").read_text())["written_by"] == "harmkit harmonize"
    assert hashes(cohort.parent) == before


def test_train_refuses_an_out_folder_holding_the_cohort(capsys, cohort):
    message = refused(
        capsys,
        cohort.parent,
        "train",
        "--method",
        "histmatch",
        "--cohort",
        cohort,
        "--reference",
        "3.906mm",
        "--out",
        cohort.parent,
        "-p",
        "mask=lesion",
    )
    assert "holds input(s) of this run" in message


def test_saving_a_model_never_replaces_a_folder_that_is_not_a_model(tmp_path, model):
    from harmkit.plugins import load_model

    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "draft.tex").write_text("x")
    with pytest.raises(HarmkitError, match="is not a saved harmkit model"):
        load_model(model).save(folder)
    assert (folder / "draft.tex").read_text() == "x"


def test_simulate_force_refuses_a_folder_it_did_not_write(capsys, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    message = refused(
        capsys,
        tmp_path,
        "simulate",
        "--out",
        folder,
        "--force",
        "--subjects-per-site",
        "1",
    )
    assert "was not written by harmkit simulate, so --force will not replace it" in message


def test_bench_refuses_an_out_folder_whose_report_files_it_did_not_write(capsys, cohort, tmp_path):
    out = tmp_path / "work"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "measurements.csv").write_text("a,b\n1,2\n")
    message = refused(
        capsys,
        tmp_path,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        out,
        "--quiet",
    )
    assert "holds tables, which a bench run would replace" in message


# -- 2. outputs never land on inputs or on each other ----------------------------------------------------------------


def test_extract_out_named_json_keeps_table_and_settings_apart(capsys, cohort, fast, tmp_path):
    out = tmp_path / "feat.json"
    before = hashes(cohort.parent)
    status, output = cli(
        capsys,
        "extract",
        "--cohort",
        cohort,
        "--out",
        out,
        "--params",
        fast,
        "--jobs",
        "1",
        "--no-cache",
    )
    assert status == 0, output
    from harmkit.extraction import read_features

    table = read_features(out)
    assert table.shape == (6, 4) and table.attrs["extractor"] == "radiomics"
    assert json.loads((tmp_path / "feat.settings.json").read_text())["voi"] == "lesion"
    assert hashes(cohort.parent) == before


def test_extract_out_equal_to_the_manifest_is_refused(capsys, cohort, fast):
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        cohort,
        "--params",
        fast,
        "--no-cache",
    )
    assert "this is an input of the run" in message and "Choose another output path" in message


def test_extract_never_overwrites_a_file_it_did_not_write(capsys, cohort, fast):
    notes = cohort.parent / "notes.txt"
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        notes,
        "--params",
        fast,
        "--no-cache",
    )
    assert "exists and is not a feature table written by harmkit extract" in message


def test_harmonized_files_are_distinct_for_ids_that_differ_only_in_punctuation(capsys, cohort, model, tmp_path):
    edit_rows(
        cohort,
        lambda row: row.update(
            subject_id={"STS_025": "P 1", "STS_032": "P_1"}.get(row["subject_id"], row["subject_id"])
        ),
    )
    out = tmp_path / "harmonized"
    status, output = cli(capsys, "harmonize", "--model", model, "--cohort", cohort, "--out", out)
    assert status == 0, output
    with (out / "manifest.csv").open(newline="") as handle:
        rows = {row["subject_id"]: row["image"] for row in csv.DictReader(handle)}
    assert rows["P 1"] != rows["P_1"]
    assert len(set(rows.values())) == 6
    # each row points to the harmonized image of its own scan (same grid as its input)
    first = sitk.ReadImage(str(out / rows["P 1"]))
    assert first.GetSize() == sitk.ReadImage(str(cohort.parent / "STS_025" / "PET_image.nii.gz")).GetSize()


# -- 3. no silent wrong results --------------------------------------------------------------------------------------


def test_truncated_nifti_fails_validate_and_extract(capsys, cohort, fast):
    image = cohort.parent / "STS_025" / "PET_image.nii.gz"
    image.write_bytes(image.read_bytes()[:1000])
    message = refused(capsys, cohort.parent, "validate", cohort, code=1)
    assert "row 1 (subject STS_025, site 3.906mm)" in message and "is damaged" in message and "truncated" in message
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        cohort.parent / "f.csv",
        "--params",
        fast,
        "--no-cache",
    )
    assert "nothing was extracted" in message and "subject 'STS_025'" in message and "is damaged" in message


def test_negative_suv_is_refused(capsys, cohort):
    rewrite_image(cohort.parent / "STS_032" / "PET_image.nii.gz", lambda a: a - 5.0)
    message = refused(capsys, cohort.parent, "validate", cohort, code=1)
    assert "row 2 (subject STS_032" in message and "SUV cannot be negative" in message and "Hounsfield" in message


def test_swapped_image_and_mask_columns_are_refused(capsys, cohort):
    edit_rows(
        cohort,
        lambda row: row.update(image=row["mask_lesion"], mask_lesion=row["image"]),
    )
    message = refused(capsys, cohort.parent, "validate", cohort, code=1)
    assert "it looks like a mask, not a PET image" in message and "it looks like an image, not a label mask" in message
    assert "12 error(s)" in message and "not swapped" in message


def test_nan_voxels_are_refused_by_extract_unless_read_as_zero(capsys, cohort, fast, tmp_path):
    image = cohort.parent / "STS_019" / "PET_image.nii.gz"

    def nan_corner(array):
        array[0, 0, 0] = np.nan
        return array

    rewrite_image(image, nan_corner)
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        tmp_path / "f.csv",
        "--params",
        fast,
        "--no-cache",
    )
    assert "subject 'STS_019'" in message and "1 non-finite voxel(s) (1 NaN, 0 infinite)" in message
    assert "--nan-to-zero" in message and not (tmp_path / "f.csv").exists()
    before = hashes(cohort.parent)
    status, output = cli(
        capsys,
        "extract",
        "--cohort",
        cohort,
        "--out",
        tmp_path / "f.csv",
        "--params",
        fast,
        "--no-cache",
        "--jobs",
        "1",
        "--nan-to-zero",
    )
    assert status == 0 and "read as 0 (--nan-to-zero)" in " ".join(output.split())
    assert hashes(cohort.parent) == before


def test_nan_voxels_are_refused_by_bench_before_any_work(capsys, cohort, tmp_path):
    rewrite_image(
        cohort.parent / "STS_019" / "PET_image.nii.gz",
        lambda a: np.where(a > 5, np.inf, a),
    )
    message = refused(
        capsys,
        cohort.parent,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "b",
        "--quiet",
        "--jobs",
        "1",
    )
    assert "row 4 (subject STS_019, site 4.688mm)" in message and "infinite" in message
    # nothing was extracted: the run's cache (this test's own $HARMKIT_CACHE) holds no feature
    assert not list(Path(os.environ["HARMKIT_CACHE"]).glob("features/*"))


@pytest.mark.slow
def test_bench_refits_an_image_stage_after_a_mask_was_edited(capsys, cohort, tmp_path):
    """Models are cached by the content of everything a harmonizer reads: an edited mask is never served stale."""
    from scipy.ndimage import binary_dilation

    cache = tmp_path / "cache"
    bench = ["bench", "--cohort", cohort, "--methods", "histmatch", "--folds", "2", "--quiet", "--jobs", "1"]
    status, output = cli(capsys, *bench, "--out", tmp_path / "a", "--cache-dir", cache)
    assert status == 0, output
    models = {p.name for p in (cache / "models").iterdir()}  # one per reference site
    assert len(models) == 3
    # histmatch's healthy tissue is the body without the lesion: a redrawn lesion mask changes what it fits on
    rewrite_image(
        cohort.parent / "STS_019" / "PET_mask.nii.gz",
        lambda m: binary_dilation(m > 0, iterations=2).astype(m.dtype),
    )
    status, output = cli(capsys, *bench, "--out", tmp_path / "b", "--cache-dir", cache)
    assert status == 0, output
    refitted = {p.name for p in (cache / "models").iterdir()} - models
    assert len(refitted) == 3, "a cached model was reused although a mask it reads had changed"
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["cache"]["misses"] > 0


# -- 4. every failure is one HarmkitError line ----------------------------------------------------------------------


def test_bench_with_a_missing_image_names_it_without_traceback(capsys, cohort, tmp_path):
    (cohort.parent / "STS_008" / "PET_image.nii.gz").unlink()
    message = refused(
        capsys,
        cohort.parent,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "b",
        "--quiet",
        "--jobs",
        "1",
    )
    assert "row 3 (subject STS_008, site 4.688mm): image file not found" in message


@pytest.mark.slow
def test_bench_runs_on_a_cohort_with_a_dicom_folder_image(capsys, cohort, tmp_path):
    from test_dicom import expected_factor, write_series

    suv_path = cohort.parent / "STS_002" / "PET_image.nii.gz"
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(suv_path))).astype(float)
    write_series(
        cohort.parent / "STS_002" / "dicom",
        np.maximum(suv, 0.01) / expected_factor(3600.0),
    )
    mask = sitk.ReadImage(str(cohort.parent / "STS_002" / "PET_mask.nii.gz"))
    mask.SetSpacing((2.0, 2.5, 3.0))
    mask.SetOrigin((-10.0, 20.0, 100.0))
    sitk.WriteImage(mask, str(cohort.parent / "STS_002" / "dicom_mask.nii.gz"))
    edit_rows(
        cohort,
        lambda row: (
            row.update(image="STS_002/dicom", mask_lesion="STS_002/dicom_mask.nii.gz")
            if row["subject_id"] == "STS_002"
            else None
        ),
    )
    before = hashes(cohort.parent)
    status, output = cli(
        capsys,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--folds",
        "2",
        "--out",
        tmp_path / "b",
        "--quiet",
        "--jobs",
        "1",
    )
    assert status == 0, output
    assert "Traceback" not in output and (tmp_path / "b" / "results.json").is_file()
    assert hashes(cohort.parent) == before


@pytest.mark.parametrize(
    "damage, words",
    [
        (
            lambda m: (m / "harmkit-model.json").write_text("[1, 2]"),
            "corrupt model file (not a JSON object)",
        ),
        (
            lambda m: (m / "harmkit-model.json").write_text("{not json"),
            "corrupt model file",
        ),
        (
            lambda m: (m / "arrays.npz").write_bytes(b"PK\x03\x04 truncated"),
            "arrays.npz: corrupt array file",
        ),
        (lambda m: _add_param(m, "foo", 1), "has no parameter 'foo'"),
        (lambda m: _add_param(m, "mode", 3), "expected text for plugin 'histmatch'"),
    ],
    ids=[
        "json-list",
        "not-json",
        "truncated-arrays",
        "unknown-parameter",
        "wrong-type",
    ],
)
def test_damaged_model_is_one_error_naming_the_file(capsys, cohort, model, tmp_path, damage, words):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    damage(broken)
    message = refused(
        capsys,
        tmp_path,
        "harmonize",
        "--model",
        broken,
        "--cohort",
        cohort,
        "--out",
        tmp_path / "h",
    )
    assert str(broken) in message and words in message
    assert not (tmp_path / "h").exists()


def _add_param(model: Path, name: str, value) -> None:
    document = json.loads((model / "harmkit-model.json").read_text())
    document["params"][name] = value
    (model / "harmkit-model.json").write_text(json.dumps(document))


def test_full_disk_while_harmonizing_is_one_error_and_leaves_nothing(capsys, cohort, model, tmp_path, monkeypatch):
    import harmkit.imageio as imageio

    real_write = imageio.sitk.WriteImage

    def write_half(image, path, compress=True):  # what SimpleITK does on a full disk: a short file, no error
        real_write(image, path, compress)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(imageio.sitk, "WriteImage", write_half)
    message = refused(
        capsys,
        tmp_path,
        "harmonize",
        "--model",
        model,
        "--cohort",
        cohort,
        "--out",
        tmp_path / "h",
    )
    assert "the file came out incomplete" in message and "is the disk full?" in message
    assert not (tmp_path / "h").exists() and not list(tmp_path.glob(".h.*"))


def test_read_only_output_is_one_error(capsys, cohort, fast, tmp_path, monkeypatch):
    import harmkit.atomic as atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        tmp_path / "out" / "f.csv",
        "--params",
        fast,
        "--no-cache",
        "--jobs",
        "1",
    )
    assert (
        "cannot write" in message
        and "Read-only file system" in message
        and "choose an output folder you can write to" in message
    )


def test_output_under_a_file_is_one_error(capsys, cohort, tmp_path):
    (tmp_path / "afile").write_text("x")
    message = refused(
        capsys,
        tmp_path,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "afile" / "b",
        "--quiet",
    )
    assert message.startswith("Error: cannot use") and "Not a directory" in message


def test_damaged_cache_entry_is_discarded_and_recomputed_with_a_warning(capsys, cohort, fast, tmp_path):
    cache = tmp_path / "cache"
    args = [
        "extract",
        "--cohort",
        cohort,
        "--params",
        fast,
        "--jobs",
        "1",
        "--cache",
        cache,
    ]
    assert cli(capsys, *args, "--out", tmp_path / "a.csv")[0] == 0
    for entry in cache.rglob("entry.json"):
        entry.write_text('{"type": "json", "value": {"key": 5}, "format": "harmkit-cache/1"}')
    before = hashes(cohort.parent)
    status, output = cli(capsys, *args, "--out", tmp_path / "b.csv")
    assert status == 0 and "Traceback" not in output
    assert "Warning: cache entry" in output and "is damaged" in output and "discarded and recomputed" in output
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert hashes(cohort.parent) == before


def test_unwritable_cache_falls_back_to_no_cache_with_a_warning(capsys, cohort, fast, tmp_path):
    (tmp_path / "afile").write_text("x")
    status, output = cli(
        capsys,
        "extract",
        "--cohort",
        cohort,
        "--params",
        fast,
        "--jobs",
        "1",
        "--cache",
        tmp_path / "afile" / "cache",
        "--out",
        tmp_path / "f.csv",
    )
    assert status == 0, output
    assert "Warning: cannot write to the cache" in " ".join(output.split()) and "without the cache" in output
    from harmkit.extraction import read_features

    assert len(read_features(tmp_path / "f.csv")) == 6


# -- 5. no hangs: grey levels are guarded -----------------------------------------------------------------------------


def test_suv_times_100_as_int16_is_refused_with_a_units_hint_and_a_bin_width(capsys, cohort, tmp_path):
    image = cohort.parent / "STS_002" / "PET_image.nii.gz"
    rewrite_image(image, lambda a: np.round(a * 100).astype(np.int16))
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        tmp_path / "f.csv",
        "--no-cache",
    )
    assert "subject 'STS_002'" in message and "it looks like SUV×100 stored as integers; divide it by 100" in message
    assert "grey levels, more than the limit of 512" in message and "--bin-width" in message


def test_tiny_bin_width_is_refused_naming_a_bin_width_that_works(capsys, cohort, tmp_path):
    message = refused(
        capsys,
        cohort.parent,
        "extract",
        "--cohort",
        cohort,
        "--out",
        tmp_path / "f.csv",
        "--no-cache",
        "--bin-width",
        "0.001",
    )
    assert "6 of 6 scan(s) cannot be used" in message and "in bins of 0.001 gives 20982 grey levels" in message
    assert "use --bin-width 0.042 or larger" in message


# -- 6. strict options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param, words",
    [
        (
            "combt.eb=false",
            "unknown image-harmonizer or feature-harmonizer or evaluator 'combt'; did you mean 'combat'?",
        ),
        ("combat.foo=1", "plugin 'combat' has no parameter 'foo'"),
        ("combat.ebb=true", "has no parameter 'ebb'; did you mean 'eb'?"),
        ("combat.eb=maybe", "combat.eb='maybe': expected true or false"),
    ],
    ids=["misspelt-plugin", "unknown-parameter", "close-match", "invalid-value"],
)
def test_bench_param_is_checked_before_any_work(capsys, cohort, tmp_path, param, words):
    message = refused(
        capsys,
        cohort.parent,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "b",
        "--param",
        param,
        "--quiet",
    )
    assert words in message
    assert not (tmp_path / "b").exists()


def test_bench_param_alias_reaches_the_plugin():
    from harmkit.bench.config import load_config

    config = load_config(None, {"params": {"gan": {"steps": 3}}})
    assert config.params == {"cyclegan": {"steps": 3}} and config.plugin_params("cyclegan")["steps"] == 3


def test_train_param_of_the_wrong_type_is_refused(capsys, cohort, tmp_path):
    message = refused(
        capsys,
        cohort.parent,
        "train",
        "--method",
        "histmatch",
        "--cohort",
        cohort,
        "--reference",
        "3.906mm",
        "--out",
        tmp_path / "m",
        "-p",
        "landmarks=high",
    )
    assert "--param landmarks='high': expected a list of numbers (comma-separated)" in message
    assert not (tmp_path / "m").exists()


def test_bench_site_with_one_scan_is_named(capsys, cohort, tmp_path):
    lines = cohort.read_text().splitlines()
    cohort.write_text("\n".join(lines[:-1]) + "\n")  # STS_042 removed: the 5.469 mm protocol keeps one scan
    message = refused(
        capsys,
        cohort.parent,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "b",
        "--quiet",
        "--jobs",
        "1",
    )
    assert "site group '5.469mm' has 1 scan(s) but at least 2 are needed" in message


def test_bench_reference_voi_that_no_scan_has_is_an_error(capsys, cohort, tmp_path):
    message = refused(
        capsys,
        cohort.parent,
        "bench",
        "--cohort",
        cohort,
        "--methods",
        "combat",
        "--out",
        tmp_path / "b",
        "--reference-voi",
        "liver",
        "--quiet",
        "--jobs",
        "1",
    )
    assert (
        "--reference-voi liver: 6 of 6 scan(s) have no mask 'liver'" in message
        and "masks in the cohort: lesion" in message
    )
