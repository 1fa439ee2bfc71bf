"""Does a trained CycleGAN move scans towards the other site? Measured against the same subject scanned there.

Trains one CycleGAN (the ``quick`` profile plus ``--param`` overrides) on a
simulated cohort, then translates ``--eval`` held-back scans in each
direction and compares each with the same subject's counterfactual scan at
the target site (the simulator's ground truth) in the reference VOI:

* ``sd``: noise SD of the VOI (SUV); ``moved``: the median over scans of
  (translated - original) / (counterfactual - original), 0 = unchanged,
  1 = all the way;
* ``features``: per texture class, the share of the distance to the
  counterfactual that translation removed,
  ``1 - sum|translated - cf| / sum|original - cf|`` over the class's
  features, each feature divided by its SD over the original scans;
* ``checkerboard share``: the energy of the change (translated - original) at the highest frequency along x
  against its whole energy; white noise has 1, a transposed-convolution checkerboard several;
* the training's learning monitor (held-out discriminator accuracy, texture moved).

    python benchmarks/cyclegan_probe.py --cohort CACHE/cohorts/headneck-quick-seed0-*/manifest.csv \
        --reference CHUM-HMR --param steps=1500 --param d_highpass_gain=8

The scans translated here are part of training (unpaired training never sees
their counterfactuals), as they are in the bench.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "harmkit-cyclegan"))

from harmkit.data import Cohort  # noqa: E402
from harmkit.diagnostics.texture import noise_statistics  # noqa: E402
from harmkit.extraction import extract  # noqa: E402
from harmkit.manifest import load_cohort  # noqa: E402
from harmkit.params import parse_param_value  # noqa: E402
from harmkit_cyclegan.harmonizer import CycleGANHarmonizer  # noqa: E402
from harmkit_cyclegan.monitor import checkerboard_share  # noqa: E402

TEXTURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


def _params(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name.strip()] = parse_param_value(value.strip())
    return out


def _counterfactuals(manifest: Path) -> dict[tuple[str, str], object]:
    cf = load_cohort(manifest.parent / "counterfactuals.csv", validate=False)
    table = pd.read_csv(manifest.parent / "counterfactuals.csv")
    return {(str(row.source_subject), str(row.site)): scan for row, scan in zip(table.itertuples(), cf)}


def _pick(scans, n: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(scans))
    return [scans[i] for i in sorted(order[:n])]


def measure(model, cohort, counterfactuals, target_group: str, target_site: str, n: int, seed: int, to_reference):
    """Translate ``n`` scans of the other groups towards ``target_group``; compare with their counterfactuals."""
    sources = [s for s in cohort if s.group != target_group]
    rows, originals, translated, truths = [], [], [], []
    for scan in _pick(sources, n, seed):
        out = model.transform(scan) if to_reference else model.transform(scan, target_site=target_group)
        cf = counterfactuals[(scan.subject_id, target_site)]
        stats = [noise_statistics(s.load_image(), s.load_mask("reference")) for s in (scan, out, cf)]
        change = sitk.GetArrayFromImage(out.load_image()) - sitk.GetArrayFromImage(scan.load_image())
        rows.append(
            {
                "subject": scan.subject_id,
                **{f"sd_{k}": v["sd"] for k, v in zip(("orig", "gan", "cf"), stats)},
                "checkerboard": checkerboard_share(change),
            }
        )
        originals.append(scan)
        translated.append(out)
        truths.append(cf)
    sd = pd.DataFrame(rows)
    sd["moved"] = (sd.sd_gan - sd.sd_orig) / (sd.sd_cf - sd.sd_orig)
    tables = []
    for scans in (originals, translated, truths):
        table = extract(Cohort(scans), voi="reference", jobs=1, cache_dir=False, progress=False)
        tables.append(table)
    classes = tables[0].attrs.get("feature_classes", {})
    columns = [c for c in tables[0].columns if classes.get(c) in TEXTURE_CLASSES]
    orig, gan, cf = (t[columns].to_numpy(dtype=float) for t in tables)
    scale = orig.std(axis=0)
    scale[scale == 0] = 1.0
    closed = {}
    for name in TEXTURE_CLASSES:
        idx = [i for i, c in enumerate(columns) if classes.get(c) == name]
        if idx:
            before = np.abs((orig - cf)[:, idx] / scale[idx]).sum()
            after = np.abs((gan - cf)[:, idx] / scale[idx]).sum()
            closed[name] = 1.0 - after / before if before > 0 else float("nan")
    return sd, closed


def _reuse_volume_store(folder: Path) -> None:
    """Keep one copy of the training volume store per spacing in ``folder`` (experiments change only the model)."""
    import shutil

    original = CycleGANHarmonizer._volume_store

    def cached(self, cohort, config, spacing, path):
        name = "-".join(f"{s:.3f}" for s in spacing)
        hot = f"{config.hot_suv:g}" if config.hot_fraction > 0 else "none"  # a store without hot points
        name += f"-m{config.centre_margin_mm:g}-t{config.body_threshold:g}-h{hot}"
        copy = folder / f"store-{name}.h5"
        if copy.is_file() and not Path(path).exists():
            shutil.copy2(copy, path)
        store = original(self, cohort, config, spacing, path)
        if not copy.is_file():
            shutil.copy2(path, copy)
        return store

    CycleGANHarmonizer._volume_store = cached


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True, help="manifest.csv of a simulated cohort (with counterfactuals)")
    parser.add_argument("--reference", required=True, help="reference site group")
    parser.add_argument("--param", action="append", default=[], help="CycleGAN hyper-parameter NAME=VALUE")
    parser.add_argument("--eval", type=int, default=12, help="scans translated per direction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", default=None, help="keep training here (reused when the settings match)")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--store-cache", default=None, help="folder keeping the training volume store between runs")
    args = parser.parse_args(argv)

    manifest = Path(args.cohort)
    cohort = load_cohort(manifest)
    counterfactuals = _counterfactuals(manifest)
    params = _params(args.param)
    if args.store_cache:
        Path(args.store_cache).mkdir(parents=True, exist_ok=True)
        _reuse_volume_store(Path(args.store_cache))
    work = args.work_dir or tempfile.mkdtemp(prefix="harmkit-probe-")
    model = CycleGANHarmonizer(progress=False, threads=args.threads, work_dir=work, **params)
    started = time.perf_counter()
    model.fit(cohort, args.reference)
    fit_seconds = time.perf_counter() - started
    summary = model.learning_summary() or {}
    print(f"params {params}  fit {fit_seconds:.0f} s  {summary.get('message', '')}")

    groups = cohort.site_groups
    other = [g for g in groups if g != model.reference_site_]
    result = {"params": params, "fit_seconds": fit_seconds, "learning": summary.get("message")}
    directions = [(model.reference_site_, True)] + ([(other[0], False)] if len(other) == 1 else [])
    for target_group, to_reference in directions:
        target_site = sorted(s.site for s in cohort if s.group == target_group)[0]
        started = time.perf_counter()
        sd, closed = measure(model, cohort, counterfactuals, target_group, target_site, args.eval, 0, to_reference)
        seconds = time.perf_counter() - started
        print(
            f"towards {target_group}: noise SD orig {sd.sd_orig.median():.3f} gan {sd.sd_gan.median():.3f} "
            f"cf {sd.sd_cf.median():.3f}  moved {sd.moved.median():+.2f}  "
            f"checkerboard share {sd.checkerboard.median():.2f}  ({seconds:.0f} s)"
        )
        print("  distance closed: " + "  ".join(f"{k} {v:+.2f}" for k, v in closed.items()))
        result[f"towards_{target_group}"] = {
            "sd_orig": float(sd.sd_orig.median()),
            "sd_gan": float(sd.sd_gan.median()),
            "sd_cf": float(sd.sd_cf.median()),
            "moved": float(sd.moved.median()),
            "checkerboard": float(sd.checkerboard.median()),
            "closed": closed,
        }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
