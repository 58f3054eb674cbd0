#!/usr/bin/env python3
"""Writes the training set as a 640-pixel camera delivers it, for the grid detector's training.

    python scripts/camera-scale.py ../shared/fixtures/train target/grid/camera

The training images are at most 416 px on their longer side; the appliance's cameras deliver 640x480 and more,
which a JPEG camera decodes at 1/4 or 1/8 scale (block averages, camera::scaled). Features computed on a 416 px
image (decoded at full or 1/2 scale) are sharper than a camera's, so a scorer fitted on them misjudges camera
frames. Each image is resized (bicubic) so its longer side is 640 px and re-encoded as JPEG quality 85, then the
features come from the same decode path a camera uses. Labels and scenes are unchanged.
"""

import csv
import os
import shutil
import sys

from PIL import Image

LONG_SIDE = 640


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        im = Image.open(os.path.join(src, r["file"])).convert("RGB")
        w, h = im.size
        s = LONG_SIDE / max(w, h)
        im.resize((round(w * s), round(h * s)), Image.BICUBIC).save(os.path.join(dst, r["file"]), quality=85)
    shutil.copy(os.path.join(src, "labels.csv"), os.path.join(dst, "labels.csv"))
    print(f"{len(rows)} images at {LONG_SIDE} px in {dst}")


if __name__ == "__main__":
    sys.exit(main())
