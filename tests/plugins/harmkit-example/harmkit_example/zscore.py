"""Per-site standardization: the simplest feature harmonizer.

Each site's features are shifted and scaled to mean 0 and standard deviation
1 (statistics learned on the training rows), or, with a reference site, to
the reference site's mean and standard deviation. Unlike ComBat it pools no
information across features and keeps no covariate effects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harmkit import FeatureHarmonizer, HarmkitError


class ZScoreHarmonizer(FeatureHarmonizer):
    """Standardize every feature per site (to the reference site's mean/sd when one is given).

    Parameters
    ----------
    min_scans_per_site:
        Fewest training rows a site needs; its standard deviation is
        meaningless below 2.
    """

    name = "zscore"
    description = "Per-site standardization of features (example third-party plugin)"
    aliases = ("standardize",)

    def __init__(self, min_scans_per_site: int = 2):
        self.min_scans_per_site = min_scans_per_site

    def fit(
        self,
        features: pd.DataFrame,
        sites: Sequence[str],
        covariates=None,
        reference_site: str | None = None,
    ):
        values, sites = _check(features, sites)
        labels = list(dict.fromkeys(sites))
        if reference_site is not None and reference_site not in labels:
            raise HarmkitError(
                f"zscore: reference site {reference_site!r} has no training rows; sites: {', '.join(labels)}"
            )
        means, scales = [], []
        for site in labels:
            rows = values[sites == site]
            if len(rows) < max(self.min_scans_per_site, 1):
                raise HarmkitError(
                    f"zscore: site {site!r} has {len(rows)} training row(s); at least {self.min_scans_per_site} are "
                    "needed"
                )
            means.append(np.nanmean(rows, axis=0))
            sd = np.nanstd(rows, axis=0)
            scales.append(np.where(sd > 0, sd, 1.0))  # a constant feature is only shifted
        self.columns_ = [str(c) for c in features.columns]
        self.sites_ = labels
        self.mean_ = np.asarray(means, dtype=float)
        self.scale_ = np.asarray(scales, dtype=float)
        self.reference_site_ = reference_site
        return self

    def transform(self, features: pd.DataFrame, sites: Sequence[str], covariates=None) -> pd.DataFrame:
        self.check_fitted()
        if [str(c) for c in features.columns] != self.columns_:
            raise HarmkitError(
                "zscore: the feature columns differ from those seen in fit(); pass the same columns in the same order"
            )
        values, sites = _check(features, sites)
        unknown = sorted(set(sites) - set(self.sites_))
        if unknown:
            raise HarmkitError(
                f"zscore: site(s) {', '.join(unknown)} were not in the training rows; fitted sites: "
                f"{', '.join(self.sites_)}"
            )
        index = np.array([self.sites_.index(s) for s in sites], dtype=int)
        out = (values - self.mean_[index]) / self.scale_[index]
        if self.reference_site_ is not None:
            ref = self.sites_.index(self.reference_site_)
            out = out * self.scale_[ref] + self.mean_[ref]
        return pd.DataFrame(out, index=features.index, columns=features.columns)


def _check(features: pd.DataFrame, sites: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(features, pd.DataFrame):
        raise HarmkitError("zscore: features must be a pandas DataFrame (rows: scans, columns: features)")
    sites = np.asarray([str(s) for s in sites])
    if len(sites) != len(features):
        raise HarmkitError(f"zscore: {len(sites)} site labels for {len(features)} feature rows; give one site per row")
    try:
        values = features.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise HarmkitError("zscore: every feature column must be numeric") from None
    return values, sites
