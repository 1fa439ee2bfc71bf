"""ComBat feature harmonizer (neuroHarmonize), made safe to use.

neuroHarmonize (Pomponio et al. 2020) implements ComBat (Johnson et al. 2007;
Fortin et al. 2017) with a learn/apply split and smooth (GAM) covariates. Used
directly it has traps that fail silently; :class:`ComBat` turns each one into
correct behaviour or one :class:`~harmkit.errors.HarmkitError` naming the
feature, site or column:

========================================  ===========================================
neuroHarmonize / neuroCombat               here
========================================  ===========================================
a site with one scan: all output NaN       error naming the site
one NaN in the input: all output NaN       error naming the feature(s) and subject(s)
site unseen at fit: NaN rows               error naming the site and the fitted sites
apply to rows lacking a fitted site:       works (the design matrix is completed)
  shape error or misaligned design
covariates matched by column position      matched by name; missing columns named
reference site not found: silently none    error naming the site and the sites present
feature constant within a site: -inf or    passed through unchanged, listed in
  a distorted empirical-Bayes prior          ``constant_features_`` and warned about
covariate confounded with site: garbage    error naming the covariate(s)
model saved with pickle                    JSON + npz (harmkit's ``save``/``load``)
========================================  ===========================================
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harmkit.errors import HarmkitError
from harmkit.interfaces import FeatureHarmonizer
from harmkit.toolkit import FEATURE_INDEX, NON_FEATURE_COLUMNS, feature_columns

from .diagnostics import site_difference

# Columns of harmkit's feature tables that describe a row rather than measure it (harmkit.toolkit.feature_columns):
# they are carried through unchanged and never harmonized.
METADATA_COLUMNS = (FEATURE_INDEX, *NON_FEATURE_COLUMNS)
_SITE = "SITE"  # the column name neuroHarmonize requires


class ComBatWarning(UserWarning):
    """Something about the data the user should know (small sites, constant features)."""


def _listing(items: Iterable[Any], limit: int = 8) -> str:
    names = [str(i) for i in items]
    head = ", ".join(repr(i) for i in names[:limit])
    return head + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ComBat(FeatureHarmonizer):
    """ComBat harmonization of radiomic features across sites.

    Parameters
    ----------
    eb : bool, default True
        Empirical-Bayes (parametric) shrinkage of the site location/scale
        estimates across features. ``False`` gives plain location/scale
        adjustment, feature by feature.
    smooth_terms : sequence of str, default ()
        Covariate columns modelled as smooth (GAM, cubic B-spline) terms rather
        than linearly. Every other covariate column is linear.
    smooth_term_bounds : (float or None, float or None), default (None, None)
        Range of the spline basis of a single smooth term; widen it when the
        rows you will transform cover a wider range than the training rows.
    site_test : {"ks", "ad"} or None, default "ks"
        Test used by the pre-harmonization check ``site_difference_``
        (``None`` skips it; worth it only for very large tables).
    alpha : float, default 0.05
        Significance level of that check.
    min_scans_per_site : int, default 20
        Sites with fewer scans trigger a :class:`ComBatWarning` (Orlhac et al.
        2022). Sites with a single scan are refused.
    random_state : int or None, default 0
        Seed for the penalty-weight search of smooth terms (the only random
        step).

    ``fit(features, sites, covariates=None, reference_site=None)``: with a
    ``reference_site`` this is M-ComBat: the reference site's rows come back
    unchanged and every other site is mapped onto it. Without one, sites are
    mapped onto the pooled grand mean.

    Fitted attributes: ``feature_names_``, ``harmonized_features_``,
    ``constant_features_`` ({feature: [sites]}), ``sites_``, ``site_counts_``,
    ``reference_site_``, ``covariate_names_``, ``smooth_terms_``, ``eb_used_``,
    ``site_difference_`` (summary of :func:`~harmkit_combat.site_difference`),
    and the ComBat estimates ``B_hat_``, ``grand_mean_``, ``var_pooled_``,
    ``gamma_star_``, ``delta_star_``, ``gamma_hat_``, ``delta_hat_``.
    """

    name = "combat"
    description = (
        "ComBat feature harmonization (EB or L/S, M-ComBat reference site, linear/GAM covariates; neuroHarmonize)"
    )

    def __init__(
        self,
        eb: bool = True,
        smooth_terms: Sequence[str] = (),
        smooth_term_bounds: tuple[float | None, float | None] = (None, None),
        site_test: str = "ks",
        alpha: float = 0.05,
        min_scans_per_site: int = 20,
        random_state: int | None = 0,
    ):
        self.eb = eb
        self.smooth_terms = smooth_terms
        self.smooth_term_bounds = smooth_term_bounds
        self.site_test = site_test
        self.alpha = alpha
        self.min_scans_per_site = min_scans_per_site
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        features: pd.DataFrame,
        sites: Sequence[Any],
        covariates: pd.DataFrame | None = None,
        reference_site: str | None = None,
    ) -> "ComBat":
        """Learn site effects from ``features`` (rows: scans, columns: features)."""
        from neuroHarmonize import harmonizationLearn

        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, key)
        self.__dict__.pop("_model_cache", None)

        features = _as_frame(features)
        feature_names = _feature_columns(features)
        site_labels = _check_sites(sites, features)
        values = _check_values(features, feature_names)
        cov, cov_names = _check_covariates(covariates, features, None)
        smooth = [str(s) for s in (self.smooth_terms or ())]
        missing = [s for s in smooth if s not in cov_names]
        if missing:
            raise HarmkitError(
                f"ComBat: smooth term(s) {_listing(missing)} are not covariate columns "
                f"(covariates given: {_listing(cov_names) or 'none'}); pass them in 'covariates'"
            )

        labels, counts = np.unique(site_labels, return_counts=True)
        site_counts = {str(s): int(n) for s, n in zip(labels, counts)}
        if len(labels) < 2:
            raise HarmkitError(
                f"ComBat needs at least two sites; all {len(site_labels)} rows are from site {labels[0]!r}"
            )
        single = [s for s, n in site_counts.items() if n < 2]
        if single:
            raise HarmkitError(
                f"ComBat: site(s) {_listing(single)} have a single scan; a site's scale cannot be estimated from one "
                "scan (neuroHarmonize would return all-NaN output). Pool such sites with a site that shares their "
                "scanner and protocol (site_group), or drop them"
            )
        if reference_site is not None:
            reference_site = str(reference_site)
            if reference_site not in site_counts:
                raise HarmkitError(
                    f"ComBat: reference site {reference_site!r} is not among the sites of the training rows "
                    f"({_listing(site_counts)}); neuroHarmonize would silently ignore it"
                )
        _check_design(site_labels, labels, cov, cov_names)

        # Features constant within a site: ComBat's scale for that site is zero.
        constant: dict[str, list[str]] = {}
        for j, feat in enumerate(feature_names):
            col = values[:, j]
            flat = [str(s) for s in labels if np.ptp(col[site_labels == s]) == 0]
            if flat:
                constant[str(feat)] = flat
        keep = [j for j, feat in enumerate(feature_names) if str(feat) not in constant]
        if constant:
            warnings.warn(
                f"ComBat: {len(constant)} feature(s) are constant within a site and are passed through unchanged: "
                + "; ".join(f"{f!r} (site {', '.join(s)})" for f, s in list(constant.items())[:8])
                + (" ..." if len(constant) > 8 else ""),
                ComBatWarning,
                stacklevel=2,
            )
        if not keep:
            raise HarmkitError("ComBat: every feature is constant within at least one site; nothing to harmonize")

        if self.site_test is not None:
            report = site_difference(
                pd.DataFrame(values[:, keep], columns=[feature_names[j] for j in keep]),
                site_labels,
                test=self.site_test,
                alpha=self.alpha,
                min_scans=self.min_scans_per_site,
            )
            messages = report.messages
        else:  # the test skipped; small sites are still reported
            report = None
            messages = [
                f"site {s!r} has {n} scans (< {self.min_scans_per_site}): ComBat's site estimates are unreliable "
                f"(Orlhac et al., J Nucl Med 2022)"
                for s, n in site_counts.items()
                if n < self.min_scans_per_site
            ]
        for message in messages:
            warnings.warn(f"ComBat: {message}", ComBatWarning, stacklevel=2)

        internal = {name: f"c{i}" for i, name in enumerate(cov_names)}
        covars = _covars_frame(site_labels, cov, cov_names, internal)
        eb = bool(self.eb) and len(keep) > 1
        with _quiet():
            model, _ = harmonizationLearn(
                values[:, keep],
                covars,
                eb=eb,
                smooth_terms=[internal[s] for s in smooth],
                smooth_term_bounds=tuple(self.smooth_term_bounds),
                ref_batch=reference_site,
                seed=self.random_state,
            )
        bad = ~np.isfinite(model["gamma_star"]).all(axis=0) | ~np.isfinite(model["delta_star"]).all(axis=0)
        if bad.any():  # pragma: no cover - guarded above; kept as a last line of defence
            raise HarmkitError(
                "ComBat: estimates are not finite for feature(s) "
                f"{_listing([feature_names[keep[j]] for j in np.flatnonzero(bad)])}"
            )

        self.feature_names_ = [_jsonable(f) for f in feature_names]
        self.harmonized_features_ = [_jsonable(feature_names[j]) for j in keep]
        self.constant_features_ = constant
        self.sites_ = [str(s) for s in model["SITE_labels"]]
        self.site_counts_ = site_counts
        self.reference_site_ = reference_site
        self.covariate_names_ = [_jsonable(c) for c in cov_names]
        self.covariate_center_ = (
            np.asarray([float(np.median(cov[c].to_numpy(dtype=float))) for c in cov_names])
            if cov is not None and cov_names
            else np.zeros(0)
        )
        self.smooth_terms_ = smooth
        self.eb_used_ = eb
        self.site_difference_ = report.to_dict() if report is not None else None
        self.B_hat_ = np.asarray(model["B_hat"], dtype=float)
        self.grand_mean_ = np.asarray(model["stand_mean"][:, 0], dtype=float)
        self.var_pooled_ = np.asarray(model["var_pooled"], dtype=float).reshape(-1)
        self.gamma_star_ = np.asarray(model["gamma_star"], dtype=float)
        self.delta_star_ = np.asarray(model["delta_star"], dtype=float)
        self.gamma_hat_ = np.asarray(model["gamma_hat"], dtype=float)
        self.delta_hat_ = np.asarray(model["delta_hat"], dtype=float)
        if smooth:
            cols = [internal[s] for s in smooth]
            self.spline_data_ = covars[cols].to_numpy(dtype=float)
        else:
            self.spline_data_ = np.zeros((0, 0))
        return self

    # ------------------------------------------------------------ transform
    def transform(
        self,
        features: pd.DataFrame,
        sites: Sequence[Any],
        covariates: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Harmonize ``features`` with the fitted model (rows may be new scans).

        Columns are matched by name; the output has the input's index and
        columns. Metadata columns (``subject_id``, ``site``, ``site_group``)
        and features constant within a site at fit come back unchanged.
        """
        from neuroHarmonize import harmonizationApply

        self.check_fitted()
        features = _as_frame(features)
        names = _feature_columns(features)
        fitted = list(self.feature_names_)
        missing = [f for f in fitted if f not in names]
        extra = [f for f in names if f not in fitted]
        if missing:
            raise HarmkitError(f"ComBat: feature column(s) {_listing(missing)} were present at fit but are missing now")
        if extra:
            raise HarmkitError(
                f"ComBat: feature column(s) {_listing(extra)} were not seen at fit and cannot be harmonized; "
                f"drop them or refit"
            )
        site_labels = _check_sites(sites, features)
        unseen = sorted(set(site_labels) - set(self.sites_))
        if unseen:
            raise HarmkitError(
                f"ComBat: site(s) {_listing(unseen)} were not in the training rows (fitted sites: "
                f"{_listing(self.sites_)}); "
                f"ComBat cannot estimate their effect: refit with scans of these sites in the training data"
            )
        out = features.copy()
        if len(features) == 0:
            return out
        harmonized = list(self.harmonized_features_)
        values = _check_values(features, harmonized)
        cov, cov_names = _check_covariates(covariates, features, list(self.covariate_names_))
        internal = {name: f"c{i}" for i, name in enumerate(cov_names)}
        covars = _covars_frame(site_labels, cov, cov_names, internal)
        # neuroHarmonize's harmonizationApply builds its design matrix from the sites
        # present in the rows it gets, and fails (or misaligns) when some fitted site
        # is absent - as in most cross-validation test folds. Rows are harmonized
        # independently, so one placeholder row per absent site fixes the design and
        # is dropped again afterwards.
        absent = [s for s in self.sites_ if s not in set(site_labels)]
        if absent:
            pad_values = np.tile(np.asarray(self.grand_mean_, dtype=float), (len(absent), 1))
            pad = pd.DataFrame({_SITE: absent})
            for i, name in enumerate(cov_names):
                pad[internal[name]] = float(self.covariate_center_[i])
            values = np.vstack([values, pad_values])
            covars = pd.concat([covars, pad], ignore_index=True)
        with _quiet():
            result = harmonizationApply(values, covars, self._model())
        result = result[: len(features)]
        if not np.isfinite(result).all():  # pragma: no cover - every known cause is refused above
            raise HarmkitError("ComBat: harmonized values are not finite; check the input for extreme values")
        for j, feat in enumerate(harmonized):
            out[feat] = result[:, j].astype(float)
        return out

    def fit_transform(self, features, sites, covariates=None, reference_site=None):
        return self.fit(features, sites, covariates, reference_site).transform(features, sites, covariates)

    # -------------------------------------------------------------- helpers
    def _model(self) -> dict[str, Any]:
        """The neuroHarmonize model dict rebuilt from the fitted arrays (never unpickled)."""
        cached = self.__dict__.get("_model_cache")
        if cached is not None:
            return cached
        smooth = list(self.smooth_terms_)
        internal = {name: f"c{i}" for i, name in enumerate(self.covariate_names_)}
        columns = [_SITE] + [internal[c] for c in self.covariate_names_]
        smooth_model: dict[str, Any] = {
            "perform_smoothing": bool(smooth),
            "smooth_terms": [internal[s] for s in smooth],
            "smooth_cols": [columns.index(internal[s]) for s in smooth],
            "bsplines_constructor": None,
        }
        if smooth:
            from statsmodels.gam.api import BSplines

            x = np.asarray(self.spline_data_, dtype=float)
            if len(smooth) == 1:
                lo, hi = tuple(self.smooth_term_bounds)
                bs = BSplines(
                    x,
                    df=10,
                    degree=3,
                    knot_kwds=[{"lower_bound": lo, "upper_bound": hi}],
                )
            else:
                bs = BSplines(x, df=[10] * len(smooth), degree=[3] * len(smooth))
            smooth_model["bsplines_constructor"] = bs
        ref_level = self.sites_.index(self.reference_site_) if self.reference_site_ is not None else None
        model = {
            "SITE_labels": np.asarray(self.sites_, dtype=object),
            "info_dict": {"ref_level": ref_level},
            "smooth_model": smooth_model,
            "B_hat": np.asarray(self.B_hat_, dtype=float),
            "stand_mean": np.asarray(self.grand_mean_, dtype=float).reshape(-1, 1),
            "var_pooled": np.asarray(self.var_pooled_, dtype=float).reshape(-1, 1),
            "gamma_star": np.asarray(self.gamma_star_, dtype=float),
            "delta_star": np.asarray(self.delta_star_, dtype=float),
        }
        self.__dict__["_model_cache"] = model
        return model

    def set_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        super().set_state(meta, arrays)
        self.__dict__.pop("_model_cache", None)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_model_cache", None)  # holds a statsmodels object; rebuilt on demand
        return state


# ---------------------------------------------------------------- validation
def _as_frame(features: Any) -> pd.DataFrame:
    if isinstance(features, pd.DataFrame):
        return features
    array = np.asarray(features)
    if array.ndim != 2:
        raise HarmkitError(
            f"ComBat: features must be a 2-D table (rows: scans, columns: features), got shape {array.shape}"
        )
    return pd.DataFrame(array, columns=[f"feature_{j}" for j in range(array.shape[1])])


def _feature_columns(features: pd.DataFrame) -> list[Any]:
    if features.columns.duplicated().any():
        raise HarmkitError(
            f"ComBat: duplicated feature column(s) {_listing(features.columns[features.columns.duplicated()].unique())}"
        )
    names = []
    for col in feature_columns(features):
        if not pd.api.types.is_numeric_dtype(features[col]) or pd.api.types.is_bool_dtype(features[col]):
            raise HarmkitError(
                f"ComBat: column {col!r} is not numeric ({features[col].dtype}); features must be numbers "
                f"(metadata columns {', '.join(METADATA_COLUMNS)} are carried through)"
            )
        names.append(col)
    if not names:
        raise HarmkitError("ComBat: no numeric feature columns to harmonize")
    return names


def _row_names(index: pd.Index, rows: np.ndarray) -> str:
    return _listing([index[i] for i in rows], limit=5)


def _check_values(features: pd.DataFrame, names: Sequence[Any]) -> np.ndarray:
    values = features[list(names)].to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        parts = [f"{names[j]!r} (rows {_row_names(features.index, np.flatnonzero(bad[:, j]))})" for j in cols[:5]]
        raise HarmkitError(
            f"ComBat: missing or infinite values in {len(cols)} feature(s): {'; '.join(parts)}"
            + (" ..." if len(cols) > 5 else "")
            + ". One such value would make neuroHarmonize return NaN for every row: impute these values or drop the "
            "features or rows before harmonizing"
        )
    return values


def _check_sites(sites: Sequence[Any], features: pd.DataFrame) -> np.ndarray:
    labels = pd.Series(list(sites) if not isinstance(sites, pd.Series) else sites.to_list())
    if len(labels) != len(features):
        raise HarmkitError(f"ComBat: {len(labels)} site labels for {len(features)} feature rows; give one site per row")
    missing = np.flatnonzero(labels.isna().to_numpy())
    if len(missing):
        raise HarmkitError(f"ComBat: missing site label in rows {_row_names(features.index, missing)}")
    return np.asarray([str(s) for s in labels], dtype=object)


def _check_covariates(
    covariates: pd.DataFrame | None, features: pd.DataFrame, expected: list[Any] | None
) -> tuple[pd.DataFrame | None, list[Any]]:
    """Validate covariates; columns are always taken by name, never by position."""
    if covariates is None or (isinstance(covariates, pd.DataFrame) and covariates.shape[1] == 0):
        if expected:
            raise HarmkitError(
                f"ComBat: the model was fitted with covariate(s) {_listing(expected)}; pass them in 'covariates'"
            )
        return None, []
    if isinstance(covariates, pd.Series):
        covariates = covariates.to_frame()
    if not isinstance(covariates, pd.DataFrame):
        raise HarmkitError("ComBat: covariates must be a pandas DataFrame with named columns")
    if len(covariates) != len(features):
        raise HarmkitError(f"ComBat: {len(covariates)} covariate rows for {len(features)} feature rows")
    if covariates.columns.duplicated().any():
        raise HarmkitError(
            "ComBat: duplicated covariate column(s) "
            f"{_listing(covariates.columns[covariates.columns.duplicated()].unique())}"
        )
    # Rows: align by index when both tables name the same scans in another order.
    if (
        not covariates.index.equals(features.index)
        and covariates.index.is_unique
        and features.index.is_unique
        and set(covariates.index) == set(features.index)
    ):
        covariates = covariates.loc[features.index]
    if expected is None:
        names = list(covariates.columns)
    else:
        missing = [c for c in expected if c not in covariates.columns]
        if missing:
            raise HarmkitError(
                f"ComBat: covariate column(s) {_listing(missing)} used at fit are missing "
                f"(given: {_listing(covariates.columns)})"
            )
        names = list(expected)  # by name: a reordered frame gives the same result
    cov = covariates[names]
    for col in names:
        if not pd.api.types.is_numeric_dtype(cov[col]):
            raise HarmkitError(
                f"ComBat: covariate {col!r} is not numeric ({cov[col].dtype}); encode categories as 0/1 columns "
                f"(one per level but the first)"
            )
        bad = np.flatnonzero(~np.isfinite(cov[col].to_numpy(dtype=float)))
        if len(bad):
            raise HarmkitError(
                f"ComBat: covariate {col!r} is missing or infinite in rows {_row_names(features.index, bad)}"
            )
    return cov.reset_index(drop=True), names


def _check_design(
    site_labels: np.ndarray,
    labels: np.ndarray,
    cov: pd.DataFrame | None,
    cov_names: list[Any],
) -> None:
    """Refuse covariates that are constant or explained by site (singular design)."""
    if cov is None:
        return
    onehot = (site_labels[:, None] == labels[None, :]).astype(float)
    rank = np.linalg.matrix_rank(onehot)
    for col in cov_names:
        x = cov[col].to_numpy(dtype=float)[:, None]
        if np.linalg.matrix_rank(np.hstack([onehot, x])) == rank:
            raise HarmkitError(
                f"ComBat: covariate {col!r} is constant within every site (confounded with site); ComBat cannot "
                f"separate its effect from the site effect: drop it from the covariates"
            )
    full = np.hstack([onehot, cov.to_numpy(dtype=float)])
    if np.linalg.matrix_rank(full) < full.shape[1]:
        raise HarmkitError(
            f"ComBat: covariates {_listing(cov_names)} are collinear with each other or with site; drop redundant "
            "columns"
        )


def _covars_frame(
    site_labels: np.ndarray,
    cov: pd.DataFrame | None,
    cov_names: list[Any],
    internal: dict,
) -> pd.DataFrame:
    frame = pd.DataFrame({_SITE: site_labels})
    for name in cov_names:
        assert cov is not None  # covariate names come from the covariates frame
        frame[internal[name]] = cov[name].to_numpy(dtype=float)
    return frame


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@contextlib.contextmanager
def _quiet():
    """neuroHarmonize prints to stdout and numpy warns on its internals: keep the terminal clean."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        np.errstate(all="ignore"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy deprecations inside neuroHarmonize
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        yield
