"""Features of a bench run: the same extractor and VOIs for the original scans and every method's images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..data import Cohort
from ..errors import HarmkitError
from ..toolkit import feature_columns

if TYPE_CHECKING:  # pragma: no cover
    from .context import BenchContext


def extract_features(ctx: "BenchContext", cohort: Cohort, voi: str, what: str):
    """Features of ``cohort`` in ``voi`` through :func:`harmkit.extraction.extract` (cached by content)."""
    from ..extraction import extract
    from ..plugins import get_extractor

    extractor = get_extractor(ctx.config.extractor)
    table = extract(
        cohort,
        voi=voi,
        extractor=extractor,
        cache_dir=ctx.cache.root / "features",
        executor=ctx.executor,
        progress=ctx.config.progress,
    )
    if "site_group" not in table.columns:
        table.insert(1, "site_group", [cohort.get(s).group for s in table.index])
    else:
        table["site_group"] = [cohort.get(s).group for s in table.index]
    classes = table.attrs.get("feature_classes") or {}
    if not classes and hasattr(extractor, "feature_classes"):
        classes = extractor.feature_classes()
    ctx.feature_classes.update(classes)
    return table


def extract_all(ctx: "BenchContext", vois: list[str], console) -> None:
    baseline = {}
    for voi in vois:
        console.log(f"features of the original scans in VOI [bold]{voi}[/]")
        baseline[voi] = extract_features(ctx, ctx.cohort, voi, "original")
    done: dict[tuple, dict] = {}
    for method in ctx.methods:
        for ref in ctx.references:
            if method.control == "oracle":
                ctx.features[(method.label, ref)] = {voi: oracle_table(ctx, baseline[voi], voi, ref) for voi in vois}
                continue
            if not method.image_stages and not ctx.changed_scans(method, ref):
                ctx.features[(method.label, ref)] = baseline
                continue
            image_label = "+".join(s.name for s in method.image_stages) or method.label
            key = (image_label, ref)
            if key not in done:
                cohort = ctx.cohort_for(method, ref)
                tables = {}
                for voi in vois:
                    console.log(f"features after [bold]{image_label}[/] -> {ref} in VOI [bold]{voi}[/]")
                    tables[voi] = extract_features(ctx, cohort, voi, f"{image_label}->{ref}")
                done[key] = tables
            ctx.features[(method.label, ref)] = done[key]


def oracle_table(ctx: "BenchContext", baseline, voi: str, reference: str):
    """The baseline's feature table with every non-reference scan's row replaced by its counterfactual's at
    ``reference``.

    Rows keep the scan's subject id, site and site group: the table reads as
    if a perfect harmonizer had mapped each scan to the reference site.
    """
    table = baseline.copy()
    cf_table = ctx.cf_features[voi]
    columns = [c for c in feature_columns(table) if c in cf_table.columns]
    for subject in table.index:
        if table.loc[subject, "site_group"] == reference:
            continue
        cf = ctx.counterfactual(subject, reference)
        if cf is None or cf.subject_id not in cf_table.index:
            raise HarmkitError(f"oracle: no counterfactual of subject {subject!r} at {reference} in VOI {voi!r}")
        table.loc[subject, columns] = cf_table.loc[cf.subject_id, columns].to_numpy()
    return table
