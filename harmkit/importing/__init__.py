"""Import a DICOM tree as a cohort: PET series as SUV NIfTI, RTSTRUCT/SEG ROIs as masks, a manifest from headers.

>>> from harmkit.importing import import_dicom
>>> result = import_dicom("dicom/", "cohort/", rois=["GTV*=lesion"])     # doctest: +SKIP
>>> result.manifest                                                      # doctest: +SKIP
PosixPath('cohort/manifest.csv')

The rooms: :mod:`.index` reads every header once, :mod:`.plan` decides
which series become scans (site, subject, covariates, which ROI is which
mask) and collects every problem, :mod:`.masks` rasterizes RTSTRUCT
contours and reads SEG segments onto the PET grid, :mod:`.run` converts
and writes, complete or not at all. docs/dicom-import.md is the guide.
"""

from .run import ImportResult, import_dicom

__all__ = ["ImportResult", "import_dicom"]
