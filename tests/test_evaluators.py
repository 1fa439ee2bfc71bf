"""Built-in evaluators on small synthetic feature tables (no images, no extraction)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harmkit.bench.config import BenchConfig, load_config
from harmkit.bench.context import BenchContext
from harmkit.bench.splits import monte_carlo_splits
from harmkit.cache import Cache
from harmkit.data import Cohort, Scan
from harmkit.errors import HarmkitError
from harmkit.execution import get_executor
from harmkit.methods import Method, parse_methods


def synthetic_context(tmp_path: Path, methods="combat", n=60, folds=6, site_shift=2.0, seed=0) -> BenchContext:
    """Two site groups A/B; the outcome depends on a latent signal; B's features carry an additive site effect."""
    rng = np.random.default_rng(seed)
    groups = np.array(["A"] * (n // 2) + ["B"] * (n - n // 2))
    signal = rng.normal(size=n)
    outcome = (signal + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    scans = [
        Scan(
            f"s{i:03d}",
            g,
            Path(f"/nonexistent/{i}.nii.gz"),
            {"lesion": Path("/nonexistent/m.nii.gz")},
            int(o),
            site_group=g,
        )
        for i, (g, o) in enumerate(zip(groups, outcome))
    ]
    cohort = Cohort(scans)
    features = {}
    for j, cls in enumerate(["firstorder", "firstorder", "glcm", "glcm", "glrlm", "glrlm", "glszm", "ngtdm"]):
        name = f"{cls}_F{j}"
        features[name] = (
            (0.6 if j % 2 == 0 else 0.0) * signal + rng.normal(size=n) + site_shift * (groups == "B") * (1 + 0.2 * j)
        )
    features["firstorder_Mean"] = 5 + 0.3 * signal + 0.5 * (groups == "B") + rng.normal(scale=0.1, size=n)
    features["firstorder_Variance"] = (
        (0.1 + 0.05 * (groups == "B")) * features["firstorder_Mean"] ** 2 * rng.uniform(0.8, 1.2, size=n)
    )
    table = pd.DataFrame(features, index=[s.subject_id for s in scans])
    table.insert(0, "site_group", groups)
    table.insert(0, "site", groups)
    config = BenchConfig(folds=folds, methods=methods, progress=False)
    fig = tmp_path / "figures"
    fig.mkdir(exist_ok=True)
    ctx = BenchContext(
        config,
        cohort,
        ["A", "B"],
        ["A", "B"],
        parse_methods(methods) if isinstance(methods, str) else methods,
        get_executor(1, progress=False),
        Cache(tmp_path / "cache"),
        tmp_path,
        fig,
    )
    for m in ctx.methods:
        for ref in ctx.references:
            ctx.features[(m.label, ref)] = {"lesion": table}
    ctx.feature_classes = {c: c.split("_")[0] for c in table.columns[2:]}
    ctx.outcome = pd.Series(outcome, index=table.index)
    ctx.splits = monte_carlo_splits(list(table.index), outcome, folds, 0.2, 0)
    return ctx


def test_prediction_aucs_are_valid_and_baseline_has_no_test(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path)
    result = PredictionEvaluator().evaluate(ctx)
    assert result.skipped is None
    rows = result.summary["by_method"]
    assert set(rows) == {"none|A", "none|B", "combat|A", "combat|B"}
    for row in rows.values():
        assert 0 <= row["auc_ci_low"] <= row["auc_mean"] <= row["auc_ci_high"] <= 1
        assert row["n_splits"] == 6
    assert "p_delong" not in rows["none|A"]
    assert 0 <= rows["combat|A"]["p_delong"] <= 1
    per_split = result.tables["auc_per_split"]
    assert per_split["auc"].between(0, 1).all()
    assert (tmp_path / "figures" / "roc_curves.png").is_file()


def test_prediction_method_identical_to_baseline_gives_p_one(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path, methods=[Method("none", ()), Method("copy", ())])
    ctx.features[("copy", "A")] = ctx.features[("none", "A")]
    rows = PredictionEvaluator().evaluate(ctx).summary["by_method"]
    assert rows["copy|A"]["p_delong"] == 1.0
    assert rows["copy|A"]["p_paired"] == 1.0
    assert rows["copy|A"]["auc_mean"] == rows["none|A"]["auc_mean"]


def test_prediction_fit_on_train_and_all_differ_only_for_feature_stages(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path)
    train = PredictionEvaluator().evaluate(ctx).summary["by_method"]
    ctx.config.fit_on = "all"
    every = PredictionEvaluator().evaluate(ctx).summary["by_method"]
    assert train["none|A"]["auc_mean"] == every["none|A"]["auc_mean"]
    assert train["combat|A"]["auc_mean"] != every["combat|A"]["auc_mean"]


def test_prediction_skipped_without_outcome(tmp_path):
    from harmkit.errors import EvaluatorSkipped
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path)
    ctx.splits = None
    ctx.prediction_skipped = "the cohort has no outcome column"
    with pytest.raises(EvaluatorSkipped, match="no outcome"):
        PredictionEvaluator().evaluate(ctx)


def test_prediction_is_cached(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path)
    first = PredictionEvaluator().evaluate(ctx).summary["by_method"]
    misses = ctx.cache.misses
    second = PredictionEvaluator().evaluate(ctx).summary["by_method"]
    assert ctx.cache.misses == misses
    assert first == second


def _per_split(result, method, ref):
    table = result.tables["auc_per_split"]
    return table[(table["method"] == method) & (table["reference"] == ref)].sort_values("split")["auc"].to_numpy()


def test_prediction_ci_is_the_corrected_resampled_t_and_the_papers_is_kept(tmp_path):
    from harmkit import stats
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path, folds=10)
    result = PredictionEvaluator().evaluate(ctx)
    row = result.summary["by_method"]["combat|B"]
    aucs = _per_split(result, "combat", "B")
    n_test = 12  # ceil(0.2 * 60) test rows, 48 training rows in every split
    assert (row["n_train"], row["n_test"]) == (48, n_test)
    _, lo, hi = stats.corrected_mean_ci(aucs, 48, n_test)
    _, lo_t, hi_t = stats.mean_ci(aucs)
    assert row["auc_ci_low"] == pytest.approx(max(lo, 0.0), abs=1e-12)
    assert row["auc_ci_high"] == pytest.approx(min(hi, 1.0), abs=1e-12)
    assert row["auc_ci_low_haberl"] == pytest.approx(lo_t, abs=1e-12)
    assert row["auc_ci_high_haberl"] == pytest.approx(hi_t, abs=1e-12)


def test_prediction_p_paired_is_the_corrected_t_and_the_papers_rule_is_kept(tmp_path):
    from harmkit import stats
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path, folds=10)
    result = PredictionEvaluator().evaluate(ctx)
    row = result.summary["by_method"]["combat|A"]
    aucs, base = _per_split(result, "combat", "A"), _per_split(result, "none", "A")
    corrected = stats.corrected_resampled_ttest(aucs, base, 48, 12)
    assert row["p_paired"] == pytest.approx(corrected.p, abs=1e-12)
    assert row["t_corrected"] == pytest.approx(corrected.t, abs=1e-12)
    assert (row["paired_test_haberl"], row["p_paired_haberl"]) == stats.paired_test(aucs, base)


def test_prediction_holm_adjusts_over_every_comparison_with_the_baseline(tmp_path):
    from harmkit import stats
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path, folds=8)
    result = PredictionEvaluator().evaluate(ctx)
    rows = result.summary["by_method"]
    family = ["combat|A", "combat|B"]
    for key in ("p_paired", "p_delong"):
        expected = stats.holm([rows[k][key] for k in family])
        assert [rows[k][f"{key}_holm"] for k in family] == pytest.approx(list(expected), abs=1e-12)
    assert "2 comparisons against `none`" in result.summary["holm_family"]
    assert "p_paired_holm" not in rows["none|A"]


def test_prediction_pooled_auc_has_delong_and_seeded_bootstrap_intervals(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path)
    result = PredictionEvaluator(n_bootstrap=500).evaluate(ctx)
    assert result.summary["n_bootstrap"] == 500 and "seed 0" in result.summary["bootstrap"]
    for row in result.summary["by_method"].values():
        assert row["auc_pooled_delong_ci_low"] < row["auc_pooled"] < row["auc_pooled_delong_ci_high"]
        assert row["auc_pooled_boot_ci_low"] <= row["auc_pooled"] <= row["auc_pooled_boot_ci_high"]
    again = PredictionEvaluator(n_bootstrap=500).evaluate(ctx).summary["by_method"]["combat|A"]
    assert again["auc_pooled_boot_ci_low"] == result.summary["by_method"]["combat|A"]["auc_pooled_boot_ci_low"]


def test_splits_are_stratified_deterministic_and_sized():
    rng = np.random.default_rng(1)
    y = (rng.random(100) < 0.3).astype(int)
    subjects = [f"s{i}" for i in range(100)]
    a = monte_carlo_splits(subjects, y, 20, 0.2, seed=3)
    b = monte_carlo_splits(subjects, y, 20, 0.2, seed=3)
    c = monte_carlo_splits(subjects, y, 20, 0.2, seed=4)
    assert a.digest() == b.digest() != c.digest()
    for train, test in a:
        assert len(test) == 20 and len(set(train) | set(test)) == 100
        assert abs(y[test].mean() - y.mean()) < 0.06


def test_splits_need_both_classes():
    with pytest.raises(HarmkitError, match="at least 2"):
        monte_carlo_splits(["a", "b", "c", "d"], [0, 0, 0, 1], 5)


def test_config_toml_then_command_line(tmp_path):
    toml = tmp_path / "bench.toml"
    toml.write_text('methods = "combat"\nfolds = 7\nsite_groups = ["CHUM+HMR"]\n[params.cyclegan]\nsteps = 5\n')
    cfg = load_config(toml, {"folds": 9, "seed": None})
    assert cfg.methods == "combat" and cfg.folds == 9 and cfg.params["cyclegan"]["steps"] == 5
    assert cfg.site_group_map(["CHUM", "HMR", "HGJ"]) == {
        "CHUM": "CHUM-HMR",
        "HMR": "CHUM-HMR",
    }
    toml.write_text("fold = 7\n")
    with pytest.raises(HarmkitError, match="unknown option"):
        load_config(toml, {})
    with pytest.raises(HarmkitError, match="fit-on"):
        load_config(None, {"fit_on": "test"})


def test_reproducibility_baseline_unchanged_and_combat_improves_overlap(tmp_path):
    from harmkit.evaluators import ReproducibilityEvaluator

    ctx = synthetic_context(tmp_path, n=80)
    result = ReproducibilityEvaluator().evaluate(ctx)
    assert result.skipped is None
    per_feature = result.tables["overlap_per_feature"]
    none = per_feature[per_feature["method"] == "none"]
    assert (none["improvement"] == 0).all()
    combat = per_feature[per_feature["method"] == "combat"]
    assert combat["improvement"].mean() > 0.2  # a strong additive site effect removed
    rows = result.summary["by_method"]
    assert rows["none|A"]["overlap_improvement_pct_lesion"] == 0
    assert (tmp_path / "figures" / "overlap_per_class.png").is_file()
    assert not result.tables["cov_by_group"].empty


def _ssim_in_own_box(original, other, mask, data_range):
    """Mean SSIM over ``mask`` computed on a box around that mask alone (7^3 window, padded by its reach)."""
    from skimage.metrics import structural_similarity

    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, mask.shape)
    lo, hi = np.minimum(lo, np.maximum(hi - 7, 0)), np.maximum(hi, np.minimum(lo + 7, mask.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    _, ssim_map = structural_similarity(original[box], other[box], data_range=data_range, full=True, win_size=7)
    return float(ssim_map[mask[box]].mean())


def test_image_quality_per_mask_equals_each_mask_measured_on_its_own():
    from harmkit.evaluators.image_quality import masked_metrics, metrics_per_mask

    rng = np.random.default_rng(3)
    original = ndimage_smooth(rng.gamma(2.0, 1.0, size=(30, 26, 22)))
    harmonized = original + rng.normal(0, 0.2, original.shape)
    body = np.zeros(original.shape, bool)
    body[2:28, 3:24, 1:22] = True  # reaches the volume's last x plane
    organ = np.zeros(original.shape, bool)
    organ[10:16, 5:9, 12:15] = True
    corner = np.zeros(original.shape, bool)
    corner[0:2, 0:2, 0:2] = True  # at the volume's corner, smaller than the SSIM window
    masks = {"body": body, "organ": organ, "corner": corner, "empty": np.zeros(original.shape, bool)}
    data_range = float(original[body].max() - original[body].min())

    metrics = metrics_per_mask(original, harmonized, masks, data_range)

    for name in ("body", "organ", "corner"):
        mask = masks[name]
        a, b = original[mask], harmonized[mask]
        assert metrics[name]["ssim"] == pytest.approx(
            _ssim_in_own_box(original, harmonized, mask, data_range), abs=1e-12
        )
        assert metrics[name]["psnr"] == pytest.approx(10 * np.log10(data_range**2 / np.mean((a - b) ** 2)))
        assert metrics[name]["nrmse"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a))
        assert metrics[name]["n_voxels"] == int(mask.sum())
        assert masked_metrics(original, harmonized, mask, data_range)["ssim"] == pytest.approx(
            metrics[name]["ssim"], abs=1e-12
        )
    assert 0 < metrics["body"]["ssim"] < 1 and metrics["organ"]["ssim"] != metrics["body"]["ssim"]
    assert np.isnan(metrics["empty"]["ssim"]) and metrics["empty"]["n_voxels"] == 0
    same = metrics_per_mask(original, original, masks, data_range)["body"]
    assert same["ssim"] == pytest.approx(1.0) and same["psnr"] == float("inf") and same["nrmse"] == 0.0


def ndimage_smooth(values):
    from scipy import ndimage

    return ndimage.gaussian_filter(values, 1.5)
