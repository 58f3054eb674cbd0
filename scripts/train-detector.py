#!/usr/bin/env python3
"""Trains the grid detector's scorer and writes src/detect/grid_weights.rs.

Reproducible: deterministic models (no random state that matters), features from the Rust detector itself:

    cargo build --release --bins
    ./target/release/ember-tools eval frames ../shared/fixtures/frames --dump-features target/feat.csv
    target/pyenv/bin/python scripts/train-detector.py target/feat.csv --out src/detect/grid_weights.rs

(`scripts/bench-detect-opencv.sh` creates target/pyenv; numpy and scikit-learn are all this needs.)

Reports grouped cross-validation: leave-scene-out (frames of one video share a group) with the operating threshold
chosen on the training folds only, and leave-one-source-out. The final model is fitted on all rows; its threshold
is the lowest score meeting the false-positive targets on the dev rows, and the intercept is shifted so that
threshold maps to a score of 0.5.
"""

import argparse
import csv
import math
import re
import sys

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

FPR_TARGET = 0.17
HARD_FPR_TARGET = 0.22


def scene(name):
    stem = name.rsplit(".", 1)[0]
    if stem.startswith("embereye_"):
        return stem.split("_frame")[0]
    m = re.match(r"(.*_mp4)-\d+", stem)
    if m:
        return m.group(1)
    return stem


def source(name):
    return name.split("_", 1)[0]


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    names = [k for k in rows[0].keys() if k not in ("file", "fire", "smoke", "hard_negative")]
    X = np.array([[float(r[k]) for k in names] for r in rows])
    y = np.array([int(r["fire"]) or int(r["smoke"]) for r in rows])
    fire = np.array([int(r["fire"]) for r in rows])
    smoke = np.array([int(r["smoke"]) for r in rows])
    hard = np.array([int(r["hard_negative"]) for r in rows])
    files = [r["file"] for r in rows]
    return names, X, y, fire, smoke, hard, files


class Model:
    """Standardised linear term (L2 logistic) plus depth-1 boosted stumps fitted on its residual margin."""

    def __init__(self, c, stumps, lr):
        self.c, self.n_stumps, self.lr = c, stumps, lr

    def fit(self, X, y):
        self.mean = X.mean(0)
        self.scale = X.std(0) + 1e-6
        Z = (X - self.mean) / self.scale
        self.lin = LogisticRegression(C=self.c, max_iter=5000).fit(Z, y)
        self.gbm = None
        if self.n_stumps:
            self.gbm = GradientBoostingClassifier(
                n_estimators=self.n_stumps, learning_rate=self.lr, max_depth=1, subsample=1.0, random_state=0,
                min_samples_leaf=6,
            )
            self.gbm.fit(X, y)
        return self

    def raw(self, X):
        Z = (X - self.mean) / self.scale
        r = self.lin.decision_function(Z)
        if self.gbm is not None:
            r = 0.5 * r + 0.5 * self.gbm.decision_function(X)
        return r

    def export(self):
        """(coef, intercept, stumps) with the 0.5 mixing folded in."""
        w = 0.5 if self.gbm is not None else 1.0
        coef = w * self.lin.coef_[0]
        intercept = w * float(self.lin.intercept_[0])
        stumps = []
        if self.gbm is not None:
            # GradientBoostingClassifier: raw = init_log_odds + lr * sum(tree values).
            p = float(np.clip(self.gbm.init_.class_prior_[1], 1e-6, 1 - 1e-6))
            intercept += w * math.log(p / (1 - p))
            for est in self.gbm.estimators_[:, 0]:
                t = est.tree_
                if t.node_count < 3:
                    intercept += w * self.lr * float(t.value[0][0][0])
                    continue
                k, thr = int(t.feature[0]), float(t.threshold[0])
                left, right = float(t.value[t.children_left[0]][0][0]), float(t.value[t.children_right[0]][0][0])
                stumps.append((k, thr, w * self.lr * left, w * self.lr * right))
        return coef, intercept, stumps


def rates(score, thr, y, fire, smoke, hard):
    det = score >= thr
    neg = y == 0
    r = lambda m: float(det[m].mean()) if m.any() else 0.0
    return dict(
        recall=r(y == 1), fire_recall=r(fire == 1), smoke_recall=r(smoke == 1), fpr=r(neg), hard_fpr=r(neg & (hard == 1))
    )


def pick_threshold(score, y, hard):
    """Lowest threshold whose fpr and hard_fpr meet the targets."""
    neg = y == 0
    for t in np.unique(score):
        det = score >= t
        fpr = det[neg].mean()
        hfpr = det[neg & (hard == 1)].mean() if (neg & (hard == 1)).any() else 0.0
        if fpr <= FPR_TARGET and hfpr <= HARD_FPR_TARGET:
            return float(t)
    return float(score.max()) + 1e-6


def cv(make, X, y, fire, smoke, hard, groups, n_splits):
    oof = np.zeros(len(y), dtype=bool)
    splits = GroupKFold(n_splits=n_splits).split(X, y, groups)
    for tr, te in splits:
        m = make().fit(X[tr], y[tr])
        thr = pick_threshold(m.raw(X[tr]), y[tr], hard[tr])
        oof[te] = m.raw(X[te]) >= thr
    return rates(oof.astype(float), 0.5, y, fire, smoke, hard)


def fmt(d):
    return ", ".join(f"{k} {v:.3f}" for k, v in d.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("--out")
    ap.add_argument("--c", type=float, default=0.3)
    ap.add_argument("--stumps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--drop", default="", help="comma-separated feature names to leave out")
    a = ap.parse_args()

    names, X, y, fire, smoke, hard, files = load(a.features)
    drop = set(filter(None, a.drop.split(",")))
    use = np.array([n not in drop for n in names])
    Xu = X * use  # dropped features become constant 0, so the exported vector keeps its length
    scenes = np.array([scene(f) for f in files])
    sources = np.array([source(f) for f in files])
    print(f"{len(y)} images, {y.sum()} positive, {len(set(scenes))} scenes, {len(set(sources))} sources")

    make = lambda: Model(a.c, a.stumps, a.lr)
    scene_cv = cv(make, Xu, y, fire, smoke, hard, scenes, 10)
    source_cv = cv(make, Xu, y, fire, smoke, hard, sources, len(set(sources)))
    print("grouped CV, leave-scene-out (10 folds):", fmt(scene_cv))
    print("grouped CV, leave-one-source-out:      ", fmt(source_cv))

    m = make().fit(Xu, y)
    raw = m.raw(Xu)
    thr = pick_threshold(raw, y, hard)
    print(f"dev (fitted on all rows), threshold raw {thr:.4f}:", fmt(rates(raw, thr, y, fire, smoke, hard)))

    if a.out:
        coef, intercept, stumps = m.export()
        coef = np.where(use, coef, 0.0)
        # Put the operating point at score 0.5; nudge below the boundary row so f32 rounding keeps it a hit.
        intercept -= thr - 1e-4
        check = (Xu - m.mean) / m.scale @ coef + intercept
        for k, t, l, r in stumps:
            check += np.where(Xu[:, k] <= t, l, r)
        assert np.allclose(check, raw - thr + 1e-4, atol=1e-6), "export does not reproduce the model"
        f32 = lambda v: f"{float(v):.9e}"
        arr = lambda v: "[" + ", ".join(f32(x) for x in v) + "]"
        with open(a.out, "w") as f:
            f.write("//! Generated by scripts/train-detector.py from the features `ember-tools eval frames --dump-features`\n")
            f.write("//! writes. Do not edit by hand; re-run the script (see docs/DETECTOR.md).\n")
            f.write(f"//! Grouped CV (leave-scene-out): {fmt(scene_cv)}.\n")
            f.write(f"//! Grouped CV (leave-one-source-out): {fmt(source_cv)}.\n")
            f.write(f"//! Settings: C {a.c}, {a.stumps} stumps, learning rate {a.lr}, dropped [{a.drop}].\n")
            f.write("#![allow(clippy::excessive_precision)]\n\n")
            f.write(f"pub const MEAN: [f32; {len(names)}] = {arr(m.mean)};\n")
            f.write(f"pub const SCALE: [f32; {len(names)}] = {arr(m.scale)};\n")
            f.write(f"pub const COEF: [f32; {len(names)}] = {arr(coef)};\n")
            f.write(f"pub const INTERCEPT: f32 = {f32(intercept)};\n")
            f.write("/// (feature, threshold, value if feature <= threshold, value otherwise), added to the raw score.\n")
            f.write("pub const STUMPS: &[(usize, f32, f32, f32)] = &[\n")
            for k, t, l, r in stumps:
                f.write(f"    ({k}, {f32(t)}, {f32(l)}, {f32(r)}),\n")
            f.write("];\n")
            f.write("/// Operating threshold on the score (the intercept is shifted so it is 0.5).\n")
            f.write("pub const THRESHOLD: f32 = 0.5;\n")
        print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
