"""A third-party evaluator: how many features still differ between site groups after each method?

For every method and reference site group, each feature of the VOI is
compared between every other site group and the reference group with a
two-sample Kolmogorov-Smirnov test, after all of the method's stages. The
evaluator reports the number of features with ``p < alpha``: harmonization
should bring it down. It uses only harmkit's public evaluator API
(:class:`harmkit.bench.context.BenchContext` and :mod:`harmkit.interfaces`).
"""

from __future__ import annotations

import pandas as pd
from scipy.stats import ks_2samp

from harmkit import EvaluationResult, Evaluator
from harmkit.bench.context import row_key
from harmkit.errors import EvaluatorSkipped
from harmkit.interfaces import ReportTable, SummaryColumn


class KSCountEvaluator(Evaluator):
    """Count the features whose distribution differs between site groups (two-sample KS test).

    Parameters
    ----------
    alpha:
        Significance level of each test (``--param ks-count.alpha=0.01``); not corrected for the number of
        features, so read the count as a screening figure.
    """

    name = "ks-count"
    title = "Features that still differ between site groups (KS test, example plugin)"
    description = (
        "Number of features whose distribution differs between site groups (KS test; example third-party evaluator)"
    )

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha

    def evaluate(self, context) -> EvaluationResult:
        if not 0 < self.alpha < 1:
            raise EvaluatorSkipped(f"alpha={self.alpha} is not a probability")
        voi = context.config.voi
        rows, by_method = [], {}
        for method in context.methods:
            for reference in context.references:
                groups = context.features_of(method, reference, voi)["site_group"]
                features = context.harmonized_features(method, reference, voi)
                for group in context.groups:
                    if group == reference:
                        continue
                    a, b = features[groups == group], features[groups == reference]
                    if len(a) < 2 or len(b) < 2:
                        continue
                    differing = sum(ks_2samp(a[c], b[c]).pvalue < self.alpha for c in features.columns)
                    rows.append(
                        {
                            "method": method.label,
                            "reference": reference,
                            "group": group,
                            "n_features": features.shape[1],
                            "differing": int(differing),
                        }
                    )
                total = sum(r["differing"] for r in rows if r["method"] == method.label and r["reference"] == reference)
                by_method[row_key(method.label, reference)] = {"ks_differing": total}
        if not rows:
            raise EvaluatorSkipped("no site group has two or more scans besides the reference")
        table = pd.DataFrame(rows)
        report = [
            f"Two-sample Kolmogorov-Smirnov test of every {voi} feature between each site group and the reference "
            f"group, after all of the method's stages; a feature differs when p < {self.alpha} (uncorrected).",
            ReportTable(
                ["method", "reference", "compared group", "features", "differing"],
                [
                    [
                        r["method"],
                        r["reference"],
                        r["group"],
                        str(r["n_features"]),
                        str(r["differing"]),
                    ]
                    for r in rows
                ],
                "ks-count",
            ),
        ]
        return EvaluationResult(
            self.name,
            tables={"per_group": table},
            summary={"by_method": by_method, "alpha": self.alpha, "voi": voi},
            columns=[
                SummaryColumn(
                    "ks_differing",
                    "features differing (KS)",
                    "d",
                    "KS diff",
                    description=(
                        "features of the VOI whose distribution differs from the reference group's (KS test, p < "
                        f"{self.alpha})"
                    ),
                )
            ],
            report=report,
        )
