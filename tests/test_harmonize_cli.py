"""`harmkit train` / `harmkit harmonize` and their Python API on a cohort written to disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import SimpleITK as sitk  # noqa: E402
from test_cyclegan_harmonizer import site_scan  # noqa: E402

import harmkit as hk  # noqa: E402
from harmkit.cli import main  # noqa: E402
from harmkit.errors import HarmkitError  # noqa: E402
from harmkit.imageio import same_geometry  # noqa: E402
from harmkit.manifest import write_cohort  # noqa: E402

TINY_CLI = [
    "-p",
    "ngf=2",
    "-p",
    "ndf=2",
    "-p",
    "n_res_blocks=1",
    "-p",
    "patch_size=24",
    "-p",
    "window=24,32,32",
    "-p",
    "threads=1",
    "-p",
    "progress=false",
    "-p",
    "texture_patches=32",  # quick's 1024 cost about 10 s per training; these tests check the commands
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    scans = [site_scan(s, i, 10 * i + ord(s), shape=(21, 26, 30)) for s in "AB" for i in range(2)]
    return write_cohort(scans, root)


@pytest.fixture(scope="module")
def model(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "gan"
    main(
        [
            "train",
            "--method",
            "gan",
            "--cohort",
            str(manifest),
            "--reference",
            "B",
            "--out",
            str(out),
            "--steps",
            "2",
            "--seed",
            "1",
            "--device",
            "cpu",
            *TINY_CLI,
        ]
    )
    return out


def test_train_writes_a_model_and_keeps_resumable_checkpoints_beside_it(model):
    document = json.loads((model / "harmkit-model.json").read_text())
    assert document["plugin"] == "cyclegan" and document["state"]["reference_site_"] == "B"
    assert document["params"]["steps"] == 2 and document["params"]["ngf"] == 2
    assert (model / "generators.pt").is_file()
    work = model.parent / ".gan.work"
    assert list(work.glob("run-*/training/checkpoint.pt"))


def test_harmonize_writes_images_on_the_input_grid_and_a_manifest(model, manifest, tmp_path):
    out = tmp_path / "harmonized"
    main(
        [
            "harmonize",
            "--model",
            str(model),
            "--cohort",
            str(manifest),
            "--out",
            str(out),
        ]
    )
    original, harmonized = (
        hk.load_cohort(manifest),
        hk.load_cohort(out / "manifest.csv"),
    )
    assert harmonized.subject_ids == original.subject_ids and harmonized.sites == original.sites
    for before, after in zip(original, harmonized):
        assert same_geometry(before.load_image(), after.load_image(), tolerance=1e-9)
        assert np.array_equal(
            sitk.GetArrayFromImage(before.load_mask("body")),
            sitk.GetArrayFromImage(after.load_mask("body")),
        )
    # Reference-site scans pass through unchanged; the others are translated.
    a_before, a_after = (
        original.by_group("A")[0].load_image(),
        harmonized.by_group("A")[0].load_image(),
    )
    assert not np.array_equal(sitk.GetArrayFromImage(a_before), sitk.GetArrayFromImage(a_after))
    b_before, b_after = (
        original.by_group("B")[0].load_image(),
        harmonized.by_group("B")[0].load_image(),
    )
    assert np.array_equal(sitk.GetArrayFromImage(b_before), sitk.GetArrayFromImage(b_after))
    provenance = json.loads((out / "harmonize.json").read_text())
    assert provenance["plugin"] == "cyclegan" and provenance["scans"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_harmonize_refuses_a_non_empty_output_folder(model, manifest, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "harmonize",
                "--model",
                str(model),
                "--cohort",
                str(manifest),
                "--out",
                str(out),
            ]
        )
    assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_python_api_harmonizes_towards_the_other_site_with_the_same_model(model, manifest, tmp_path):
    path = hk.harmonize(model, manifest, tmp_path / "to_a", target_site="A", progress=False)
    harmonized = hk.load_cohort(path)
    b_before = hk.load_cohort(manifest).by_group("B")[0].load_image()
    assert not np.array_equal(
        sitk.GetArrayFromImage(b_before),
        sitk.GetArrayFromImage(harmonized.by_group("B")[0].load_image()),
    )


def test_unknown_hyper_parameter_is_named_with_the_valid_ones(manifest, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--cohort",
                str(manifest),
                "--reference",
                "B",
                "--out",
                str(tmp_path / "m"),
                "-p",
                "nfg=3",
            ]
        )
    err = capsys.readouterr().err
    assert "nfg" in err and "ngf" in err
    assert not (tmp_path / "m").exists()


def test_train_rejects_an_unknown_reference_site(manifest, tmp_path):
    with pytest.raises(HarmkitError, match="reference site 'Nowhere'"):
        hk.train("gan", manifest, "Nowhere", tmp_path / "m", steps=1, progress=False)
    assert not (tmp_path / "m").exists()


def test_an_interrupted_train_resumes_to_the_same_model(manifest, tmp_path, monkeypatch):
    import harmkit_cyclegan.training as training

    params = dict(
        steps=5,
        checkpoint_every=2,
        seed=2,
        texture_patches=32,
        ngf=2,
        ndf=2,
        n_res_blocks=1,
        patch_size=24,
        threads=1,
        progress=False,
        device="cpu",
        precision="fp32",
    )
    straight = hk.train("gan", manifest, "B", tmp_path / "straight", **params)

    original = training.Trainer.train_step

    def interrupted(self):
        if self.step == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(training.Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hk.train("gan", manifest, "B", tmp_path / "resumed", **params)
    assert not (tmp_path / "resumed").exists()  # no model that looks complete
    calls = []

    def counted(self):
        calls.append(self.step)
        return original(self)

    monkeypatch.setattr(training.Trainer, "train_step", counted)
    resumed = hk.train("gan", manifest, "B", tmp_path / "resumed", **params)
    assert calls == [2, 3, 4]  # resumed from the checkpoint at step 2, not from scratch

    a = torch.load(straight / "generators.pt", weights_only=True)
    b = torch.load(resumed / "generators.pt", weights_only=True)
    for direction in ("x_to_y", "y_to_x"):
        assert all(torch.equal(a[direction][k], b[direction][k]) for k in a[direction])
