"""A paired real-data cohort: every real STS scan, and the same acquisition post-filtered as a second "site".

Each of the 51 FDG-PET scans of the IBSI 1 STS data keeps its own site (its voxel size) and gets a partner
at site ``SMOOTH``: the same SUV image with an extra isotropic Gaussian post-reconstruction filter
(``--fwhm`` mm, default 6) -- what reconstructing one acquisition with a smoother protocol does to it, as
Budapest's two reconstructions of one acquisition in Haberl et al. Both scans share a ``pair_id`` (the
subject id), so ``harmkit bench`` can score every method against the partner scan (fidelity), and an
``oracle`` row replaces each scan by its partner.

    python benchmarks/real_pairs.py --data PATH/TO/ibsi1-pet --out /tmp/pairs
    harmkit bench --cohort /tmp/pairs/manifest.csv --voi lesion --methods combat,histmatch --reference SMOOTH \\
        --out /tmp/pairs/bench

The partner is derived from the same data, not a second scanner: read the figures as a check that the bench
measures fidelity on real images, with a known, purely resolution-type site effect.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import SimpleITK as sitk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with STS_xxx/PET_image.nii.gz and PET_mask.nii.gz")
    parser.add_argument("--out", required=True, help="new folder for the partner images and manifest.csv")
    parser.add_argument("--fwhm", type=float, default=6.0, help="extra Gaussian post-filter of the partner (mm)")
    args = parser.parse_args()
    data, out = Path(args.data).resolve(), Path(args.out)
    (out / "smooth").mkdir(parents=True, exist_ok=False)
    rows = []
    for folder in sorted(p for p in data.iterdir() if (p / "PET_image.nii.gz").is_file()):
        image_path, mask_path = folder / "PET_image.nii.gz", folder / "PET_mask.nii.gz"
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
        site = f"{image.GetSpacing()[0]:.3f}mm"
        smooth = sitk.SmoothingRecursiveGaussian(image, args.fwhm / 2.3548)
        target = out / "smooth" / f"{folder.name}.nii.gz"
        sitk.WriteImage(smooth, str(target), True)
        rows.append([f"{folder.name}", site, str(image_path), str(mask_path), folder.name])
        rows.append([f"{folder.name}-smooth", "SMOOTH", str(target), str(mask_path), folder.name])
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "site", "image", "mask_lesion", "pair_id"])
        writer.writerows(rows)
    print(f"{len(rows)} scans ({len(rows) // 2} pairs) in {out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
