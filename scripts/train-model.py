#!/usr/bin/env python3
"""Trains ember-edge's optional fire/smoke classifier and exports it for the LiteRT / TFLite runtimes.

Run through scripts/train-model.sh (it makes the pinned venv). Writes into models/:
  fire-f32.tflite    float32 model, float32 input (RGB 0..255) and output (sigmoid fire, smoke)
  fire-int8.tflite   full-int8 model, uint8 input (RGB 0..255 with the tensor's quantisation) and uint8 output
  reference.json     outputs of TensorFlow's own interpreter on deterministic inputs (tests/tflite.rs)
  metrics.json       grouped k-fold CV metrics on the training set and dev-split metrics

The model sees a 64x64 RGB image, reduced with a box (area) filter, exactly what src/detect/model_input.rs
feeds it: in the appliance, crops around the grid detector's candidate regions (each widened 1.6x around its
centre, at least 32 px a side), so training uses such crops as well as whole frames. Two sigmoid outputs, fire
and smoke: the labels are multi-label.

Training data: ../shared/fixtures/train (2,169 images, `scene` column) ONLY. ../shared/fixtures/frames is the
development split: it is scored here for the report, never trained on. Models are compared by grouped k-fold
CV (folds by `scene`, never splitting one). The training negatives lack sunsets, lamps, warm lights, fog,
steam and night IR, so some negatives get synthetic ones (see `synth_negative`). Everything is seeded.
"""

import argparse
import csv
import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

SIZE = 64
SEED = 20261207
THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
ROOT = Path(__file__).resolve().parent.parent
# Appliance crop geometry (src/detect/cnn.rs: CROP_MARGIN, MIN_CROP, MAX_CROPS), at the frame's own scale.
CROP_MARGIN = 1.6
MIN_CROP = 32
MAX_CROPS = 3
# Frames are kept at most this long a side (the train set is <= 416 px; dev frames are 640x480).
KEEP_SIDE = 416


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Data


def load_set(folder, cache_name):
    """labels.csv rows with the decoded image (longer side <= KEEP_SIDE); cached under target/."""
    cache = ROOT / "target" / cache_name
    if cache.exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    rows = []
    with open(folder / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            img = Image.open(folder / r["file"]).convert("RGB")
            if max(img.size) > KEEP_SIDE:
                k = KEEP_SIDE / max(img.size)
                img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.BOX)
            rows.append(
                {
                    "file": r["file"],
                    "fire": int(r["fire"]),
                    "smoke": int(r["smoke"]),
                    "hard": int(r["hard_negative"]),
                    "group": r.get("scene") or r["file"],
                    "px": np.asarray(img, dtype=np.uint8),
                }
            )
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache, "wb") as f:
        pickle.dump(rows, f)
    return rows


def candidate_boxes(a, grid=None):
    """The grid detector's own candidate regions when `grid` holds them (relative boxes from `ember-tools eval
    frames --dump-boxes`, see --boxes), widened as src/detect/cnn.rs crops them. Otherwise a stand-in for them: 8x8-pixel cells with enough warm (flame-coloured)
    pixels, joined 8-connected, largest first, each widened CROP_MARGIN around its centre (>= MIN_CROP a side),
    as src/detect/cnn.rs crops them. The grid detector itself is Rust and being retuned; the CNN must not depend
    on its weights, only on its candidates being warm, bright regions."""
    h, w = a.shape[:2]
    if grid is not None:
        return [widen(x0 * w, y0 * h, x1 * w, y1 * h, w, h, CROP_MARGIN) for x0, y0, x1, y1 in grid[:MAX_CROPS]]
    r, g, b = (a[..., i].astype(np.int16) for i in range(3))
    warm = (r > 140) & (r >= g) & (g >= b - 10) & (r - b > 50)
    cs = 8
    ch, cw = h // cs, w // cs
    if ch == 0 or cw == 0:
        return []
    cells = warm[: ch * cs, : cw * cs].reshape(ch, cs, cw, cs).mean(axis=(1, 3)) > 0.2
    seen = np.zeros_like(cells)
    regions = []
    for y in range(ch):
        for x in range(cw):
            if not cells[y, x] or seen[y, x]:
                continue
            stack, pts = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                pts.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < ch and 0 <= nx < cw and cells[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            ys = [p[0] for p in pts]
            xs = [p[1] for p in pts]
            regions.append((len(pts), min(xs) * cs, min(ys) * cs, (max(xs) + 1) * cs, (max(ys) + 1) * cs))
    regions.sort(key=lambda t: -t[0])
    return [widen(x0, y0, x1, y1, w, h, CROP_MARGIN) for _, x0, y0, x1, y1 in regions[:MAX_CROPS]]


def widen(x0, y0, x1, y1, w, h, margin):
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max((x1 - x0) * margin, MIN_CROP) / 2
    hh = max((y1 - y0) * margin, MIN_CROP) / 2
    bx0, by0 = max(0, int(math.floor(cx - hw))), max(0, int(math.floor(cy - hh)))
    bx1, by1 = min(w, int(math.ceil(cx + hw))), min(h, int(math.ceil(cy + hh)))
    return (bx0, by0, max(bx1, bx0 + 1), max(by1, by0 + 1))


def to_input(a, box=None):
    """The model input: box (area) reduction of the image or a region of it to SIZE x SIZE, uint8 RGB."""
    img = Image.fromarray(a)
    if box is not None:
        img = img.crop(box)
    return np.asarray(img.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8)


def jitter_colour(rng, img):
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.8, 1.2))
    return img


def synth_negative(rng, a):
    """What the training negatives lack, painted onto a negative (its label stays negative):
    warm lamp glows, sunset / warm-light gradients, fog and steam, and night-IR grey frames."""
    h, w = a.shape[:2]
    f = a.astype(np.float32)
    kind = rng.choice(["glow", "sunset", "fog", "steam", "ir"])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "glow":
        # A lamp or warm light: 1-3 soft radial blobs, orange to yellow-white, saturating at the centre.
        for _ in range(rng.randint(1, 3)):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rad = rng.uniform(0.04, 0.2) * max(w, h)
            col = np.array([255, rng.uniform(120, 230), rng.uniform(20, 140)], np.float32)
            k = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad * rad)))[..., None]
            f = f * (1 - k) + col * k
    elif kind == "sunset":
        # Sky from yellow-orange at the horizon to red-purple above it, over the upper part of the frame.
        horizon = rng.uniform(0.35, 0.75) * h
        t = np.clip(yy / horizon, 0, 1)[..., None]
        top = np.array([rng.uniform(120, 200), rng.uniform(40, 90), rng.uniform(60, 120)], np.float32)
        low = np.array([255, rng.uniform(130, 200), rng.uniform(30, 90)], np.float32)
        sky = top * (1 - t) + low * t
        alpha = (np.clip((horizon - yy) / (0.15 * h), 0, 1) * rng.uniform(0.6, 0.95))[..., None]
        dusk = rng.uniform(0.5, 0.9)  # the foreground darkens at dusk
        f = f * (1 - alpha) * dusk + sky * alpha
    elif kind == "fog":
        veil = np.array([rng.uniform(170, 230)] * 3, np.float32)
        al = rng.uniform(0.3, 0.65)
        f = f * (1 - al) + veil * al
    elif kind == "steam":
        # White, soft, rising plume-like blobs.
        for _ in range(rng.randint(1, 3)):
            cx, cy = rng.uniform(0, w), rng.uniform(0.2, 1) * h
            rx, ry = rng.uniform(0.05, 0.15) * w, rng.uniform(0.1, 0.3) * h
            k = (np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) / 2) * rng.uniform(0.5, 0.85))[..., None]
            f = f * (1 - k) + 235 * k
    else:
        # Night IR: grey (BT.601 luma), often with boosted contrast and bright IR-lit surfaces.
        y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
        y = np.clip((y - 128) * rng.uniform(1.0, 1.5) + 128 + rng.uniform(-20, 30), 0, 255)
        f = np.repeat(y[..., None], 3, axis=2)
    return np.clip(f, 0, 255).astype(np.uint8), kind


def random_box(rng, w, h, lo):
    s = rng.uniform(lo, 1.0)
    ar = rng.uniform(0.75, 1.33)
    cw = max(8, min(w, int(w * s * ar**0.5)))
    chh = max(8, min(h, int(h * s / ar**0.5)))
    x0 = rng.randint(0, w - cw)
    y0 = rng.randint(0, h - chh)
    return (x0, y0, x0 + cw, y0 + chh)


def samples_of(rng, row, per_image):
    """Augmented (input, kind) pairs for one image: the whole frame, crops around its candidate regions (what
    the appliance scores), random crops (only for negatives, whose label survives any crop) and, for some
    negatives, a synthetic lamp / sunset / fog / steam / IR version."""
    a = row["px"]
    h, w = a.shape[:2]
    positive = row["fire"] or row["smoke"]
    out = []
    boxes = candidate_boxes(a, row.get("grid"))
    for k in range(per_image):
        src = a
        kind = "whole"
        if not positive and rng.random() < 0.3:
            src, kind = synth_negative(rng, a)
        box = None
        u = rng.random()
        if boxes and u < 0.5:
            x0, y0, x1, y1 = boxes[rng.randrange(len(boxes))]
            # Jitter the box as the grid's cell boundaries would.
            jx, jy = 0.12 * (x1 - x0), 0.12 * (y1 - y0)
            box = (
                int(max(0, x0 + rng.uniform(-jx, jx))),
                int(max(0, y0 + rng.uniform(-jy, jy))),
                int(min(w, x1 + rng.uniform(-jx, jx))),
                int(min(h, y1 + rng.uniform(-jy, jy))),
            )
            if box[2] - box[0] < 8 or box[3] - box[1] < 8:
                box = None
            elif kind == "whole":
                kind = "candidate"
        elif u < 0.75:
            box = random_box(rng, w, h, 0.7 if positive else 0.25)
            if kind == "whole":
                kind = "random"
        img = Image.fromarray(src)
        if box is not None:
            img = img.crop(box)
        img = jitter_colour(rng, img)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append((np.asarray(img.resize((SIZE, SIZE), Image.BOX), dtype=np.uint8), kind))
    return out


def make_augmented(rows, per_image, seed):
    rng = random.Random(seed)
    xs, ys, idx, kinds = [], [], [], {}
    for i, row in enumerate(rows):
        for arr, kind in samples_of(rng, row, per_image):
            xs.append(arr)
            ys.append((row["fire"], row["smoke"]))
            idx.append(i)
            kinds[kind] = kinds.get(kind, 0) + 1
    return np.stack(xs), np.asarray(ys, dtype=np.float32), np.asarray(idx), kinds


# --------------------------------------------------------------------------------------------------------------
# Model


def build_model(tf, width):
    """Depthwise-separable CNN (MobileNet-style blocks, batch norm folded away at export)."""
    from tensorflow import keras

    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3), name="rgb")
    x = L.Rescaling(1.0 / 255.0)(inp)
    x = L.Conv2D(width, 3, strides=2, padding="same", use_bias=False)(x)  # 32x32
    x = L.ReLU()(L.BatchNormalization()(x))

    def ds(x, ch, stride):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(ch, 1, use_bias=False)(x)
        return L.ReLU()(L.BatchNormalization()(x))

    # Downsample early (the input is a box-filtered 64x64; flames are blobs, not fine texture): most of the cost
    # of a small CNN sits in its first layers, and this one has to train on 2 shared cores and run on a Pi.
    x = ds(x, 2 * width, 2)  # 16x16
    x = ds(x, 4 * width, 1)
    x = ds(x, 8 * width, 2)  # 8x8
    x = ds(x, 8 * width, 1)
    x = ds(x, 16 * width, 2)  # 4x4
    x = ds(x, 16 * width, 1)
    # Mean and max: a small flame is a few strong cells, a smoke haze is a weak widespread one.
    x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    x = L.Dropout(0.3)(x)
    out = L.Dense(2, activation="sigmoid", name="fire_smoke")(x)
    return keras.Model(inp, out)


def macs(model):
    """Multiply-adds of one inference (convolutions and dense layers)."""
    from tensorflow import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def train(tf, x, y, epochs, seed, width):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(tf, width)
    steps = epochs * math.ceil(len(x) / 64)
    lr = tf.keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.05)
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="binary_crossentropy")
    t = time.time()
    model.fit(x.astype(np.float32), y, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    log(f"trained on {len(x)} samples x {epochs} epochs in {time.time() - t:.0f}s ({model.count_params()} parameters)")
    return model


def predict_inputs(model, xs):
    return model.predict(np.stack(xs).astype(np.float32), batch_size=128, verbose=0)


def frame_scores(model, rows, how):
    """Per frame (fire, smoke). `whole`: the whole frame. `pipeline`: as the appliance's `model` detector, the
    best max(fire, smoke) over the candidate crops, 0 without a candidate (fire/smoke from the best crop)."""
    if how == "whole":
        return [[float(a), float(b)] for a, b in predict_inputs(model, [to_input(r["px"]) for r in rows])]
    crops, owner = [], []
    for i, r in enumerate(rows):
        for box in candidate_boxes(r["px"], r.get("grid")):
            crops.append(to_input(r["px"], box))
            owner.append(i)
    out = [[0.0, 0.0] for _ in rows]
    if crops:
        for i, (a, b) in zip(owner, predict_inputs(model, crops)):
            if max(a, b) > max(out[i]):
                out[i] = [float(a), float(b)]
    return out


def attach_boxes(path, frames):
    """Sets each frame's `grid`: its regions in `path` (`ember-tools eval frames --dump-boxes`), [] for none."""
    regions = {}
    with open(path, newline="") as f:
        for b in csv.DictReader(f):
            regions.setdefault(b["file"], []).append(tuple(float(b[k]) for k in ("x0", "y0", "x1", "y1")))
    for r in frames:
        r["grid"] = regions.get(r["file"], [])


def scene_folds(rows, folds):
    """Grouped k-fold by scene, {scene: fold}: scenes shuffled with the seed, dealt largest first into the
    emptiest fold. Every model's CV uses these, so their numbers compare."""
    cnt = {}
    for r in rows:
        cnt[r["group"]] = cnt.get(r["group"], 0) + 1
    g = sorted(cnt, key=lambda s: (-cnt[s], s))
    random.Random(SEED).shuffle(g)
    size, fold_of = [0] * folds, {}
    for s in sorted(g, key=lambda s: -cnt[s]):
        k = min(range(folds), key=lambda i: size[i])
        fold_of[s] = k
        size[k] += cnt[s]
    return fold_of


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


def write_reference(tf, out_dir, f32, i8):
    """reference.json: TensorFlow's own interpreter on the deterministic inputs, per exported model."""
    ref = {"tensorflow": tf.__version__, "input": {}, "models": {}}
    inputs = reference_inputs()
    for name, (desc, _) in inputs.items():
        ref["input"][name] = desc
    for fname, blob in (("fire-f32.tflite", f32), ("fire-int8.tflite", i8)):
        entry = {"outputs": {}}
        for name, (_, arr) in inputs.items():
            out, raw, i, o = tflite_run(tf, blob, arr.astype(np.uint8))
            entry["outputs"][name] = {"scores": out, "raw": raw}
            entry["input_tensor"], entry["output_tensor"] = tensor_desc(i), tensor_desc(o)
        ref["models"][fname] = entry
    (out_dir / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=ROOT.parent / "shared/fixtures/train")
    ap.add_argument("--dev", type=Path, default=ROOT.parent / "shared/fixtures/frames")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--per-image", type=int, default=6, help="augmented samples per training image")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--width", type=int, default=8, help="channels of the first layer (x2 .. x16 later)")
    ap.add_argument("--folds", type=int, default=4, help="grouped k-fold CV on the train set (0 = skip)")
    ap.add_argument("--cv-only", action="store_true", help="only the CV (adds `cv` to an existing metrics.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--boxes", type=Path, help="the grid detector's regions of the training images "
                    "(`ember-tools eval frames DIR --dump-boxes FILE`): crops come from them, not the stand-in")
    ap.add_argument("--cv-scores", type=Path, help="--cv-only: also write each training image's out-of-fold "
                    "scores (whole image, pipeline) to this CSV")
    ap.add_argument("--dev-boxes", type=Path, help="the same for the dev split (scoring only)")
    args = ap.parse_args()

    random.seed(SEED)
    np.random.seed(SEED)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    t0 = time.time()
    rows = load_set(args.train, f"train-cache-{KEEP_SIDE}.pkl")
    dev = load_set(args.dev, f"dev-cache-{KEEP_SIDE}.pkl")
    for path, frames in ((args.boxes, rows), (args.dev_boxes, dev)):
        if path:
            attach_boxes(path, frames)
    groups = sorted({r["group"] for r in rows})
    log(f"{len(rows)} training images, {len(groups)} scenes; {len(dev)} dev frames; augmenting x{args.per_image}")
    crops_from = "grid" if args.boxes else "standin"
    cache = ROOT / "target" / f"train-aug-v2-{args.per_image}-{SEED}-{crops_from}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        x, y, idx, kinds = z["x"], z["y"], z["idx"], z["kinds"].item()
    else:
        x, y, idx, kinds = make_augmented(rows, args.per_image, SEED)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, y=y, idx=idx, kinds=np.array(kinds, dtype=object))
    log(f"{len(x)} samples {kinds} ({time.time() - t0:.0f}s)")
    metrics_path = args.out / "metrics.json"
    if args.cv_only:
        metrics = json.loads(metrics_path.read_text())
    else:
        metrics = {}
    metrics.update({
        "train_images": len(rows),
        "scenes": len(groups),
        "dev_frames": len(dev),
        "per_image": args.per_image,
        "epochs": args.epochs,
        "width": args.width,
        "sample_kinds": kinds,
        "crops_from": crops_from,
    })

    if args.cv_only:
        fold_of = scene_folds(rows, args.folds)
        folds = []
        scores_whole = [None] * len(rows)
        scores_pipe = [None] * len(rows)
        for k in range(args.folds):
            test = [i for i, r in enumerate(rows) if fold_of[r["group"]] == k]
            keep = np.array([fold_of[rows[i]["group"]] != k for i in idx])
            m = train(tf, x[keep], y[keep], args.epochs, SEED + 1 + k, args.width)
            trows = [rows[i] for i in test]
            sw = frame_scores(m, trows, "whole")
            sp = frame_scores(m, trows, "pipeline")
            for i, a, b in zip(test, sw, sp):
                scores_whole[i], scores_pipe[i] = a, b
            folds.append({
                "fold": k,
                "test_images": len(test),
                "whole": {"summary": summary(trows, sw), "curve": curve(trows, sw)},
                "pipeline": {"summary": summary(trows, sp), "curve": curve(trows, sp)},
            })
            log(f"fold {k + 1}/{args.folds}: {len(test)} test images, {folds[-1]['whole']['summary']} "
                f"({time.time() - t0:.0f}s)")
        if args.cv_scores:
            with open(args.cv_scores, "w") as f:
                f.write("file,fire,smoke,hard_negative,whole,pipeline,fold\n")
                for r, a, b in zip(rows, scores_whole, scores_pipe):
                    f.write(f"{r['file']},{r['fire']},{r['smoke']},{r['hard']},{max(a):.6f},{max(b):.6f},"
                            f"{fold_of[r['group']]}\n")
        metrics["cv"] = {
            "folds": args.folds,
            "per_fold": folds,
            "pooled_whole": {"summary": summary(rows, scores_whole), "curve": curve(rows, scores_whole)},
            "pooled_pipeline": {"summary": summary(rows, scores_pipe), "curve": curve(rows, scores_pipe)},
        }
        print_curve(f"grouped {args.folds}-fold CV, whole images: {metrics['cv']['pooled_whole']['summary']}",
                    metrics["cv"]["pooled_whole"]["curve"])
        print_curve(f"grouped CV, candidate crops: {metrics['cv']['pooled_pipeline']['summary']}",
                    metrics["cv"]["pooled_pipeline"]["curve"])
        metrics["seconds_cv"] = round(time.time() - t0)
        metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
        log(f"CV done in {metrics['seconds_cv']}s")
        return

    model = train(tf, x, y, args.epochs, SEED, args.width)
    metrics["parameters"] = int(model.count_params())
    metrics["macs"] = macs(model)
    log(f"{metrics['parameters']} parameters, {metrics['macs']} multiply-adds per inference")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rep_x = x[rng.choice(len(x), size=400, replace=False)]
    f32, i8 = export(tf, model, rep_x, args.out)
    log(f"fire-f32.tflite {len(f32)} B, fire-int8.tflite {len(i8)} B")

    # Dev split, never trained on: the exported int8 model through TF's interpreter (what ships).
    i8_whole = [tflite_run(tf, i8, to_input(r["px"]))[0] for r in dev]
    i8_pipe = []
    for r in dev:
        best = [0.0, 0.0]
        for box in candidate_boxes(r["px"], r.get("grid")):
            s = tflite_run(tf, i8, to_input(r["px"], box))[0]
            if max(s) > max(best):
                best = s
        i8_pipe.append(best)
    metrics["dev_int8_whole"] = {"summary": summary(dev, i8_whole), "curve": curve(dev, i8_whole)}
    metrics["dev_int8_candidates"] = {"summary": summary(dev, i8_pipe), "curve": curve(dev, i8_pipe)}
    print_curve(f"dev split (int8, whole frames): {metrics['dev_int8_whole']['summary']}",
                metrics["dev_int8_whole"]["curve"])
    print_curve(f"dev split (int8, {'grid detector' if args.dev_boxes else 'Python stand-in'} candidates): {metrics['dev_int8_candidates']['summary']}",
                metrics["dev_int8_candidates"]["curve"])

    write_reference(tf, args.out, f32, i8)
    metrics["seconds"] = round(time.time() - t0)
    metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"done in {metrics['seconds']}s")


if __name__ == "__main__":
    main()
