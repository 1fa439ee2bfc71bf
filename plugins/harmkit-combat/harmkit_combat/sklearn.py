"""ComBat as a scikit-learn transformer, for Pipelines and cross-validation.

Convention: ``X`` is a pandas DataFrame holding the features plus a site
column (``site_column``, default ``"site"``) and, optionally, covariate
columns (``covariate_columns``). The transformer reads the site labels (and
covariates) from those columns and returns only the harmonized features, so
the site never reaches the next step as something to learn from. Because the
labels travel inside ``X``, scikit-learn's splitters slice them together with
the features: in ``cross_val_score`` each fold fits ComBat on its training
rows only and applies it to its test rows.

>>> from sklearn.pipeline import make_pipeline                       # doctest: +SKIP
>>> from sklearn.linear_model import LogisticRegression              # doctest: +SKIP
>>> model = make_pipeline(ComBatTransformer(), LogisticRegression())  # doctest: +SKIP
>>> cross_val_score(model, table_with_site_column, y, cv=5)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from harmkit.errors import HarmkitError

from .combat import ComBat


class ComBatTransformer(TransformerMixin, BaseEstimator):
    """scikit-learn wrapper of :class:`~harmkit_combat.ComBat` (site labels as a column of ``X``).

    Parameters
    ----------
    site_column : str, default "site"
        Column of ``X`` holding each row's site (or site group). Dropped from the output.
    covariate_columns : sequence of str, default ()
        Columns of ``X`` whose effect ComBat preserves (numeric). Dropped from
        the output unless ``keep_covariates``.
    smooth_terms : sequence of str, default ()
        Which of ``covariate_columns`` are smooth (GAM) terms.
    eb : bool, default True
        Empirical-Bayes ComBat; ``False`` for location/scale only.
    reference_site : str or None, default None
        M-ComBat: map every site onto this one, whose rows stay unchanged.
    keep_covariates : bool, default False
        Append the covariate columns, unchanged, to the output (when they are
        also predictors).
    drop_columns : sequence of str, default ("subject_id", "site_group")
        Other non-feature columns to drop when present.
    random_state : int or None, default 0
        Seed of the smooth-term penalty search.

    Fitted attribute ``combat_`` is the underlying :class:`ComBat` (its
    ``site_difference_`` and ``constant_features_`` report on the training rows).
    """

    def __init__(
        self,
        site_column: str = "site",
        covariate_columns: Sequence[str] = (),
        smooth_terms: Sequence[str] = (),
        eb: bool = True,
        reference_site: str | None = None,
        keep_covariates: bool = False,
        drop_columns: Sequence[str] = ("subject_id", "site_group"),
        random_state: int | None = 0,
    ):
        self.site_column = site_column
        self.covariate_columns = covariate_columns
        self.smooth_terms = smooth_terms
        self.eb = eb
        self.reference_site = reference_site
        self.keep_covariates = keep_covariates
        self.drop_columns = drop_columns
        self.random_state = random_state

    def _split(self, X):
        if not isinstance(X, pd.DataFrame):
            raise HarmkitError(
                f"ComBatTransformer needs a pandas DataFrame with a {self.site_column!r} column "
                f"(got {type(X).__name__}); keep the site labels as a column of X"
            )
        if self.site_column not in X.columns:
            raise HarmkitError(
                f"ComBatTransformer: X has no site column {self.site_column!r}; "
                f"add it or set site_column= to the column that holds the site labels"
            )
        cov_cols = list(self.covariate_columns or ())
        missing = [c for c in cov_cols if c not in X.columns]
        if missing:
            raise HarmkitError(f"ComBatTransformer: covariate column(s) {missing} are not columns of X")
        drop = [
            self.site_column,
            *cov_cols,
            *[c for c in (self.drop_columns or ()) if c in X.columns],
        ]
        features = X.drop(columns=drop)
        covariates = X[cov_cols] if cov_cols else None
        return features, X[self.site_column], covariates

    def fit(self, X, y=None):
        """Fit ComBat on the rows of ``X`` (``y`` is ignored)."""
        features, sites, covariates = self._split(X)
        self.combat_ = ComBat(
            eb=self.eb,
            smooth_terms=tuple(self.smooth_terms or ()),
            random_state=self.random_state,
        )
        self.combat_.fit(features, sites, covariates, reference_site=self.reference_site)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        """Harmonized features of ``X`` (a DataFrame without the site and covariate columns)."""
        check_is_fitted(self, "combat_")
        features, sites, covariates = self._split(X)
        out = self.combat_.transform(features, sites, covariates)
        if self.keep_covariates and covariates is not None:
            out = pd.concat([out, covariates], axis=1)
        return out

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "combat_")
        names = list(self.combat_.feature_names_)
        if self.keep_covariates:
            names += list(self.covariate_columns or ())
        return np.asarray(names, dtype=object)
