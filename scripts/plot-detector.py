#!/usr/bin/env python3
"""Draws recall against fpr and against hard-negative fpr for per-image score files (docs/detector-curves.svg).

    python scripts/plot-detector.py --curve "NAME=scores.csv[@THRESHOLD]" ... --out docs/detector-curves.svg

A score file is what `ember-tools eval frames --scores` writes (file,fire,smoke,hard_negative,score); the
training script's CV file has the same columns. `@THRESHOLD` marks the shipped operating point on the curve.
"""

import argparse
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["fire"]) or int(r["smoke"]) for r in rows])
    hard = np.array([int(r["hard_negative"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    return y, hard, s


def curve(y, hard, s, negatives):
    pts = []
    for t in np.concatenate([[np.inf], np.unique(s)[::-1]]):
        det = s >= t
        pts.append((det[negatives].mean() if negatives.any() else 0.0, det[y == 1].mean()))
    return np.array(pts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--curve", action="append", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for spec in a.curve:
        name, rest = spec.split("=", 1)
        path, _, thr = rest.partition("@")
        y, hard, s = load(path)
        for ax, neg in zip(axes, [y == 0, (y == 0) & (hard == 1)]):
            c = curve(y, hard, s, neg)
            (line,) = ax.plot(c[:, 0], c[:, 1], label=f"{name} ({len(y)} images)")
            if thr:
                det = s >= float(thr)
                ax.plot([det[neg].mean()], [det[y == 1].mean()], "o", color=line.get_color())
    for ax, xl in zip(axes, ["false-positive rate (all negatives)", "false-positive rate (hard negatives)"]):
        ax.set_xlabel(xl)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall (fire or smoke)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Single-frame detection: dots mark the shipped operating points")
    fig.tight_layout()
    fig.savefig(a.out, metadata={"Date": None})
    print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
