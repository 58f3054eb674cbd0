#!/usr/bin/env python3
"""Trains the grid detector's scorer on the training set and writes src/detect/grid_weights.rs.

Run it through scripts/train-detector.sh, which dumps the features with the appliance's own decode and detector
path (`ember-tools eval frames --dump-features`) and then calls:

    python scripts/train-detector.py --train target/grid/train.csv --train-labels ../shared/fixtures/train/labels.csv \
        --dev target/grid/dev.csv [--stress target/grid/aug.csv] --out src/detect/grid_weights.rs \
        --metrics models/grid-metrics.json --cv-scores target/grid/cv-scores.csv

* Fitted only on the training set (`../shared/fixtures/train`). The dev split (`../shared/fixtures/frames`) is
  scored once with the final model and reported; nothing is chosen on it.
* Settings are selected by grouped 5-fold cross-validation (GroupKFold on the `scene` column: frames of one video
  or image family never sit on both sides), by mean out-of-fold AUC.
* Calibration: a logistic (Platt) fit of the out-of-fold raw scores to the labels, folded into the exported
  weights, so the score is a probability of fire-or-smoke on the CV folds.
* Operating point: the lowest calibrated score at which the out-of-fold hard-negative false-positive rate is at most
  HARD_FPR_TARGET ("CV hard-negative fpr 0.10": a colour detector standing alone must keep false alarms rare;
  the CNN stage, where present, takes the recall back); it becomes `THRESHOLD`.
"""

import argparse
import csv
import json
import math
import sys

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

HARD_FPR_TARGET = 0.10
FOLDS = 5
# (C of the L2 logistic term, number of boosted stumps): the candidates CV chooses from.
GRID = [(0.3, 0), (0.3, 60), (0.3, 200), (1.0, 200), (1.0, 400)]
LEARNING_RATE = 0.1


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    names = [k for k in rows[0].keys() if k not in ("file", "fire", "smoke", "hard_negative")]
    X = np.array([[float(r[k]) for k in names] for r in rows])
    y = np.array([int(r["fire"]) or int(r["smoke"]) for r in rows])
    hard = np.array([int(r["hard_negative"]) for r in rows])
    fire = np.array([int(r["fire"]) for r in rows])
    smoke = np.array([int(r["smoke"]) for r in rows])
    return dict(names=names, X=X, y=y, hard=hard, fire=fire, smoke=smoke, files=[r["file"] for r in rows])


class Model:
    """Standardised linear term (L2 logistic) plus depth-1 boosted stumps, averaged in the raw (log-odds) domain."""

    def __init__(self, c, stumps):
        self.c, self.n_stumps = c, stumps

    def fit(self, X, y):
        self.mean = X.mean(0)
        self.scale = X.std(0) + 1e-6
        self.lin = LogisticRegression(C=self.c, max_iter=5000).fit((X - self.mean) / self.scale, y)
        self.gbm = None
        if self.n_stumps:
            self.gbm = GradientBoostingClassifier(
                n_estimators=self.n_stumps, learning_rate=LEARNING_RATE, max_depth=1, random_state=0, min_samples_leaf=6
            ).fit(X, y)
        return self

    def raw(self, X):
        r = self.lin.decision_function((X - self.mean) / self.scale)
        if self.gbm is not None:
            r = 0.5 * r + 0.5 * self.gbm.decision_function(X)
        return r

    def export(self):
        """(coef, intercept, stumps) reproducing `raw`, with the 0.5 mixing folded in."""
        w = 0.5 if self.gbm is not None else 1.0
        coef = w * self.lin.coef_[0]
        intercept = w * float(self.lin.intercept_[0])
        stumps = []
        if self.gbm is not None:
            p = float(np.clip(self.gbm.init_.class_prior_[1], 1e-6, 1 - 1e-6))
            intercept += w * math.log(p / (1 - p))
            for est in self.gbm.estimators_[:, 0]:
                t = est.tree_
                if t.node_count < 3:
                    intercept += w * LEARNING_RATE * float(t.value[0][0][0])
                    continue
                k, thr = int(t.feature[0]), float(t.threshold[0])
                left, right = float(t.value[t.children_left[0]][0][0]), float(t.value[t.children_right[0]][0][0])
                stumps.append((k, thr, w * LEARNING_RATE * left, w * LEARNING_RATE * right))
        return coef, intercept, stumps


def rates(score, thr, d):
    det = score >= thr
    neg = d["y"] == 0
    r = lambda m: float(det[m].mean()) if m.any() else float("nan")
    return dict(
        recall=r(d["y"] == 1),
        fire_recall=r(d["fire"] == 1),
        smoke_recall=r(d["smoke"] == 1),
        fpr=r(neg),
        hard_fpr=r(neg & (d["hard"] == 1)),
    )


def operating_point(score, d, target):
    """Lowest threshold whose hard-negative fpr is at most `target`."""
    hn = (d["y"] == 0) & (d["hard"] == 1)
    for t in np.unique(score):
        if (score[hn] >= t).mean() <= target:
            return float(t)
    return float(score.max()) + 1e-6


def out_of_fold(make, d, groups):
    raw = np.zeros(len(d["y"]))
    fold = np.zeros(len(d["y"]), dtype=int)
    for i, (tr, te) in enumerate(GroupKFold(FOLDS).split(d["X"], d["y"], groups)):
        raw[te] = make().fit(d["X"][tr], d["y"][tr]).raw(d["X"][te])
        fold[te] = i
    return raw, fold


def sub(d, m):
    return {k: (v[m] if isinstance(v, np.ndarray) else [x for x, keep in zip(v, m) if keep]) for k, v in d.items() if k != "names"}


def fmt(r):
    return ", ".join(f"{k} {v:.3f}" for k, v in r.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--train-labels", required=True, help="the training set's labels.csv (for `scene`)")
    ap.add_argument("--dev", required=True)
    ap.add_argument("--stress", help="features of scripts/augment-train.py's synthetic negatives (reported only)")
    ap.add_argument("--out")
    ap.add_argument("--metrics")
    ap.add_argument("--cv-scores")
    a = ap.parse_args()

    tr, dev = load(a.train), load(a.dev)
    with open(a.train_labels) as f:
        scene = {r["file"]: r["scene"] for r in csv.DictReader(f)}
    groups = np.array([scene[f] for f in tr["files"]])
    print(f"train: {len(tr['y'])} images, {tr['y'].sum()} positive, {len(set(groups))} scenes; dev: {len(dev['y'])}")

    best = None
    for c, stumps in GRID:
        raw, fold = out_of_fold(lambda: Model(c, stumps), tr, groups)
        aucs = [roc_auc_score(tr["y"][fold == i], raw[fold == i]) for i in range(FOLDS)]
        print(f"  C {c}, {stumps} stumps: CV AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}")
        if best is None or np.mean(aucs) > best[0]:
            best = (np.mean(aucs), c, stumps, raw, fold, aucs)
    _, c, stumps, raw, fold, aucs = best
    print(f"selected: C {c}, {stumps} stumps")

    # Platt calibration on the out-of-fold scores: p = sigmoid(A * raw + B).
    cal = LogisticRegression(C=1e6, max_iter=5000).fit(raw[:, None], tr["y"])
    A, B = float(cal.coef_[0][0]), float(cal.intercept_[0])
    prob = 1 / (1 + np.exp(-(A * raw + B)))
    thr = operating_point(prob, tr, HARD_FPR_TARGET)
    folds = [rates(prob[fold == i], thr, sub(tr, fold == i)) for i in range(FOLDS)]
    cv = {k: (float(np.mean([f[k] for f in folds])), float(np.std([f[k] for f in folds]))) for k in folds[0]}
    cv["auc"] = (float(np.mean(aucs)), float(np.std(aucs)))
    print(f"operating point (CV hard-negative fpr {HARD_FPR_TARGET}): score {thr:.3f}")
    print("grouped CV, mean ± spread over folds: " + ", ".join(f"{k} {m:.3f} ± {s:.3f}" for k, (m, s) in cv.items()))

    m = Model(c, stumps).fit(tr["X"], tr["y"])
    dev_prob = 1 / (1 + np.exp(-(A * m.raw(dev["X"]) + B)))
    dev_r = rates(dev_prob, thr, dev)
    dev_r["auc"] = float(roc_auc_score(dev["y"], dev_prob))
    print("dev split (nothing fitted on it): " + fmt(dev_r))
    stress_r = None
    if a.stress:
        st = load(a.stress)
        keep = np.array([f.startswith("aug-") and y == 0 for f, y in zip(st["files"], st["y"])])
        kinds = np.array([f.split("_")[0][4:] for f in st["files"]])
        sp = 1 / (1 + np.exp(-(A * m.raw(st["X"]) + B)))
        stress_r = {k: float((sp[keep & (kinds == k)] >= thr).mean()) for k in sorted(set(kinds[keep]))}
        print("false-positive rate on synthetic negatives: " + fmt(stress_r))

    if a.cv_scores:
        with open(a.cv_scores, "w") as f:
            f.write("file,fire,smoke,hard_negative,score,fold\n")
            for i, name in enumerate(tr["files"]):
                f.write(f"{name},{tr['fire'][i]},{tr['smoke'][i]},{tr['hard'][i]},{prob[i]:.6f},{fold[i]}\n")
    if a.metrics:
        with open(a.metrics, "w") as f:
            json.dump(
                dict(selected=dict(C=c, stumps=stumps), threshold=thr, hard_fpr_target=HARD_FPR_TARGET,
                     cv={k: dict(mean=v[0], spread=v[1]) for k, v in cv.items()}, dev=dev_r, synthetic_fpr=stress_r,
                     train_images=len(tr["y"]), dev_images=len(dev["y"])),
                f, indent=1,
            )
            f.write("\n")
    if a.out:
        coef, intercept, stumps_out = m.export()
        # Fold the calibration in: every additive term scales by A; B joins the intercept.
        coef, intercept = A * coef, A * intercept + B
        stumps_out = [(k, t, A * l, A * r) for k, t, l, r in stumps_out]
        check = (tr["X"] - m.mean) / m.scale @ coef + intercept
        for k, t, l, r in stumps_out:
            check += np.where(tr["X"][:, k] <= t, l, r)
        assert np.allclose(check, A * m.raw(tr["X"]) + B, atol=1e-6), "export does not reproduce the model"
        f32 = lambda v: f"{float(v):.9e}"
        arr = lambda v: "[" + ", ".join(f32(x) for x in v) + "]"
        with open(a.out, "w") as f:
            f.write("//! Generated by scripts/train-detector.sh (scripts/train-detector.py) from the training set's features.\n")
            f.write("//! Do not edit by hand; re-run the script (see docs/DETECTOR.md).\n")
            f.write(f"//! Grouped {FOLDS}-fold CV on the training set (by scene), mean over folds: "
                    + ", ".join(f"{k} {m_:.3f}" for k, (m_, _) in cv.items()) + ".\n")
            f.write(f"//! Dev split (not fitted on): {fmt(dev_r)}.\n")
            f.write(f"//! Settings: C {c}, {stumps} stumps, learning rate {LEARNING_RATE}; Platt A {A:.4f}, B {B:.4f}.\n")
            f.write("#![allow(clippy::excessive_precision)]\n\n")
            n = len(tr["names"])
            f.write(f"pub const MEAN: [f32; {n}] = {arr(m.mean)};\n")
            f.write(f"pub const SCALE: [f32; {n}] = {arr(m.scale)};\n")
            f.write(f"pub const COEF: [f32; {n}] = {arr(coef)};\n")
            f.write(f"pub const INTERCEPT: f32 = {f32(intercept)};\n")
            f.write("/// (feature, threshold, value if feature <= threshold, value otherwise), added to the raw score.\n")
            f.write("pub const STUMPS: &[(usize, f32, f32, f32)] = &[\n")
            for k, t, l, r in stumps_out:
                f.write(f"    ({k}, {f32(t)}, {f32(l)}, {f32(r)}),\n")
            f.write("];\n")
            f.write("/// The score is a calibrated probability of fire or smoke (Platt scaling on the CV folds). This is the\n")
            f.write(f"/// operating point: the lowest score at which the CV hard-negative fpr is at most {HARD_FPR_TARGET}.\n")
            f.write(f"pub const THRESHOLD: f32 = {thr:.4f};\n")
        print("wrote", a.out)


if __name__ == "__main__":
    sys.exit(main())
