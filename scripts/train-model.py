#!/usr/bin/env python3
"""Trains ember-edge's optional fire/smoke classifier and exports it for the TFLite C API.

Run through scripts/train-model.sh (it makes the pinned venv). Writes into models/:
  fire-f32.tflite    float32 model, float32 input (RGB 0..255) and output (sigmoid fire, smoke)
  fire-int8.tflite   full-int8 model, uint8 input (RGB 0..255 with the tensor's quantisation) and uint8 output
  reference.json     outputs of TensorFlow's own interpreter on deterministic inputs (tests/tflite.rs)
  metrics.json       dev-split and grouped k-fold CV metrics at several thresholds

The model sees a 64x64 RGB image: the whole frame, or a candidate region of it, reduced with a box (area)
filter, exactly what src/detect/tflite.rs feeds it. It has two sigmoid outputs, fire and smoke, because the
labels are multi-label (a frame can show both).

Training data: the development split only (../shared/fixtures/frames/labels.csv). There are 136 frames, so
heavy augmentation: random crops (smaller crops only for negatives, whose label survives any crop), crops
around the warm-coloured region the heuristic would propose, flips, brightness / contrast / saturation / hue
jitter. Everything is seeded; TF runs single-threaded with deterministic ops.
"""

import argparse
import csv
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

SIZE = 64
SEED = 20261130
THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
ROOT = Path(__file__).resolve().parent.parent


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Data


def group_of(name):
    """Scene/video group of a frame, from its file name, so CV folds never split one video."""
    stem = name[: -len(".jpg")]
    m = re.match(r"(.+?)_mp4-\d+_[0-9a-f]{6}$", stem)
    if m:  # Roboflow video frames: "<video>_mp4-<frame>_<hash>"
        return m.group(1)
    m = re.match(r"(embereye_demo\d+)_frame_\d+$", stem)
    if m:
        return m.group(1)
    m = re.match(r"rf-fire8_img_(\d+)", stem)
    if m:  # numbered CCTV frames: neighbours in numbering come from the same clip
        return f"rf-fire8_img_{int(m.group(1)) // 25}"
    m = re.match(r"(rf-indoorfire_image)(\d+)_[0-9a-f]{6}$", stem)
    if m:
        return f"{m.group(1)}{int(m.group(2)) // 25}"
    return stem  # independent photos


def load_frames(frames_dir):
    rows = []
    with open(frames_dir / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            img = Image.open(frames_dir / r["file"]).convert("RGB")
            # Crops are taken from a half-size copy: the model input is 64x64, so nothing is lost.
            if max(img.size) > 320:
                k = 320 / max(img.size)
                img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.BOX)
            rows.append(
                {
                    "file": r["file"],
                    "fire": int(r["fire"]),
                    "smoke": int(r["smoke"]),
                    "hard": int(r["hard_negative"]),
                    "group": group_of(r["file"]),
                    "img": img,
                }
            )
    return rows


def warm_box(img):
    """Bounding box of warm pixels (the heuristic's candidate-region kind), or None."""
    a = np.asarray(img, dtype=np.int16)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    mask = (r > 150) & (r >= g) & (g > b) & (r - b > 60)
    if mask.sum() < 12:
        return None
    ys, xs = np.nonzero(mask)
    # Robust extent: ignore isolated outliers.
    x0, x1 = np.percentile(xs, [3, 97])
    y0, y1 = np.percentile(ys, [3, 97])
    return float(x0), float(y0), float(x1) + 1, float(y1) + 1


def to_input(img, box=None):
    """The model input: box (area) reduction of the image or a region of it to SIZE x SIZE, uint8 RGB."""
    if box is not None:
        img = img.crop(tuple(int(round(v)) for v in box))
    return np.asarray(img.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8)


def jitter_colour(rng, img):
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.65, 1.35))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.75, 1.25))
    return img


def hue_shift(rng, arr):
    # Small hue rotation only: a large one would turn flames into non-flames and break the labels.
    d = int(round(rng.uniform(-6, 6)))
    if d == 0:
        return arr
    hsv = np.asarray(Image.fromarray(arr).convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + d) % 256
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), dtype=np.uint8)


def augment(rng, row):
    img = row["img"]
    w, h = img.size
    positive = row["fire"] or row["smoke"]
    mode = rng.random()
    box = None
    if mode < 0.3:
        # Candidate-region crop: the warm box with a random margin, as the heuristic would hand it over.
        wb = warm_box(img)
        if wb is not None:
            x0, y0, x1, y1 = wb
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            bw = max(x1 - x0, 16) * rng.uniform(1.1, 2.2)
            bh = max(y1 - y0, 16) * rng.uniform(1.1, 2.2)
            cx += rng.uniform(-0.15, 0.15) * bw
            cy += rng.uniform(-0.15, 0.15) * bh
            box = (max(0, cx - bw / 2), max(0, cy - bh / 2), min(w, cx + bw / 2), min(h, cy + bh / 2))
            if box[2] - box[0] < 8 or box[3] - box[1] < 8:
                box = None
    if box is None and mode < 0.65:
        # Random crop. A crop of a negative is still negative; a small crop of a positive may miss the
        # flame, so positives keep most of the frame.
        lo = 0.6 if positive else 0.3
        s = rng.uniform(lo, 1.0)
        ar = rng.uniform(0.75, 1.33)
        cw = min(w, w * s * ar**0.5)
        ch = min(h, h * s / ar**0.5)
        x0 = rng.uniform(0, w - cw)
        y0 = rng.uniform(0, h - ch)
        box = (x0, y0, x0 + cw, y0 + ch)
    if box is not None:
        img = img.crop(tuple(int(round(v)) for v in box))
    img = jitter_colour(rng, img)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8)
    return hue_shift(rng, arr)


def make_augmented(rows, per_image, seed):
    rng = random.Random(seed)
    xs, ys, idx = [], [], []
    for i, row in enumerate(rows):
        for _ in range(per_image):
            xs.append(augment(rng, row))
            ys.append((row["fire"], row["smoke"]))
            idx.append(i)
    return np.stack(xs), np.asarray(ys, dtype=np.float32), np.asarray(idx)


# --------------------------------------------------------------------------------------------------------------
# Model


def build_model(tf):
    from tensorflow import keras

    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3), name="rgb")
    x = L.Rescaling(1.0 / 255.0)(inp)
    # Strided convolutions instead of pooling: about 1.2 M multiply-adds per frame, cheap on a Pi and to train.
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)  # 32x32
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # 16x16
    x = L.Conv2D(24, 3, strides=2, padding="same", activation="relu")(x)  # 8x8
    x = L.Conv2D(32, 3, padding="same", activation="relu")(x)
    # Mean and max: a small flame is a few strong cells, a smoke haze is a weak widespread one.
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    x = L.Dropout(0.2)(x)
    out = L.Dense(2, activation="sigmoid", name="fire_smoke")(x)
    return keras.Model(inp, out)


def train(tf, x, y, epochs, seed):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(tf)
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    t = time.time()
    model.fit(x.astype(np.float32), y, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    log(f"trained on {len(x)} samples x {epochs} epochs in {time.time() - t:.0f}s ({model.count_params()} parameters)")
    return model


def predict(model, rows):
    x = np.stack([to_input(r["img"]) for r in rows]).astype(np.float32)
    return model.predict(x, batch_size=64, verbose=0)


# --------------------------------------------------------------------------------------------------------------
# Metrics


def curve(rows, scores):
    """Per threshold: recall of fire, of smoke, of any positive (max score), hard-negative and overall FPR."""
    out = []
    fire = [r["fire"] for r in rows]
    smoke = [r["smoke"] for r in rows]
    anyp = [r["fire"] or r["smoke"] for r in rows]
    hard = [r["hard"] for r in rows]
    for t in THRESHOLDS:
        f_hit = [s[0] >= t for s in scores]
        s_hit = [s[1] >= t for s in scores]
        a_hit = [max(s[0], s[1]) >= t for s in scores]

        def rate(hit, sel):
            n = sum(sel)
            return round(sum(h for h, s in zip(hit, sel) if s) / n, 4) if n else None

        neg = [not a for a in anyp]
        out.append(
            {
                "threshold": t,
                "recall_fire": rate(f_hit, fire),
                "recall_smoke": rate(s_hit, smoke),
                "recall_any": rate(a_hit, anyp),
                "hard_fpr": rate(a_hit, hard),
                "fpr": rate(a_hit, neg),
                "fire_hard_fpr": rate(f_hit, hard),
            }
        )
    return out


def auc(pos, neg):
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 4)


def summary(rows, scores):
    anyp = [bool(r["fire"] or r["smoke"]) for r in rows]
    mx = [max(s[0], s[1]) for s in scores]
    return {
        "auc_any_vs_negatives": auc([m for m, a in zip(mx, anyp) if a], [m for m, a in zip(mx, anyp) if not a]),
        "auc_any_vs_hard": auc([m for m, a in zip(mx, anyp) if a], [m for m, r in zip(mx, rows) if r["hard"]]),
        "auc_fire": auc([s[0] for s, r in zip(scores, rows) if r["fire"]], [s[0] for s, r in zip(scores, rows) if not r["fire"]]),
        "auc_smoke": auc([s[1] for s, r in zip(scores, rows) if r["smoke"]], [s[1] for s, r in zip(scores, rows) if not r["smoke"]]),
    }


def print_curve(title, c):
    log(title)
    print(f"  {'thr':>5} {'rec_fire':>8} {'rec_smoke':>9} {'rec_any':>7} {'hard_fpr':>8} {'fpr':>6}", file=sys.stderr)
    for p in c:
        print(
            f"  {p['threshold']:5.2f} {p['recall_fire']:8.3f} {p['recall_smoke']:9.3f} {p['recall_any']:7.3f}"
            f" {p['hard_fpr']:8.3f} {p['fpr']:6.3f}",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------------------------------------------
# Export


def reference_inputs():
    """Deterministic 64x64 RGB inputs that tests/tflite.rs regenerates from the same formulas."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    grad = np.stack([(x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256], axis=-1)
    blob = np.zeros((SIZE, SIZE, 3), dtype=np.int64) + np.array([20, 20, 30])
    inside = (x - 32) ** 2 + (y - 40) ** 2 < 14**2
    blob[inside] = [255, 140, 20]
    gray = np.full((SIZE, SIZE, 3), 128)
    return {
        "gradient": ("r = (4x) mod 256, g = (4y) mod 256, b = (2(x+y)) mod 256", grad),
        "orange_disc": ("(20,20,30) background, (255,140,20) where (x-32)^2 + (y-40)^2 < 196", blob),
        "gray128": ("every channel 128", gray),
    }


def tflite_run(tf, model_bytes, arr):
    interp = tf.lite.Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    i = interp.get_input_details()[0]
    o = interp.get_output_details()[0]
    if i["dtype"] == np.float32:
        data = arr.astype(np.float32)[None]
    else:
        scale, zp = i["quantization"]
        info = np.iinfo(i["dtype"])
        data = np.clip(np.round(arr.astype(np.float64) / scale) + zp, info.min, info.max).astype(i["dtype"])[None]
    interp.set_tensor(i["index"], data)
    interp.invoke()
    raw = interp.get_tensor(o["index"])[0]
    if o["dtype"] == np.float32:
        return raw.astype(np.float64).tolist(), None, i, o
    scale, zp = o["quantization"]
    return ((raw.astype(np.float64) - zp) * scale).tolist(), raw.astype(int).tolist(), i, o


def export(tf, model, rep_x, out_dir):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    f32 = conv.convert()

    def rep():
        for a in rep_x:
            yield [a[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    i8 = conv.convert()
    (out_dir / "fire-f32.tflite").write_bytes(f32)
    (out_dir / "fire-int8.tflite").write_bytes(i8)
    return f32, i8


def tensor_desc(d):
    q = d["quantization"]
    return {
        "shape": [int(v) for v in d["shape"]],
        "dtype": np.dtype(d["dtype"]).name,
        "scale": float(q[0]),
        "zero_point": int(q[1]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, default=ROOT.parent / "shared/fixtures/frames")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--per-image", type=int, default=30, help="augmented samples per frame")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--folds", type=int, default=4, help="grouped k-fold CV (0 = skip)")
    args = ap.parse_args()

    random.seed(SEED)
    np.random.seed(SEED)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    t0 = time.time()
    rows = load_frames(args.frames)
    groups = sorted({r["group"] for r in rows})
    log(f"{len(rows)} frames, {len(groups)} groups; augmenting x{args.per_image}")
    # The augmented set depends only on the frames, the count and the seed: cached between runs.
    cache = ROOT / "target" / f"train-aug-{args.per_image}-{SEED}.npz"
    if cache.exists():
        z = np.load(cache)
        x, y, idx = z["x"], z["y"], z["idx"]
    else:
        x, y, idx = make_augmented(rows, args.per_image, SEED)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, y=y, idx=idx)
    log(f"{len(x)} samples ({time.time() - t0:.0f}s)")

    metrics = {"frames": len(rows), "groups": len(groups), "per_image": args.per_image, "epochs": args.epochs}

    if args.folds:
        # Grouped k-fold: groups shuffled with the seed, dealt round-robin into folds (balanced by count).
        g = list(groups)
        random.Random(SEED).shuffle(g)
        fold_of_group = {name: k % args.folds for k, name in enumerate(g)}
        scores = [None] * len(rows)
        for k in range(args.folds):
            test = [i for i, r in enumerate(rows) if fold_of_group[r["group"]] == k]
            keep = np.array([fold_of_group[rows[i]["group"]] != k for i in idx])
            m = train(tf, x[keep], y[keep], args.epochs, SEED + k)
            for i, s in zip(test, predict(m, [rows[i] for i in test])):
                scores[i] = [float(s[0]), float(s[1])]
            log(f"fold {k + 1}/{args.folds}: {len(test)} test frames ({time.time() - t0:.0f}s)")
        metrics["cv"] = {"folds": args.folds, "summary": summary(rows, scores), "curve": curve(rows, scores)}
        print_curve(f"grouped {args.folds}-fold CV (whole frames): {metrics['cv']['summary']}", metrics["cv"]["curve"])

    model = train(tf, x, y, args.epochs, SEED)
    dev_scores = [[float(a), float(b)] for a, b in predict(model, rows)]
    metrics["dev_train_keras"] = {"summary": summary(rows, dev_scores), "curve": curve(rows, dev_scores)}

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rep_x = x[rng.choice(len(x), size=300, replace=False)]
    f32, i8 = export(tf, model, rep_x, args.out)
    log(f"fire-f32.tflite {len(f32)} B, fire-int8.tflite {len(i8)} B")

    # Dev metrics of the exported int8 model, through TF's interpreter (what ships).
    i8_scores = [tflite_run(tf, i8, to_input(r["img"]))[0] for r in rows]
    metrics["dev_train_int8"] = {"summary": summary(rows, i8_scores), "curve": curve(rows, i8_scores)}
    print_curve(f"dev split, trained on it (int8 model, whole frames): {metrics['dev_train_int8']['summary']}",
                metrics["dev_train_int8"]["curve"])

    ref = {"tensorflow": tf.__version__, "input": {}, "models": {}}
    for name, (desc, arr) in reference_inputs().items():
        ref["input"][name] = desc
    for fname, blob in (("fire-f32.tflite", f32), ("fire-int8.tflite", i8)):
        entry = {"outputs": {}}
        for name, (_, arr) in reference_inputs().items():
            out, raw, i, o = tflite_run(tf, blob, arr.astype(np.uint8))
            entry["outputs"][name] = {"scores": out, "raw": raw}
            entry["input_tensor"], entry["output_tensor"] = tensor_desc(i), tensor_desc(o)
        ref["models"][fname] = entry
    (args.out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    metrics["seconds"] = round(time.time() - t0)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"done in {metrics['seconds']}s")


if __name__ == "__main__":
    main()
