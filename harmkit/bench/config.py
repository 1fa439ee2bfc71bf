"""Options of ``harmkit bench``: one dataclass, filled from defaults, a TOML file and the command line.

Every option of the command line can be written in a TOML file given with
``--config``; options given on the command line win over the file::

    # bench.toml
    methods = "gan,combat,gan+combat"
    preset = "headneck"
    folds = 100
    test_size = 0.2
    seed = 0
    profile = "quick"
    fit_on = "train"          # or "all" (the paper's choice)
    reference = "all"
    site_groups = ["CHUM+HMR"]
    voi = "lesion"
    reference_voi = "reference"
    out = "harmkit-runs/bench-headneck"
    nan_to_zero = false        # true: read NaN/infinite voxels as 0 instead of refusing the scan

    [params.cyclegan]          # constructor parameters of a method's plugin
    steps = 300
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HarmkitError

PROFILES = ("quick", "paper")
#: What a bench run writes into --out, replacing what is there.
REPORT_FILES = ("figures", "tables", "report.md", "report.html", "results.json")
PRESETS = ("headneck", "lung")

# Plugin parameters per profile. "quick" keeps the default bench within minutes
# on two CPU cores; "paper" leaves every plugin at its own defaults (the full
# configurations documented by each plugin). Profile parameters a plugin
# does not know are dropped (see harmkit.bench.stages.plugin_params) so that a plugin
# version that lacks one does not break the bench; parameters the user gives
# (--param, [params.*]) are checked strictly (harmkit.plugins.check_plugin_params).
PROFILE_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "cyclegan": {"profile": "quick"},
    },
    "paper": {
        "cyclegan": {"profile": "paper"},
    },
}


@dataclass
class BenchConfig:
    """Every option of a bench run (see ``harmkit bench --help``)."""

    methods: str = "gan,combat,gan+combat"
    cohort: str | None = None
    preset: str = "headneck"
    reference: str = "all"
    site_groups: list[str] = field(default_factory=list)
    voi: str = "lesion"
    reference_voi: str = "reference"
    folds: int = 100
    test_size: float = 0.2
    seed: int = 0
    profile: str = "quick"
    jobs: int | None = None
    scheduler: str | None = None
    out: str | None = None
    cache_dir: str | None = None
    fit_on: str = "train"
    subjects_per_site: int | None = None  # simulated cohorts only: override the preset's size
    extractor: str = "radiomics"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: bool = True
    nan_to_zero: bool = False

    # -- derived -----------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        return (
            Path(self.out)
            if self.out
            else Path("harmkit-runs")
            / f"bench-{self.preset if not self.cohort else Path(self.cohort).parent.name or 'cohort'}"
        )

    @property
    def cache_path(self) -> Path:
        """``--cache-dir``, else the one cache of every command (:func:`harmkit.cache.default_cache_dir`)."""
        from ..cache import default_cache_dir

        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def plugin_params(self, name: str) -> dict[str, Any]:
        merged = dict(PROFILE_PARAMS.get(self.profile, {}).get(name, {}))
        merged.update(self.params.get(name, {}))
        return merged

    def validate(self) -> "BenchConfig":
        if self.profile not in PROFILES:
            raise HarmkitError(f"--profile {self.profile!r}: expected one of {', '.join(PROFILES)}")
        if self.cohort is None and self.preset not in PRESETS:
            raise HarmkitError(
                f"--preset {self.preset!r}: expected one of {', '.join(PRESETS)} (or give --cohort MANIFEST)"
            )
        if self.fit_on not in ("train", "all"):
            raise HarmkitError(
                f"--fit-on {self.fit_on!r}: expected 'train' (leakage-free, default) or 'all' (the paper's choice)"
            )
        if int(self.folds) < 1:
            raise HarmkitError(f"--folds {self.folds}: expected a positive number of Monte Carlo splits, e.g. 100")
        if not 0 < float(self.test_size) < 1:
            raise HarmkitError(f"--test-size {self.test_size}: expected a fraction between 0 and 1, e.g. 0.2")
        if self.cohort is not None and not Path(self.cohort).is_file():
            raise HarmkitError(
                f"--cohort {self.cohort}: manifest not found; give the path of a manifest CSV (see docs/real-data.md)"
            )
        from ..plugins import check_plugin_params

        self.params = check_plugin_params(self.params or {})
        self._check_out_dir()
        self.folds = int(self.folds)
        self.test_size = float(self.test_size)
        self.seed = int(self.seed)
        return self

    def _check_out_dir(self) -> None:
        """Refuse an --out whose report files (figures/, tables/, report.*, results.json) a bench did not write."""
        import json

        out = self.out_dir
        if not out.exists():
            return
        if not out.is_dir():
            raise HarmkitError(f"--out {out}: exists and is a file; choose a folder for the bench outputs")
        replaced = [out / name for name in REPORT_FILES if (out / name).exists()]
        if not replaced:
            return
        try:
            ours = json.loads((out / "results.json").read_text()).get("format") == "harmkit-bench/1"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise HarmkitError(
                f"--out {out}: holds {replaced[0].name}, which a bench run would replace, but the folder is not the "
                f"output of a harmkit bench (no harmkit results.json); choose another --out, or move those files away"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def site_group_map(self, sites: list[str]) -> dict[str, str]:
        """``["CHUM+HMR"]`` -> ``{"CHUM": "CHUM-HMR", "HMR": "CHUM-HMR"}``; unknown sites fail."""
        mapping: dict[str, str] = {}
        for spec in self.site_groups:
            members = [m.strip() for m in str(spec).split("+") if m.strip()]
            unknown = [m for m in members if m not in sites]
            if unknown:
                raise HarmkitError(
                    f"--site-groups {spec!r}: unknown site(s) {', '.join(unknown)}; sites in the cohort: "
                    f"{', '.join(sites)}"
                )
            for member in members:
                mapping[member] = "-".join(members)
        return mapping


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any]) -> BenchConfig:
    """Defaults, then the TOML file ``path`` (if any), then ``overrides`` that are not None."""
    values: dict[str, Any] = {}
    if path:
        import tomllib

        path = Path(path)
        if not path.is_file():
            raise HarmkitError(f"--config {path}: file not found")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise HarmkitError(f"--config {path}: not valid TOML ({exc})") from None
        values = {k.replace("-", "_"): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HarmkitError(
            f"--config {path}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    for key, value in overrides.items():
        if value is not None and value != ():
            values[key] = value
    if isinstance(values.get("site_groups"), str):
        values["site_groups"] = [s for s in values["site_groups"].split(",") if s]
    if isinstance(values.get("methods"), (list, tuple)):
        values["methods"] = ",".join(values["methods"])
    return BenchConfig(**values).validate()
