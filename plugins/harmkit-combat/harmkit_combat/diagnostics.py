"""Do the sites really differ? A check to run before harmonizing.

Orlhac et al. (J Nucl Med 2022, "A guide to ComBat harmonization of imaging
biomarkers in multicenter studies") advise checking, feature by feature,
whether the distributions of the sites differ before applying ComBat, and
warn that ComBat's estimates are unreliable for sites with fewer than about
20 scans. :func:`site_difference` does both.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from harmkit.errors import HarmkitError

TESTS = ("ks", "ad")


@dataclass
class SiteDifference:
    """Per-feature test of whether the sites' distributions differ.

    ``table`` has one row per feature with columns ``statistic``, ``p_value``
    and ``differs`` (``p_value < alpha``). For ``test="ks"`` with more than two
    sites, every pair of sites is tested and the smallest p-value is
    Bonferroni-corrected by the number of pairs. For ``test="ad"`` the
    k-sample Anderson–Darling test is used (scipy caps its p-values to
    [0.001, 0.25]).
    """

    test: str
    alpha: float
    table: pd.DataFrame
    site_counts: dict[str, int]
    min_scans: int
    small_sites: list[str] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return int(len(self.table))

    @property
    def n_differing(self) -> int:
        """How many features differ between sites at ``p < alpha``."""
        return int(self.table["differs"].sum())

    @property
    def messages(self) -> list[str]:
        """Human-readable warnings (small sites, no differing feature)."""
        out = []
        for site in self.small_sites:
            out.append(
                f"site {site!r} has {self.site_counts[site]} scans (< {self.min_scans}): ComBat's site estimates "
                f"are unreliable below about {self.min_scans} scans per site (Orlhac et al., J Nucl Med 2022); "
                f"consider pooling it with a site that shares its scanner and protocol"
            )
        if self.n_features and self.n_differing == 0:
            out.append(
                f"no feature differs between sites at p < {self.alpha} ({self.test.upper()} test): "
                f"harmonization may not be needed and can only add noise"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (stored as ComBat's ``site_difference_``)."""
        return {
            "test": self.test,
            "alpha": self.alpha,
            "n_features": self.n_features,
            "n_differing": self.n_differing,
            "site_counts": dict(self.site_counts),
            "min_scans": self.min_scans,
            "small_sites": list(self.small_sites),
            "p_values": {str(k): float(v) for k, v in self.table["p_value"].items()},
        }

    def __str__(self) -> str:
        return (
            f"{self.n_differing} of {self.n_features} features differ between sites at p < {self.alpha} "
            f"({self.test.upper()}); scans per site: " + ", ".join(f"{s}={n}" for s, n in self.site_counts.items())
        )


def site_difference(
    features: pd.DataFrame,
    sites: Iterable[Any],
    test: str = "ks",
    alpha: float = 0.05,
    min_scans: int = 20,
) -> SiteDifference:
    """Test, feature by feature, whether the sites' distributions differ.

    Parameters
    ----------
    features : DataFrame
        Rows are scans, columns numeric features (no missing values).
    sites : sequence
        Site label of each row.
    test : {"ks", "ad"}
        ``"ks"``: two-sample Kolmogorov–Smirnov (all pairs of sites, smallest
        p-value Bonferroni-corrected); ``"ad"``: k-sample Anderson–Darling.
    alpha : float
        Significance level for ``differs``.
    min_scans : int
        Sites with fewer scans are listed in ``small_sites`` (20 following
        Orlhac et al., J Nucl Med 2022).

    Returns
    -------
    SiteDifference
        ``.n_differing``, ``.n_features``, ``.table``, ``.small_sites``, ``.messages``.
    """
    from scipy import stats

    if test not in TESTS:
        raise HarmkitError(f"site difference test {test!r} is not known; use one of {', '.join(TESTS)}")
    site_labels = np.asarray([str(s) for s in sites])
    if len(site_labels) != len(features):
        raise HarmkitError(f"{len(site_labels)} site labels for {len(features)} feature rows; give one site per row")
    labels, counts = np.unique(site_labels, return_counts=True)
    site_counts = {str(s): int(n) for s, n in zip(labels, counts)}
    small = [s for s, n in site_counts.items() if n < min_scans]
    values = np.asarray(features, dtype=float)
    groups = [values[site_labels == s] for s in labels]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, name in enumerate(features.columns):
            cols = [g[:, j] for g in groups]
            if len(cols) < 2:
                rows.append((name, np.nan, 1.0))
                continue
            if test == "ks":
                pairs = list(combinations(range(len(cols)), 2))
                best_stat, best_p = 0.0, 1.0
                for a, b in pairs:
                    res = stats.ks_2samp(
                        cols[a],
                        cols[b],
                        method="asymp" if len(cols[a]) * len(cols[b]) > 1e6 else "auto",
                    )
                    if res.pvalue < best_p or (res.pvalue == best_p and res.statistic > best_stat):
                        best_stat, best_p = float(res.statistic), float(res.pvalue)
                rows.append((name, best_stat, min(1.0, best_p * len(pairs))))
            else:
                if np.ptp(np.concatenate(cols)) == 0:  # constant feature: nothing differs
                    rows.append((name, 0.0, 1.0))
                    continue
                res = stats.anderson_ksamp(cols)
                rows.append((name, float(res.statistic), float(res.significance_level)))
    table = pd.DataFrame(rows, columns=["feature", "statistic", "p_value"]).set_index("feature")
    table["differs"] = table["p_value"] < alpha
    return SiteDifference(test, float(alpha), table, site_counts, int(min_scans), small)
