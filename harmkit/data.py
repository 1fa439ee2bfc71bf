"""The data model: a :class:`Scan` (one PET image with its masks and metadata)
and a :class:`Cohort` (a list of scans, read from and written to a manifest by
:mod:`harmkit.manifest`, which imports this module and never the reverse).

Images are SimpleITK images, so geometry (spacing, origin, direction) always
travels with the voxels. A scan read from a manifest holds file paths and
loads its image only when asked, so a cohort larger than memory can be
listed, validated and processed scan by scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from .errors import HarmkitError

ImageLike = "sitk.Image | Path"


@dataclass
class Scan:
    """One PET scan: subject, site, SUV image, named masks, outcome and covariates.

    ``image`` and each entry of ``masks`` is either a :class:`SimpleITK.Image`
    or a path loaded on demand by :meth:`load_image` / :meth:`load_mask`.
    ``site_group`` pools sites that share a scanner and protocol (the paper
    merged CHUM and HMR); it defaults to ``site``. ``nan_to_zero`` makes
    :meth:`load_image` read NaN and infinite voxels as 0 (set by the
    ``--nan-to-zero`` option; by default such scans are refused by
    :mod:`harmkit.validation`). ``pair_id`` links scans of one subject or
    phantom at different site groups (traveling subject, test-retest,
    one acquisition reconstructed twice): see :mod:`harmkit.pairs`.
    """

    subject_id: str
    site: str
    image: Any
    masks: dict[str, Any] = field(default_factory=dict)
    outcome: int | None = None
    covariates: dict[str, Any] = field(default_factory=dict)
    site_group: str | None = None
    row: int | None = None  # 1-based data row in the manifest, for messages
    nan_to_zero: bool = False
    pair_id: str | None = None

    @property
    def group(self) -> str:
        """The site group this scan belongs to (``site`` unless a group was given)."""
        return self.site_group or self.site

    @property
    def label(self) -> str:
        """How messages name this scan: subject, site and manifest row."""
        where = f", manifest row {self.row}" if self.row is not None else ""
        return f"subject {self.subject_id!r} (site {self.site}{where})"

    def load_image(self) -> sitk.Image:
        """The SUV image as a float32 SimpleITK image."""
        from .imageio import read_image

        if isinstance(self.image, sitk.Image):
            if self.nan_to_zero:
                from .imageio import zero_non_finite

                return zero_non_finite(self.image)
            return self.image
        if self.image is None or str(self.image) == "":
            raise HarmkitError(f"{self.label} has no image; fill its 'image' cell in the manifest")
        return read_image(self.image, what=f"image of {self.label}", nan_to_zero=self.nan_to_zero)

    def load_mask(self, name: str) -> sitk.Image:
        """The mask ``name`` as a UInt8 SimpleITK image on the image's grid."""
        from .imageio import read_mask

        if name not in self.masks:
            available = ", ".join(sorted(self.masks)) or "none"
            raise HarmkitError(
                f"{self.label} has no mask {name!r} (masks: {available}); add a 'mask_{name}' column to the manifest"
            )
        mask = self.masks[name]
        if isinstance(mask, sitk.Image):
            return mask
        return read_mask(mask, what=f"mask {name!r} of {self.label}")

    def with_image(self, image: sitk.Image) -> "Scan":
        """A copy of this scan with ``image`` in place of its own (masks and metadata kept)."""
        return replace(self, image=image, masks=dict(self.masks), covariates=dict(self.covariates))


class Cohort(Sequence[Scan]):
    """An ordered list of scans with the manifest they came from.

    ``metadata`` holds anything a producer of the cohort wants to pass on
    (the simulator's ground truth, for instance).
    """

    def __init__(
        self,
        scans: Sequence[Scan],
        root: Path | None = None,
        manifest: Path | None = None,
        metadata: dict | None = None,
    ):
        self.scans = list(scans)
        self.root = Path(root) if root is not None else None
        self.manifest = Path(manifest) if manifest is not None else None
        self.metadata = dict(metadata or {})

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Cohort(self.scans[index], self.root, self.manifest, self.metadata)
        return self.scans[index]

    def __len__(self) -> int:
        return len(self.scans)

    def __iter__(self) -> Iterator[Scan]:
        return iter(self.scans)

    def __repr__(self) -> str:
        return f"Cohort({len(self)} scans, sites={self.sites})"

    @property
    def sites(self) -> list[str]:
        """Site names in order of first appearance."""
        return list(dict.fromkeys(s.site for s in self.scans))

    @property
    def site_groups(self) -> list[str]:
        """Site-group names in order of first appearance."""
        return list(dict.fromkeys(s.group for s in self.scans))

    @property
    def mask_names(self) -> list[str]:
        return sorted({name for s in self.scans for name in s.masks})

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.scans]

    def input_files(self) -> list[Path]:
        """Every file or DICOM folder this cohort reads: the manifest, images and masks (in-memory ones left out)."""
        paths = [self.manifest] if self.manifest is not None else []
        for scan in self.scans:
            for value in (scan.image, *scan.masks.values()):
                if isinstance(value, (str, os.PathLike)) and str(value):
                    paths.append(Path(value))
        return list(dict.fromkeys(paths))

    def filter(self, predicate: Callable[[Scan], bool]) -> "Cohort":
        return Cohort(
            [s for s in self.scans if predicate(s)],
            self.root,
            self.manifest,
            self.metadata,
        )

    def by_group(self, group: str) -> "Cohort":
        return self.filter(lambda s: s.group == group)

    def regroup(self, groups: dict[str, str]) -> "Cohort":
        """A copy whose scans' ``site_group`` is set from ``{site: group}`` (sites not named keep theirs)."""
        scans = [replace(s, site_group=groups.get(s.site, s.site_group)) for s in self.scans]
        return Cohort(scans, self.root, self.manifest, self.metadata)

    def get(self, subject_id: str) -> Scan:
        for scan in self.scans:
            if scan.subject_id == subject_id:
                return scan
        raise HarmkitError(f"no subject {subject_id!r} in {self.manifest or 'the cohort'}")
