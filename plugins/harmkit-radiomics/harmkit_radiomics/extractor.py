"""The ``radiomics`` feature extractor: pyradiomics with a documented PET default.

Default (``RadiomicsExtractor()``), the 93 IBSI-compliant features of
Haberl et al. 2024 on SUV images:

* feature classes firstorder (18), glcm (24), glrlm (16), glszm (16),
  gldm (14), ngtdm (5): every non-deprecated feature of each class;
* fixed bin width of 0.25 SUV (``binWidth``);
* image resampled with a B-spline and mask with nearest neighbour to 3 mm
  isotropic voxels (``resampledPixelSpacing``), after cropping to the mask
  with a 5-voxel margin;
* no intensity shift (``voxelArrayShift = 0``), no normalisation, 3D
  texture matrices with distance 1, symmetric GLCM, GLDM alpha 0.

Feature names are ``<class>_<Feature>`` (``glcm_Contrast``); features of
other image types keep pyradiomics' prefix (``wavelet-LLH_glcm_Contrast``).
Any pyradiomics setting can be given through ``extra_settings``, other classes
through ``classes`` (``{"shape": None}`` for all shape features, or a list
of feature names), other image types through ``image_types``, and a complete
pyradiomics parameter file through ``params_file`` (which then defines
everything: settings, image types and enabled features).

pyradiomics is imported on first use only, so listing plugins stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from harmkit.errors import HarmkitError
from harmkit.interfaces import FeatureExtractor
from harmkit.toolkit import same_geometry

PLUGIN_VERSION = "0.1.0"

#: The feature classes of the paper and their feature counts (93 in all).
PAPER_FEATURE_COUNTS = {
    "firstorder": 18,
    "glcm": 24,
    "glrlm": 16,
    "glszm": 16,
    "gldm": 14,
    "ngtdm": 5,
}
DEFAULT_CLASSES = tuple(PAPER_FEATURE_COUNTS)

#: Default settings for PET in SUV (pyradiomics names). See docs/features.md.
DEFAULT_BIN_WIDTH = 0.25
DEFAULT_SPACING = (3.0, 3.0, 3.0)
BASE_SETTINGS: dict[str, Any] = {
    "interpolator": "sitkBSpline",
    "padDistance": 5,
    "voxelArrayShift": 0,
    "normalize": False,
    "label": 1,
    "force2D": False,
    "distances": [1],
    "symmetricalGLCM": True,
    "gldm_a": 0,
    "minimumROIDimensions": 1,
    "correctMask": False,
    "additionalInfo": False,
}

_INTERPOLATORS = {
    "sitkBSpline",
    "sitkLinear",
    "sitkNearestNeighbor",
    "sitkBSpline3",
    "sitkGaussian",
    "sitkLanczosWindowedSinc",
    "sitkCosineWindowedSinc",
    "sitkWelchWindowedSinc",
    "sitkHammingWindowedSinc",
    "sitkBlackmanWindowedSinc",
}


def quiet_pyradiomics() -> None:
    """Silence pyradiomics' console messages (its logger writes warnings to stderr by default)."""
    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.ERROR)
    for handler in logger.handlers:
        handler.setLevel(logging.ERROR)


def _pyradiomics():
    quiet_pyradiomics()
    with warnings.catch_warnings():
        # pyradiomics loads its feature modules with the deprecated importlib load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        import radiomics
        from radiomics import featureextractor

        radiomics.getFeatureClasses()
        radiomics.getImageTypes()

    quiet_pyradiomics()  # importing radiomics installs its own handler
    radiomics.setVerbosity(logging.ERROR)
    return radiomics, featureextractor


def pyradiomics_version() -> str:
    """The installed pyradiomics version (e.g. ``"3.0.1"``)."""
    try:
        from importlib.metadata import version

        return version("pyradiomics")
    except Exception:  # pragma: no cover
        radiomics, _ = _pyradiomics()
        return str(radiomics.__version__).lstrip("v")


class RadiomicsExtractor(FeatureExtractor):
    """IBSI radiomics features computed by pyradiomics (default: the paper's 93).

    Parameters
    ----------
    bin_width : float
        Fixed bin width in SUV (pyradiomics ``binWidth``); default 0.25.
    bin_count : int, optional
        Fixed bin number instead of a fixed width (``binCount``).
    resampled_spacing : tuple of 3 floats or None
        Isotropic (or any) voxel size in mm to resample to; ``None`` keeps
        the native grid. Default (3, 3, 3).
    interpolator : str
        SimpleITK interpolator for the image (the mask always uses nearest
        neighbour); default ``"sitkBSpline"``.
    classes : list of class names, or {class: [feature names] or None}
        Feature classes to compute; default the paper's six classes, every
        non-deprecated feature of each.
    image_types : {image type: settings}
        pyradiomics image types; default ``{"Original": {}}``. Features of
        other image types are prefixed (``wavelet-LLH_glcm_Contrast``).
    extra_settings : dict
        Further pyradiomics settings (pyradiomics names, e.g.
        ``{"padDistance": 10}``); they override the defaults above.
    params_file : path, optional
        A pyradiomics parameter file (YAML/JSON). When given, it defines every
        setting, image type and enabled feature, and the other parameters are
        ignored.
    """

    name = "radiomics"
    description = "IBSI radiomics (pyradiomics): 93 first-order and texture features, PET defaults in SUV"

    def __init__(
        self,
        bin_width: float = DEFAULT_BIN_WIDTH,
        bin_count: int | None = None,
        resampled_spacing: tuple[float, float, float] | None = DEFAULT_SPACING,
        interpolator: str = "sitkBSpline",
        classes: Any = DEFAULT_CLASSES,
        image_types: Mapping[str, Any] | None = None,
        extra_settings: Mapping[str, Any] | None = None,
        params_file: str | os.PathLike | None = None,
    ):
        self.bin_width = bin_width
        self.bin_count = bin_count
        self.resampled_spacing = resampled_spacing
        self.interpolator = interpolator
        self.classes = classes
        self.image_types = image_types
        self.extra_settings = extra_settings
        self.params_file = params_file

    def set_params(self, **params: Any) -> "RadiomicsExtractor":
        super().set_params(**params)
        for cached in ("_engine_cache", "_config", "_classes"):
            self.__dict__.pop(cached, None)
        return self

    # -- configuration ----------------------------------------------------------
    def _configuration(self) -> dict[str, Any]:
        """Settings, image types and enabled features, as pyradiomics will use them."""
        cached = self.__dict__.get("_config")
        if cached is not None:
            return cached
        if self.params_file is not None:
            config = self._configuration_from_file(Path(self.params_file))
        else:
            settings = dict(BASE_SETTINGS)
            settings["interpolator"] = self.interpolator
            if self.interpolator not in _INTERPOLATORS:
                raise HarmkitError(
                    f"radiomics: interpolator {self.interpolator!r} unknown; use one of "
                    f"{', '.join(sorted(_INTERPOLATORS))}"
                )
            if self.bin_count is not None:
                if int(self.bin_count) < 2:
                    raise HarmkitError(f"radiomics: bin_count={self.bin_count} must be at least 2")
                settings["binCount"] = int(self.bin_count)
            else:
                if not self.bin_width or float(self.bin_width) <= 0:
                    raise HarmkitError(f"radiomics: bin_width={self.bin_width} must be a positive number of SUV")
                settings["binWidth"] = float(self.bin_width)
            if self.resampled_spacing is not None:
                spacing = [float(s) for s in np.broadcast_to(np.asarray(self.resampled_spacing, float), (3,))]
                if min(spacing) <= 0:
                    raise HarmkitError(f"radiomics: resampled_spacing={self.resampled_spacing} must be positive (mm)")
                settings["resampledPixelSpacing"] = spacing
            settings.update(dict(self.extra_settings or {}))
            config = {
                "setting": settings,
                "imageType": dict(self.image_types) if self.image_types else {"Original": {}},
                "featureClass": _enabled_features(self.classes),
            }
        self.__dict__["_config"] = config
        return config

    def _configuration_from_file(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise HarmkitError(f"radiomics: parameter file not found: {path}")
        import yaml

        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise HarmkitError(f"radiomics: {path} is not a valid YAML/JSON parameter file ({exc})") from None
        if not isinstance(document, dict):
            raise HarmkitError(f"radiomics: {path} must hold a mapping with 'setting', 'imageType' and 'featureClass'")
        unknown = set(document) - {
            "setting",
            "imageType",
            "featureClass",
            "voxelSetting",
        }
        if unknown:
            raise HarmkitError(
                f"radiomics: {path}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected setting, "
                "imageType, featureClass"
            )
        feature_class = document.get("featureClass")
        return {
            "setting": {**{"additionalInfo": False}, **(document.get("setting") or {})},
            "imageType": document.get("imageType") or {"Original": {}},
            "featureClass": _enabled_features(feature_class if feature_class else DEFAULT_CLASSES),
            "params_file": str(path),
            "params_file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }

    def _engine(self):
        engine = self.__dict__.get("_engine_cache")
        if engine is None:
            config = self._configuration()
            params = {k: config[k] for k in ("setting", "imageType", "featureClass")}
            engine = _engine_for(params)
            self.__dict__["_engine_cache"] = engine
        return engine

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_engine_cache", None)  # rebuilt in the worker
        return state

    # -- the FeatureExtractor interface -------------------------------------
    def settings(self) -> dict[str, Any]:
        """Every setting that affects the values: pyradiomics settings with its
        defaults filled in, image types, enabled features, versions."""
        engine = self._engine()
        config = self._configuration()
        out = {
            "extractor": self.name,
            "pyradiomics_version": pyradiomics_version(),
            "setting": _plain(dict(engine.settings)),
            "imageType": _plain(dict(engine.enabledImagetypes)),
            "featureClass": _plain({k: sorted(v) if v else v for k, v in engine.enabledFeatures.items()}),
        }
        for key in ("params_file", "params_file_sha256"):
            if key in config:
                out[key] = config[key]
        return out

    @property
    def version(self) -> str:
        return f"harmkit-radiomics {PLUGIN_VERSION}; pyradiomics {pyradiomics_version()}"

    def feature_classes(self) -> dict[str, str]:
        """``{feature name: class}`` for every feature :meth:`extract` returns, in its order."""
        cached = self.__dict__.get("_classes")
        if cached is not None:
            return dict(cached)
        config = self._configuration()
        image_types = list(config["imageType"])
        if image_types == ["Original"]:
            names = {}
            for cls, features in _expand_features(config["featureClass"]).items():
                for feature in features:
                    names[f"{cls}_{feature}"] = cls
        else:
            # derived image types (wavelet, LoG, ...) name their outputs at run time: probe once
            names = {name: _class_of(name) for name in self._extract_raw(*_probe_volume())}
        self.__dict__["_classes"] = names
        return dict(names)

    def extract(self, image: sitk.Image, mask: sitk.Image) -> dict[str, float]:
        """Compute the enabled features inside ``mask`` (non-zero voxels) of ``image`` (SUV).

        Raises :class:`~harmkit.errors.HarmkitError` for unusable input: NaN in
        the image, mask and image on different grids, an empty mask, a mask
        smaller than one resampled voxel or empty after resampling.
        """
        mask = _binary_mask(mask)
        self._check_input(image, mask)
        return self._extract_raw(image, mask)

    def _extract_raw(self, image: sitk.Image, mask: sitk.Image) -> dict[str, float]:
        engine = self._engine()
        try:
            result = engine.execute(image, mask, label=1)
        except ValueError as exc:
            raise HarmkitError(self._explain(str(exc), mask)) from None
        out: dict[str, float] = {}
        for key, value in result.items():
            if key.startswith("diagnostics_"):
                continue
            image_type, _, feature = key.partition("_")
            name = feature if image_type == "original" else key
            out[name] = float(np.asarray(value))
        return out

    # -- input checks ---------------------------------------------------------
    def _check_input(self, image: sitk.Image, mask: sitk.Image) -> None:
        if image.GetDimension() != 3 or mask.GetDimension() != 3:
            raise HarmkitError(
                f"expected 3D image and mask, got {image.GetDimension()}D image and {mask.GetDimension()}D mask"
            )
        if not same_geometry(image, mask):
            raise HarmkitError(
                "mask and image are on different grids "
                f"(image size {image.GetSize()} spacing {_fmt(image.GetSpacing())} origin {_fmt(image.GetOrigin())}; "
                f"mask size {mask.GetSize()} spacing {_fmt(mask.GetSpacing())} origin {_fmt(mask.GetOrigin())}); "
                "resample the mask onto the image grid (nearest neighbour)"
            )
        mask_array = sitk.GetArrayViewFromImage(mask)
        voxels = int(np.count_nonzero(mask_array))
        if voxels == 0:
            raise HarmkitError("the mask is empty (no voxel inside the VOI); check the segmentation")
        values = sitk.GetArrayViewFromImage(image)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise HarmkitError(
                f"the image contains {bad} NaN or infinite voxel(s); replace them (e.g. by 0 SUV) before extraction"
            )
        spacing = self._configuration()["setting"].get("resampledPixelSpacing")
        if spacing:
            voi_mm3 = voxels * float(np.prod(image.GetSpacing()))
            target_mm3 = float(np.prod([s if s else n for s, n in zip(spacing, image.GetSpacing())]))
            if voi_mm3 < target_mm3:
                raise HarmkitError(
                    f"the mask is smaller than one resampled voxel ({voxels} voxel(s) = {voi_mm3:.3g} mm³ < "
                    f"{_fmt(spacing)} mm = {target_mm3:.3g} mm³); use a larger VOI or a finer resampled_spacing"
                )
        elif voxels < 2:
            raise HarmkitError("the mask holds a single voxel; texture features need at least two")

    def _explain(self, message: str, mask: sitk.Image) -> str:
        spacing = self._configuration()["setting"].get("resampledPixelSpacing")
        first = message.strip().splitlines()[0] if message.strip() else "invalid input"
        if (
            any(
                t in first
                for t in (
                    "not present",
                    "No labels",
                    "Size of the ROI",
                    "single voxel",
                    "1 segmented voxel",
                )
            )
            and spacing
        ):
            return (
                f"the mask is empty or a single voxel after resampling to {_fmt(spacing)} mm ({first}); "
                "use a larger VOI or a finer resampled_spacing"
            )
        if "geometry" in first.lower():
            return f"mask and image geometry do not match ({first}); resample the mask onto the image grid"
        return f"pyradiomics rejected the input: {first}"


_ENGINES: dict[str, Any] = {}


def _engine_for(params: dict[str, Any]):
    """One pyradiomics extractor per configuration and process: building one
    validates the parameters and costs ~0.1 s, too much to repeat per scan in
    pool workers, which receive a fresh copy of the harmkit extractor with each task."""
    import json

    key = json.dumps(params, sort_keys=True, default=str)
    engine = _ENGINES.get(key)
    if engine is None:
        _, featureextractor = _pyradiomics()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # pykwalify's load_module()
                engine = featureextractor.RadiomicsFeatureExtractor(params)
        except Exception as exc:  # pyradiomics validates the parameters (pykwalify)
            raise HarmkitError(f"radiomics: invalid pyradiomics parameters ({exc})") from None
        quiet_pyradiomics()
        _ENGINES[key] = engine
    return engine


def _binary_mask(mask: sitk.Image) -> sitk.Image:
    """Any non-zero label counts as inside (label 1)."""
    if mask.GetPixelID() == sitk.sitkUInt8:
        array = sitk.GetArrayViewFromImage(mask)
        if array.max(initial=0) <= 1:
            return mask
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    return binary


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _all_feature_names(cls: str) -> list[str]:
    """Non-deprecated features of pyradiomics class ``cls`` in pyradiomics' order."""
    _pyradiomics()
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    if cls not in classes:
        raise HarmkitError(f"radiomics: unknown feature class {cls!r}; pyradiomics has {', '.join(sorted(classes))}")
    return [name for name, deprecated in classes[cls].getFeatureNames().items() if not deprecated]


def _enabled_features(classes: Any) -> dict[str, list[str] | None]:
    """Normalise ``classes`` (list of names, or {class: features or None}) to pyradiomics' featureClass."""
    if isinstance(classes, str):
        classes = [classes]
    if isinstance(classes, Mapping):
        enabled = {str(k): (list(v) if v else None) for k, v in classes.items()}
    else:
        enabled = {str(c): None for c in classes}
    if not enabled:
        raise HarmkitError(
            "radiomics: no feature class enabled; give at least one of firstorder, glcm, glrlm, glszm, gldm, ngtdm, "
            "shape"
        )
    for cls, features in enabled.items():
        if features is not None:
            available = _all_feature_names(cls)
            _pyradiomics()
            from radiomics import getFeatureClasses

            known = set(getFeatureClasses()[cls].getFeatureNames())
            unknown = [f for f in features if f not in known]
            if unknown:
                raise HarmkitError(
                    f"radiomics: class {cls} has no feature(s) {', '.join(unknown)}; available: {', '.join(available)}"
                )
        else:
            _all_feature_names(cls)  # validates the class name
    return enabled


def _expand_features(enabled: Mapping[str, Any]) -> dict[str, list[str]]:
    return {cls: (list(features) if features else _all_feature_names(cls)) for cls, features in enabled.items()}


def _class_of(name: str) -> str:
    parts = name.split("_")
    return parts[-2] if len(parts) >= 2 else "unknown"


def _probe_volume() -> tuple[sitk.Image, sitk.Image]:
    """A small deterministic volume used to discover feature names of derived image types."""
    rng = np.random.default_rng(0)
    array = rng.gamma(4.0, 0.5, size=(20, 20, 20)).astype(np.float32)
    mask = np.zeros(array.shape, np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((3.0, 3.0, 3.0))
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(image)
    return image, mask_image


def _plain(value: Any) -> Any:
    """JSON-friendly copy (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
