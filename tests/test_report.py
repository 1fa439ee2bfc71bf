"""The bench report's prediction columns: corrected statistics by default, the paper's labelled (no images, fast)."""

import json

import pytest
from rich.console import Console
from test_evaluators import synthetic_context

from harmkit.bench.report import auc_text, print_summary, write_outputs


@pytest.fixture
def evaluated(tmp_path):
    from harmkit.evaluators import PredictionEvaluator

    ctx = synthetic_context(tmp_path, folds=8)
    ctx.results = {"prediction": PredictionEvaluator(n_bootstrap=200).evaluate(ctx)}
    return ctx


def test_terminal_shows_corrected_table_then_the_papers_labelled(evaluated):
    console = Console(record=True, width=80)
    print_summary(evaluated, console)
    text = console.export_text()
    corrected, paper = text.split("prediction as in Haberl et al.")
    row = evaluated.results["prediction"].summary["by_method"]["combat|A"]
    assert auc_text(row) in corrected and "corrected resampled t" in corrected
    assert auc_text(row, haberl=True) in paper and auc_text(row) not in paper
    assert max(len(line) for line in text.splitlines()) <= 80


def test_report_and_results_hold_both_statistics_with_their_labels(evaluated):
    staging = evaluated.out_dir / ".staging"
    staging.mkdir()
    (staging / "figures").mkdir()
    cohort = {
        "source": "synthetic",
        "n_scans": 60,
        "manifest": "m.csv",
        "site_groups": {"A": ["A"], "B": ["B"]},
    }
    write_outputs(evaluated, staging, cohort, {"total": 1.0})
    md = (evaluated.out_dir / "report.md").read_text()
    html = (evaluated.out_dir / "report.html").read_text()
    labels = (
        "p (corrected t, Holm)",
        "p as in Haberl et al.",
        "95% CI as in Haberl et al.",
        "bootstrap 95% CI (200 resamples)",
    )
    for label in labels:
        assert label in md and label in html
    assert "Holm over the 2 comparisons against `none`" in md
    results = json.loads((evaluated.out_dir / "results.json").read_text())
    row = next(r for r in results["summary"] if (r["method"], r["reference"]) == ("combat", "B"))
    keys = (
        "auc_ci_low",
        "auc_ci_low_haberl",
        "p_paired",
        "p_paired_holm",
        "p_paired_haberl",
        "auc_pooled_boot_ci_low",
    )
    for key in keys:
        assert row[key] is not None, key
