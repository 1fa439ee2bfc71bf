"""Inter-site reproducibility statistics (Haberl et al. 2024, Table 2, Figs. 6 and 7).

Pure functions on feature tables and per-scan values; no benchmark objects.

* :func:`overlap_coefficient` — Weitzman's overlap (OVL) of two samples:
  the area under the minimum of their Gaussian kernel density estimates;
  1 = identical distributions, 0 = disjoint.
* :func:`feature_overlap` — OVL of every feature between two site groups.
* :func:`overlap_change` and :func:`class_summary` — OVL before and after a
  harmonization per feature, then per feature class: mean ± sd before, after
  and of the improvement (Table 2), and the Wilcoxon signed-rank test of
  after vs before across the class's features (Fig. 7).
* :func:`cov_comparison` — coefficient of variation per site before and
  after: medians and IQRs, Mann-Whitney U against the reference site, and
  whether the distance to the reference site shrank (Fig. 6).
* :func:`plot_overlap_by_class`, :func:`plot_cov_by_site` — PNG figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .toolkit import feature_columns

__all__ = [
    "overlap_coefficient",
    "normal_overlap",
    "feature_overlap",
    "overlap_change",
    "class_summary",
    "cov_comparison",
    "plot_overlap_by_class",
    "plot_cov_by_site",
    "CLASS_ORDER",
]

#: Display order of the paper's feature classes.
CLASS_ORDER = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


# -- the overlap coefficient -----------------------------------------------------


def normal_overlap(d: float) -> float:
    """Analytic OVL of N(0, 1) and N(d, 1): 2 Φ(−|d|/2)."""
    return float(math.erfc(abs(d) / 2 / math.sqrt(2)))


def _kde(sample: np.ndarray, scale: float):
    """A Gaussian KDE (Scott's bandwidth) as a function; a constant sample gets a narrow kernel."""
    from scipy.stats import gaussian_kde

    if np.ptp(sample) > 0:
        kde = gaussian_kde(sample, bw_method="scott")
        return kde, float(np.sqrt(kde.covariance[0, 0]))
    # zero spread: a kernel 1e-3 of the pooled scale wide (a near point mass)
    width = max(scale * 1e-3, 1e-12)

    def point_mass(x, centre=float(sample[0]), width=width):
        return np.exp(-0.5 * ((x - centre) / width) ** 2) / (width * math.sqrt(2 * math.pi))

    return point_mass, width


def overlap_coefficient(a: ArrayLike, b: ArrayLike, grid_size: int = 2048) -> float:
    """Weitzman's overlap coefficient of two samples.

    Each sample's density is a Gaussian kernel density estimate with Scott's
    bandwidth; the OVL is ∫ min(f_a, f_b) dx, integrated with the trapezoid
    rule on at least ``grid_size`` points where both densities live (each sample ± 5 bandwidths). The
    samples may differ in size. NaN and infinite values are dropped; with
    fewer than two values in either sample the result is NaN.

    Validation (tests): two samples of one normal distribution give ≈ 1;
    N(0,1) against N(d,1) gives 2Φ(−|d|/2) (:func:`normal_overlap`) within
    0.02 for large samples.
    """
    av = np.asarray(a, dtype=np.float64).ravel()
    bv = np.asarray(b, dtype=np.float64).ravel()
    av, bv = av[np.isfinite(av)], bv[np.isfinite(bv)]
    if av.size < 2 or bv.size < 2:
        return float("nan")
    if np.ptp(av) == 0 and np.ptp(bv) == 0:
        return 1.0 if av[0] == bv[0] else 0.0
    pooled = np.concatenate([av, bv])
    scale = float(np.std(pooled)) or 1.0
    fa, wa = _kde(av, scale)
    fb, wb = _kde(bv, scale)
    # min(f_a, f_b) is negligible (< the mass beyond 5 bandwidths) outside the
    # stretch where both densities live, so only that stretch is integrated.
    low = max(av.min() - 5 * wa, bv.min() - 5 * wb)
    high = min(av.max() + 5 * wa, bv.max() + 5 * wb)
    if high <= low:
        return 0.0
    # a grid fine enough for the narrower kernel, within bounds
    points = int(min(max(grid_size, (high - low) / min(wa, wb) * 4), 200_000))
    x = np.linspace(low, high, points)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    overlap = trapezoid(np.minimum(fa(x), fb(x)), x)
    return float(min(max(overlap, 0.0), 1.0))


def _feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in feature_columns(features) if pd.api.types.is_numeric_dtype(features[c])]


def _two_groups(groups: pd.Series, group_a: str | None, group_b: str | None) -> tuple[str, str]:
    present = list(dict.fromkeys(groups.tolist()))
    if group_a is None and group_b is None:
        if len(present) != 2:
            raise ValueError(
                f"expected exactly two site groups, found {len(present)} ({', '.join(map(str, present))}); name "
                "group_a and group_b"
            )
        return present[0], present[1]
    if group_a is None or group_b is None:
        raise ValueError("give both group_a and group_b, or neither")
    for g in (group_a, group_b):
        if g not in present:
            raise ValueError(f"site group {g!r} not found; groups present: {', '.join(map(str, present))}")
    return group_a, group_b


def _groups_for(features: pd.DataFrame, groups) -> pd.Series:
    if groups is None:
        for column in ("site_group", "site"):
            if column in features.columns:
                return features[column].astype(str)
        raise ValueError("give groups, or a table with a site_group or site column")
    if isinstance(groups, str):
        return features[groups].astype(str)
    series = pd.Series(
        list(groups) if not isinstance(groups, pd.Series) else groups.tolist(),
        index=features.index,
    )
    if len(series) != len(features):
        raise ValueError(f"groups has {len(series)} entries for {len(features)} rows")
    return series.astype(str)


def feature_overlap(
    features: pd.DataFrame,
    groups=None,
    group_a: str | None = None,
    group_b: str | None = None,
    feature_classes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """OVL of every feature between two site groups.

    ``features``: rows are scans, numeric columns are features (``site`` and
    ``site_group`` columns are skipped). ``groups``: per-row group labels, a
    column name, or ``None`` for the ``site_group`` (else ``site``) column.
    With exactly two groups present they are compared; otherwise name
    ``group_a`` and ``group_b``. ``feature_classes`` defaults to
    ``features.attrs["feature_classes"]``.

    Returns a DataFrame indexed by feature with columns ``class``,
    ``overlap``, ``n_a``, ``n_b`` (attrs: ``group_a``, ``group_b``).
    """
    groups = _groups_for(features, groups)
    a_name, b_name = _two_groups(groups, group_a, group_b)
    classes = dict(feature_classes if feature_classes is not None else features.attrs.get("feature_classes", {}))
    rows = []
    in_a, in_b = (groups == a_name).to_numpy(), (groups == b_name).to_numpy()
    for column in _feature_columns(features):
        values = features[column].to_numpy(dtype=np.float64)
        a, b = values[in_a], values[in_b]
        rows.append(
            {
                "feature": column,
                "class": classes.get(column, _guess_class(column)),
                "overlap": overlap_coefficient(a, b),
                "n_a": int(np.isfinite(a).sum()),
                "n_b": int(np.isfinite(b).sum()),
            }
        )
    table = (
        pd.DataFrame(rows).set_index("feature") if rows else pd.DataFrame(columns=["class", "overlap", "n_a", "n_b"])
    )
    table.attrs.update({"group_a": a_name, "group_b": b_name})
    return table


def _guess_class(feature: str) -> str:
    return feature.split("_")[-2] if feature.count("_") >= 1 else "unknown"


def overlap_change(
    before: pd.DataFrame,
    after: pd.DataFrame,
    groups_before=None,
    groups_after=None,
    group_a: str | None = None,
    group_b: str | None = None,
    feature_classes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per-feature OVL between two site groups before and after a harmonization.

    Columns: ``class``, ``overlap_before``, ``overlap_after``,
    ``improvement`` (after − before; ×100 gives the paper's percentage
    points). Features present in both tables only.
    """
    classes = (
        feature_classes
        if feature_classes is not None
        else (before.attrs.get("feature_classes") or after.attrs.get("feature_classes"))
    )
    b = feature_overlap(before, groups_before, group_a, group_b, classes)
    a = feature_overlap(after, groups_after, b.attrs["group_a"], b.attrs["group_b"], classes)
    common = [f for f in b.index if f in a.index]
    table = pd.DataFrame(
        {
            "class": b.loc[common, "class"],
            "overlap_before": b.loc[common, "overlap"],
            "overlap_after": a.loc[common, "overlap"],
        }
    )
    table["improvement"] = table["overlap_after"] - table["overlap_before"]
    table.attrs.update(b.attrs)
    return table


def class_summary(change: pd.DataFrame, min_features: int = 6, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per feature class: mean ± sd of OVL before, after and of the improvement, and Wilcoxon.

    ``change`` is the output of :func:`overlap_change`. The Wilcoxon
    signed-rank test (two-sided, scipy) pairs each feature's OVL after with
    its OVL before. Classes with fewer than ``min_features`` features get no
    test (p = NaN): with 5 pairs the smallest possible two-sided p is 0.0625
    (the paper left NGTDM untested for this reason). Standard deviations use
    ddof = 1. Rows follow :data:`CLASS_ORDER`, then any other class.
    """
    from scipy.stats import wilcoxon

    present = list(dict.fromkeys(change["class"]))
    order = [c for c in (classes or CLASS_ORDER) if c in present] + [
        c for c in present if c not in (classes or CLASS_ORDER)
    ]
    rows = []
    for cls in order:
        part = change[change["class"] == cls].dropna(subset=["overlap_before", "overlap_after"])
        n = len(part)
        statistic = p = float("nan")
        if n >= min_features:
            differences = (part["overlap_after"] - part["overlap_before"]).to_numpy()
            if np.allclose(differences, 0):
                statistic, p = 0.0, 1.0
            else:
                result = wilcoxon(
                    part["overlap_after"],
                    part["overlap_before"],
                    alternative="two-sided",
                )
                statistic, p = float(result.statistic), float(result.pvalue)
        rows.append(
            {
                "class": cls,
                "n_features": n,
                "before_mean": part["overlap_before"].mean(),
                "before_sd": part["overlap_before"].std(ddof=1),
                "after_mean": part["overlap_after"].mean(),
                "after_sd": part["overlap_after"].std(ddof=1),
                "improvement_mean": part["improvement"].mean(),
                "improvement_sd": part["improvement"].std(ddof=1),
                "wilcoxon_statistic": statistic,
                "wilcoxon_p": p,
            }
        )
    return pd.DataFrame(rows).set_index("class")


# -- coefficient of variation per site -----------------------------------------------


def cov_comparison(
    before: pd.Series,
    after: pd.Series,
    sites: pd.Series | Mapping[str, str],
    reference_site: str,
    alpha: float = 0.05,
) -> dict[str, pd.DataFrame]:
    """COV per site before and after a harmonization towards ``reference_site``.

    ``before`` and ``after`` hold one COV per scan, indexed by subject id;
    ``after`` holds the harmonized scans (the reference site's scans may be
    absent, in which case their ``before`` values stand for them, since a
    harmonization towards a site leaves that site unchanged). ``sites`` maps
    subject id to site (group).

    Returns ``{"per_site": ..., "tests": ...}``:

    * ``per_site``: rows (site, stage ∈ before/after) with ``n``, ``median``,
      ``q1``, ``q3``, ``iqr``;
    * ``tests``: one row per non-reference site: Mann-Whitney U (two-sided)
      against the reference site before (``mwu_before_U``, ``mwu_before_p``)
      and after (``mwu_after_*``); the median absolute distance of its scans'
      COV to the reference site's median before and after; the Wilcoxon
      signed-rank p of after vs before distances, paired by subject
      (``distance_p``), and ``distance_shrank`` (median distance smaller after
      and ``distance_p < alpha``).
    """
    from scipy.stats import mannwhitneyu, wilcoxon

    sites = pd.Series(sites) if not isinstance(sites, pd.Series) else sites
    sites = sites.astype(str)
    if reference_site not in set(sites):
        raise ValueError(f"reference site {reference_site!r} not among the sites ({', '.join(sorted(set(sites)))})")
    before = before.dropna()
    after = after.dropna()
    reference_ids = [s for s in before.index if sites.get(s) == reference_site]
    ref_before = before.loc[reference_ids].to_numpy(float)
    ref_after_ids = [s for s in after.index if sites.get(s) == reference_site]
    ref_after = after.loc[ref_after_ids].to_numpy(float) if ref_after_ids else ref_before
    order = list(dict.fromkeys(sites.loc[[s for s in before.index if s in sites.index]]))

    per_site = []
    for site in order:
        for stage, values in (("before", before), ("after", after)):
            ids = [s for s in values.index if sites.get(s) == site]
            v = values.loc[ids].to_numpy(float)
            if site == reference_site and stage == "after" and not ids:
                v = ref_before
            if v.size == 0:
                continue
            q1, median, q3 = np.percentile(v, [25, 50, 75])
            per_site.append(
                {
                    "site": site,
                    "stage": stage,
                    "n": int(v.size),
                    "median": median,
                    "q1": q1,
                    "q3": q3,
                    "iqr": q3 - q1,
                }
            )

    tests = []
    for site in order:
        if site == reference_site:
            continue
        ids = [s for s in before.index if sites.get(s) == site and s in after.index]
        v_before = before.loc[ids].to_numpy(float)
        v_after = after.loc[ids].to_numpy(float)
        if v_before.size == 0:
            continue
        mb = mannwhitneyu(v_before, ref_before, alternative="two-sided")
        ma = mannwhitneyu(v_after, ref_after, alternative="two-sided")
        d_before = np.abs(v_before - np.median(ref_before))
        d_after = np.abs(v_after - np.median(ref_after))
        if v_before.size >= 2 and not np.allclose(d_after - d_before, 0):
            distance_p = float(wilcoxon(d_after, d_before, alternative="two-sided").pvalue)
        else:
            distance_p = float("nan") if v_before.size < 2 else 1.0
        tests.append(
            {
                "site": site,
                "reference_site": reference_site,
                "n": int(v_before.size),
                "mwu_before_U": float(mb.statistic),
                "mwu_before_p": float(mb.pvalue),
                "mwu_after_U": float(ma.statistic),
                "mwu_after_p": float(ma.pvalue),
                "distance_before": float(np.median(d_before)),
                "distance_after": float(np.median(d_after)),
                "distance_p": distance_p,
                "distance_shrank": bool(np.median(d_after) < np.median(d_before) and distance_p < alpha),
            }
        )
    per_site_table = pd.DataFrame(per_site).set_index(["site", "stage"]) if per_site else pd.DataFrame()
    tests_table = pd.DataFrame(tests).set_index("site") if tests else pd.DataFrame()
    return {"per_site": per_site_table, "tests": tests_table}


# -- figures ---------------------------------------------------------------------------

BEFORE_COLOUR, AFTER_COLOUR = (
    "#1f77b4",
    "#ff7f0e",
)  # blue / orange, as in the paper's Fig. 7


def _save(figure, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .atomic import atomic_file

    path = Path(path)
    FigureCanvasAgg(figure)
    with atomic_file(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "P < 0.0001" if p < 1e-4 else f"P = {p:.4f}"


def plot_overlap_by_class(
    change: pd.DataFrame,
    path: str | os.PathLike,
    title: str | None = None,
    min_features: int = 6,
) -> Path:
    """Box plots of per-feature OVL before (blue) and after (orange) for each class, Wilcoxon P on top (Fig. 7)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    summary = class_summary(change, min_features=min_features)
    classes = list(summary.index)
    figure = Figure(figsize=(max(4.0, 1.6 * len(classes)), 4.2))
    ax = figure.add_subplot(1, 1, 1)
    for i, cls in enumerate(classes):
        part = change[change["class"] == cls]
        for offset, column, colour in (
            (-0.18, "overlap_before", BEFORE_COLOUR),
            (0.18, "overlap_after", AFTER_COLOUR),
        ):
            values = part[column].dropna().to_numpy()
            if values.size == 0:
                continue
            box = ax.boxplot(
                values,
                positions=[i + offset],
                widths=0.3,
                patch_artist=True,
                showfliers=False,
            )
            for patch in box["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.6)
            jitter = np.linspace(-0.06, 0.06, values.size) if values.size > 1 else np.zeros(1)
            ax.scatter(i + offset + jitter, values, s=8, color=colour, zorder=3)
        ax.text(i, 1.04, _p_text(summary.loc[cls, "wilcoxon_p"]), ha="center", fontsize=8)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([f"{c}\n(n={int(summary.loc[c, 'n_features'])})" for c in classes])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("feature overlap (OVL)")
    ax.legend(
        handles=[
            Patch(color=BEFORE_COLOUR, alpha=0.6, label="before"),
            Patch(color=AFTER_COLOUR, alpha=0.6, label="after"),
        ],
        loc="lower right",
        fontsize=8,
    )
    if title:
        ax.set_title(title)
    return _save(figure, path)


def plot_cov_by_site(
    before: pd.Series,
    after: pd.Series,
    sites: pd.Series | Mapping[str, str],
    reference_site: str,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Box plots of the COV per site before and after harmonization, with the
    distance test's P for each non-reference site (Fig. 6)."""
    from matplotlib.figure import Figure

    result = cov_comparison(before, after, sites, reference_site)
    sites = pd.Series(sites) if not isinstance(sites, pd.Series) else sites
    sites = sites.astype(str)
    order = [reference_site] + [
        s for s in dict.fromkeys(sites.loc[[i for i in before.index if i in sites.index]]) if s != reference_site
    ]
    data, labels, colours = [], [], []
    for site in order:
        ids = [s for s in before.index if sites.get(s) == site]
        data.append(before.loc[ids].dropna().to_numpy())
        labels.append(site)
        colours.append(BEFORE_COLOUR)
        if site != reference_site:
            ids_after = [s for s in after.index if sites.get(s) == site]
            data.append(after.loc[ids_after].dropna().to_numpy())
            labels.append(f"harmonized\n{site}")
            colours.append(AFTER_COLOUR)
    figure = Figure(figsize=(max(4.0, 1.3 * len(data)), 4.0))
    ax = figure.add_subplot(1, 1, 1)
    for i, (values, colour) in enumerate(zip(data, colours)):
        if values.size == 0:
            continue
        box = ax.boxplot(values, positions=[i], widths=0.5, patch_artist=True, showfliers=False)
        for patch in box["boxes"]:
            patch.set_facecolor(colour)
            patch.set_alpha(0.6)
        ax.scatter(
            np.full(values.size, i) + np.linspace(-0.1, 0.1, values.size),
            values,
            s=8,
            color=colour,
            zorder=3,
        )
    ax.set_xticks(range(len(data)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("COV (σ/μ)")
    tests = result["tests"]
    notes = (
        [f"{site}: distance to {reference_site} {_p_text(row['distance_p'])}" for site, row in tests.iterrows()]
        if len(tests)
        else []
    )
    ax.set_title((title + "\n" if title else "") + "; ".join(notes), fontsize=9)
    return _save(figure, path)
