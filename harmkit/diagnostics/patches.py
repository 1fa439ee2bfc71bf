"""Image-level separability: can a small classifier tell site groups apart from image patches?

Every scan is resampled (linear) to one grid -- by default the median voxel
spacing of the cohort, or the spacing an image harmonizer trains on -- and
cubic patches of ``patch_size`` voxels are cut around random body voxels, as
an image harmonizer's training sampler does. Each patch is divided by its own
mean over body voxels, so that the classifier sees texture and resolution,
not the SUV level (a calibration difference between sites is invisible to
it). Hand-made texture descriptors of the normalised patch
(:data:`DESCRIPTORS`) feed a gradient-boosting classifier (scikit-learn),
scored on patches of subjects it never saw (folds grouped by subject).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import HarmkitError
from ..imageio import read_header
from ..voi import body_mask

# name -> what it measures, on the patch divided by its body mean (gaussian(x, s): Gaussian smoothing, s in voxels)
DESCRIPTORS = {
    "hp1_mad": "robust SD (1.4826 MAD) of x - gaussian(x, 1): finest-scale noise",
    "band_mad": "robust SD of gaussian(x, 1) - gaussian(x, 2): mid-scale texture",
    "hp2_sd": "SD of x - gaussian(x, 2): all fine structure and noise",
    "fine_to_mid": "hp1_mad / band_mad: spectral slope (noise correlation and resolution)",
    "acf1_x": "lag-1 autocorrelation of x - gaussian(x, 2) along x (noise correlation in-plane)",
    "acf1_y": "the same along y",
    "acf1_z": "the same along z (axial)",
    "acf2_inplane": "lag-2 autocorrelation of x - gaussian(x, 2), mean of x and y",
    "gradient": "median gradient magnitude (central differences, per voxel)",
}
MIN_BODY_FRACTION = 0.5


def resample(image: sitk.Image, spacing: Sequence[float], interpolator=sitk.sitkLinear) -> sitk.Image:
    """``image`` on a grid of ``spacing`` (x, y, z, mm) covering the same extent; unchanged if already there."""
    spacing = tuple(float(s) for s in spacing)
    old = image.GetSpacing()
    if np.allclose(old, spacing, rtol=1e-4, atol=1e-6):
        return image
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old, spacing)]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = tuple(np.asarray(image.GetOrigin()) + direction @ ((np.asarray(spacing) - np.asarray(old)) / 2.0))
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        origin,
        spacing,
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def _mad(values: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _lag(residual: np.ndarray, valid: np.ndarray, axis: int, lag: int) -> float:
    n = residual.shape[axis]
    if lag >= n:
        return math.nan
    a = np.take(residual, range(0, n - lag), axis=axis)
    b = np.take(residual, range(lag, n), axis=axis)
    both = np.take(valid, range(0, n - lag), axis=axis) & np.take(valid, range(lag, n), axis=axis)
    x, y = a[both], b[both]
    denominator = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum()) / denominator if denominator > 0 else math.nan


def describe_patch(patch: np.ndarray, body: np.ndarray, smooth1: np.ndarray, smooth2: np.ndarray) -> list[float]:
    """The :data:`DESCRIPTORS` of one patch.

    Arrays (z, y, x): the image, its body mask, the image smoothed by 1 and by 2 voxels.
    """
    mean = float(patch[body].mean())
    x, s1, s2 = patch / mean, smooth1 / mean, smooth2 / mean
    hp1, band, hp2 = (x - s1)[body], (s1 - s2)[body], x - s2
    hp1_mad, band_mad = _mad(hp1), _mad(band)
    gz, gy, gx = np.gradient(x)
    gradient = float(np.median(np.sqrt(gz * gz + gy * gy + gx * gx)[body]))
    acf = [_lag(hp2, body, axis, 1) for axis in (2, 1, 0)]
    acf2 = np.nanmean([_lag(hp2, body, 2, 2), _lag(hp2, body, 1, 2)])
    return [
        hp1_mad,
        band_mad,
        float(hp2[body].std()),
        hp1_mad / band_mad if band_mad > 0 else math.nan,
        *acf,
        float(acf2),
        gradient,
    ]


def scan_patches(item: tuple) -> np.ndarray:
    """Worker: descriptors of ``n`` patches of one scan, ``(scan, spacing, patch_size, n, seed)`` -> array (n, D)."""
    scan, spacing, patch_size, n, seed = item
    original = scan.load_image()
    image = resample(original, spacing)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    # the one body rule of every command (harmkit.voi), made on the scan's own grid like the bench's masks
    try:
        mask = scan.load_mask("body") if "body" in scan.masks else body_mask(original)
    except HarmkitError as exc:
        raise HarmkitError(f"{scan.label}: {exc}") from None
    body = sitk.GetArrayFromImage(resample(mask, spacing, sitk.sitkNearestNeighbor)) > 0
    size = [min(patch_size, s) for s in array.shape]
    # body fraction of every patch position at once (the box filter's value at a patch's centre voxel)
    fraction = ndimage.uniform_filter(body.astype(np.float64), size, mode="constant")
    inner = tuple(slice(s // 2, a - s + s // 2 + 1) for a, s in zip(array.shape, size))
    corners = np.argwhere(fraction[inner] >= MIN_BODY_FRACTION - 1e-9)  # index in ``inner`` = the patch's corner
    if len(corners) == 0:
        raise HarmkitError(
            f"{scan.label}: no patch of {size} voxels is at least half inside the body; "
            "use a smaller patch size, or check that the image is in SUV"
        )
    rng = np.random.default_rng(seed)
    chosen = corners[rng.choice(len(corners), size=n, replace=len(corners) < n)]
    boxes = [(slice(z, z + size[0]), slice(y, y + size[1]), slice(x, x + size[2])) for z, y, x in chosen]
    rows = []
    for box, (smooth1, smooth2) in zip(boxes, _smoothed_patches(array, boxes)):
        rows.append(describe_patch(array[box], body[box] & (array[box] > 0), smooth1, smooth2))
    return np.asarray(rows, dtype=np.float64)


SMOOTHING_SIGMAS = (1.0, 2.0)
_TRUNCATE = 4.0  # scipy's default reach of a Gaussian filter, in sigmas


def _smoothed_patches(array: np.ndarray, boxes: Sequence[tuple[slice, ...]]) -> list[tuple[np.ndarray, ...]]:
    """``array`` smoothed by each of :data:`SMOOTHING_SIGMAS` (mode ``nearest``), cut to each of ``boxes``.

    The values are those of smoothing the whole volume, to the bit: a box padded by the filter's reach (clipped
    at the volume's edges, where ``nearest`` extends it as it would the volume) holds every voxel they depend on.
    When the padded boxes hold fewer voxels than the volume, only they are smoothed.
    """
    reach = int(_TRUNCATE * max(SMOOTHING_SIGMAS) + 0.5)
    padded = [
        tuple(slice(max(b.start - reach, 0), min(b.stop + reach, n)) for b, n in zip(box, array.shape)) for box in boxes
    ]
    if sum(int(np.prod([p.stop - p.start for p in box])) for box in padded) >= array.size:
        whole = [ndimage.gaussian_filter(array, s, mode="nearest", truncate=_TRUNCATE) for s in SMOOTHING_SIGMAS]
        return [tuple(smooth[box] for smooth in whole) for box in boxes]
    out = []
    for box, outer in zip(boxes, padded):
        inner = tuple(slice(b.start - p.start, b.stop - p.start) for b, p in zip(box, outer))
        region = array[outer]
        out.append(
            tuple(
                ndimage.gaussian_filter(region, s, mode="nearest", truncate=_TRUNCATE)[inner] for s in SMOOTHING_SIGMAS
            )
        )
    return out


def _grid_of(scan) -> tuple:
    """``(size, spacing)`` of ``scan``'s image, from its header where it is a file."""
    if isinstance(scan.image, sitk.Image):
        return scan.image.GetSize(), scan.image.GetSpacing()
    try:
        header = read_header(scan.image)
        return header["size"], header["spacing"]
    except RuntimeError:  # e.g. a DICOM series folder: load it
        image = scan.load_image()
        return image.GetSize(), image.GetSpacing()


def _resampled_size(scan, spacing) -> int:
    """Smallest edge (voxels) of ``scan`` resampled to ``spacing``, from its header."""
    size, old = _grid_of(scan)
    return min(max(1, int(round(n * o / s))) for n, o, s in zip(size, old, spacing))


def median_spacing(scans) -> tuple[float, float, float]:
    """Median voxel spacing (x, y, z) of ``scans``, read from the headers."""
    x, y, z = (float(v) for v in np.median(np.asarray([_grid_of(s)[1] for s in scans]), axis=0))
    return x, y, z


def _classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.1,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        early_stopping=False,
        class_weight="balanced",
        random_state=seed,
    )


def held_out_accuracy(
    X: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy of the patch classifier on patches of held-out subjects (folds grouped by subject)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    subjects = np.asarray(subjects)
    classes = list(dict.fromkeys(labels))
    per_class = {c: len(set(subjects[labels == c])) for c in classes}
    n_splits = min(folds, min(per_class.values()))
    if n_splits < 2:
        raise HarmkitError(f"patch classifier: each site group needs at least 2 scans (scans per group: {per_class})")
    finite = np.isfinite(X).all(axis=1)
    X, labels, subjects = X[finite], labels[finite], subjects[finite]
    y = np.array([classes.index(c) for c in labels])
    probability = np.zeros((len(y), len(classes)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # One OpenMP thread: on a few thousand patches, threads gained nothing on 2 cores (docs/performance.md).
    with threadpool_limits(1):
        for train, test in splitter.split(X, y, subjects):
            model = _classifier(seed).fit(X[train], y[train])
            probability[test] = model.predict_proba(X[test])
    predicted = probability.argmax(axis=1)
    result: dict[str, Any] = {
        "accuracy": float(balanced_accuracy_score(y, predicted)),
        "chance": 1.0 / len(classes),
        "patches": int(len(y)),
        "folds": int(n_splits),
    }
    if len(classes) == 2:
        result["auc"] = float(roc_auc_score(y, probability[:, 1]))
    # accuracy per scan: the share of its patches classified into its own group, averaged per group
    own = probability[np.arange(len(y)), y] >= probability.max(axis=1)
    result["per_group"] = {c: float(own[y == k].mean()) for k, c in enumerate(classes)}
    return result


def patch_separability(
    cohort,
    spacing: Sequence[float] | None = None,
    patch_size: int = 32,
    patches_per_scan: int = 16,
    folds: int = 5,
    seed: int = 0,
    groups: dict[str, str] | None = None,
    jobs: int | None = None,
    executor=None,
    progress: bool = False,
    known: Mapping[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Held-out accuracy of a small classifier that tells site groups apart from image patches.

    Parameters
    ----------
    cohort : Cohort
        Scans with their site groups (``groups`` maps subject id to another
        label, e.g. after harmonization, when given).
    spacing : (x, y, z) mm, optional
        The common grid; default the median spacing of the cohort.
    patch_size : int
        Cubic patch edge in voxels (32: the quick CycleGAN profile); shrunk to
        the smallest resampled image where needed.
    patches_per_scan : int
        Random patches per scan (at least half inside the body: the ``body``
        mask when the scan has one, else SUV > 0.1).
    folds, seed :
        Stratified folds grouped by subject, so a scan's patches are never in
        both training and test; the seed fixes patch positions and folds.
    known : {position: descriptors}, optional
        Descriptors already computed for the scans at these positions of
        ``cohort`` with the same spacing, patch size, patches per scan and
        seed (``scan_descriptors`` of an earlier result): an image stage leaves
        the reference group's scans unchanged, so a comparison before and
        after it need not describe them twice.

    Returns a dict: ``accuracy`` (balanced held-out accuracy; chance is one
    over the number of groups), ``chance``, ``auc`` (two groups), ``per_group``,
    ``pairs`` (accuracy of each pair of groups when there are more than two),
    ``descriptor_medians`` ({group: {descriptor: median}}), ``spacing_mm``,
    ``patch_size``, ``patches``, ``folds``, ``descriptors`` (patches x
    :data:`DESCRIPTORS`), ``labels``, ``scan_descriptors`` (one array per scan,
    in cohort order).
    """
    from ..execution import map_once

    scans = list(cohort)
    labels_of = {s.subject_id: (groups or {}).get(s.subject_id, s.group) for s in scans}
    if len(set(labels_of.values())) < 2:
        raise HarmkitError("patch classifier: the cohort has a single site group; nothing to tell apart")
    if spacing is None:
        spacing = median_spacing(scans)
    patch_size = min(int(patch_size), *(_resampled_size(s, spacing) for s in scans))
    if patch_size < 8:
        raise HarmkitError(
            f"patch classifier: the smallest image is {patch_size} voxels across at {spacing} mm; "
            "patches need 8 or more"
        )
    per_scan: list[np.ndarray | None] = [None] * len(scans)
    for k, values in (known or {}).items():
        if np.shape(values) == (int(patches_per_scan), len(DESCRIPTORS)):
            per_scan[k] = np.asarray(values, dtype=np.float64)
    todo = [k for k, values in enumerate(per_scan) if values is None]
    items = [(scans[k], tuple(spacing), int(patch_size), int(patches_per_scan), (int(seed), k)) for k in todo]
    if items:
        results = map_once(scan_patches, items, "patch descriptors", executor, jobs, progress)
        failed = [r.error for r in results if not r.ok]
        if failed:
            raise HarmkitError(
                f"patch descriptors failed for {len(failed)} scan(s): " + "; ".join(str(e) for e in failed[:3])
            )
        for k, r in zip(todo, results):
            per_scan[k] = r.value
    described = [values for values in per_scan if values is not None]
    X = np.concatenate(described)
    subjects = np.repeat([s.subject_id for s in scans], [len(values) for values in described])
    labels = np.array([labels_of[s] for s in subjects])
    result = held_out_accuracy(_features(X), labels, subjects, folds, seed)
    names = list(dict.fromkeys(labels))
    if len(names) > 2:
        pairs = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                keep = (labels == a) | (labels == b)
                pairs[f"{a} vs {b}"] = held_out_accuracy(_features(X[keep]), labels[keep], subjects[keep], folds, seed)[
                    "accuracy"
                ]
        result["pairs"] = pairs
    result["descriptor_medians"] = {
        g: {name: float(np.nanmedian(X[labels == g, j])) for j, name in enumerate(DESCRIPTORS)} for g in names
    }
    result.update(
        spacing_mm=[float(s) for s in spacing],
        patch_size=int(patch_size),
        patches_per_scan=int(patches_per_scan),
    )
    result["descriptors"] = X
    result["labels"] = labels
    result["scan_descriptors"] = described
    return result


def _features(X: np.ndarray) -> np.ndarray:
    """Descriptors as the classifier sees them: logs of the positive ones, correlations as they are."""
    out = X.copy()
    positive = [j for j, name in enumerate(DESCRIPTORS) if not name.startswith("acf")]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, positive] = np.log(np.where(out[:, positive] > 0, out[:, positive], np.nan))
    return out
