#!/usr/bin/env python3
"""Adds synthetic hard negatives to the training set for what its real negatives lack.

The training set's negatives are mostly one construction-site source (orange helmets and vests): no sunsets, few
lamps and warm interiors, no fog or steam, no night (IR) frames. This writes, for each real negative, one altered
copy that keeps its label (negative) and its `scene` (so grouped cross-validation never splits an image from its
copy), plus brightness/contrast copies of a share of the positives. Deterministic (seeded).

    python scripts/augment-train.py ../shared/fixtures/train target/train-aug

Kinds (chosen per image in turn): `sunset` (a warm orange-to-yellow sky gradient over the top of the picture),
`lamp` (one to three warm light sources: a near-white core with an orange halo), `warm` (the whole scene lit by
tungsten light), `fog` (a low-frequency white haze, as fog or steam), `ir` (grey, as a night camera delivers).
"""

import csv
import os
import sys

import numpy as np
from PIL import Image, ImageFilter

KINDS = ["sunset", "lamp", "warm", "fog", "ir"]


def sunset(a, rng):
    h, w, _ = a.shape
    horizon = rng.uniform(0.35, 0.7)
    y = np.linspace(0, 1, h)[:, None, None]
    t = np.clip(y / horizon, 0, 1)
    top = np.array([rng.uniform(200, 255), rng.uniform(60, 120), rng.uniform(20, 70)])
    low = np.array([255, rng.uniform(170, 220), rng.uniform(80, 140)])
    sky = (1 - t) * top + t * low
    alpha = np.clip(1.2 - y / horizon, 0, 1) * rng.uniform(0.55, 0.85)
    return a * (1 - alpha) + sky * alpha


def lamp(a, rng):
    h, w, _ = a.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = a * rng.uniform(0.55, 0.85)
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.05, 0.7) * h
        r = rng.uniform(0.02, 0.08) * max(w, h)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)[..., None]
        core = np.clip(1.5 - d / r, 0, 1)
        halo = np.exp(-((d / (3.5 * r)) ** 2))
        warm = np.array([255, rng.uniform(140, 190), rng.uniform(40, 90)])
        out = out + halo * warm * rng.uniform(0.5, 0.9)
        out = out * (1 - core) + core * np.array([255, 248, rng.uniform(200, 235)])
    return out


def warm(a, rng):
    gain = np.array([rng.uniform(1.1, 1.3), rng.uniform(0.9, 1.0), rng.uniform(0.55, 0.75)])
    return a * gain * rng.uniform(0.9, 1.2)


def fog(a, rng):
    h, w, _ = a.shape
    small = rng.uniform(0, 1, (max(2, h // 40), max(2, w // 40)))
    noise = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))
    ) / 255.0
    alpha = (rng.uniform(0.35, 0.7) * (0.5 + noise))[..., None]
    haze = np.array([rng.uniform(215, 250)] * 3)
    return a * (1 - np.clip(alpha, 0, 0.9)) + haze * np.clip(alpha, 0, 0.9)


def ir(a, rng):
    g = a @ np.array([0.299, 0.587, 0.114])
    g = (g - g.mean()) * rng.uniform(1.0, 1.4) + g.mean() + rng.uniform(-10, 25)
    return np.repeat(g[..., None], 3, axis=2)


def jitter(a, rng):
    m = a.mean()
    return (a - m) * rng.uniform(0.75, 1.25) + m * rng.uniform(0.7, 1.25)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    rng = np.random.default_rng(20261207)
    with open(os.path.join(src, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    out = []
    neg_i = 0
    for i, r in enumerate(rows):
        positive = r["fire"] == "1" or r["smoke"] == "1"
        if positive and i % 3 != 0:
            continue
        a = np.asarray(Image.open(os.path.join(src, r["file"])).convert("RGB"), dtype=np.float64)
        if positive:
            kind, b = "jitter", jitter(a, rng)
        else:
            kind = KINDS[neg_i % len(KINDS)]
            neg_i += 1
            b = globals()[kind](a, rng)
        name = f"aug-{kind}_{r['file']}"
        Image.fromarray(np.clip(b, 0, 255).astype(np.uint8)).save(os.path.join(dst, name), quality=85)
        hard = r["hard_negative"] if positive else ("0" if kind == "ir" else "1")
        out.append(dict(r, file=name, hard_negative=hard, source_path=f"{kind} of {r['file']}"))
    # The real images too, so the folder is the whole training set for `eval frames --dump-features`.
    for r in rows:
        link = os.path.join(dst, r["file"])
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(src, r["file"])), link)
    with open(os.path.join(dst, "labels.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows + out)
    print(f"{len(out)} augmented images ({neg_i} negatives) + {len(rows)} real in {dst}")


if __name__ == "__main__":
    sys.exit(main())
