#!/usr/bin/env python3
"""Builds ember-edge's fire/smoke CNN from a pretrained backbone: ImageNet MobileNetV2 up to block 10, a linear
head fitted on the training set's grid-detector crops, exported for the LiteRT / TFLite runtimes.

Run through scripts/train-backbone.sh (pinned venv). Writes into --out (default target/backbone-model, so the
shipped models/ stay as they are; `--out models` replaces them) what scripts/train-model.py writes: fire-f32.tflite,
fire-int8.tflite, reference.json, metrics.json. Same contract: an RGB crop box-filtered to SIZE x SIZE, uint8
0..255 in, two sigmoids (fire, smoke) out, so the appliance runs it unchanged.

The backbone: the npm package `nsfwjs` 4.3.0 (MIT) carries GantMan/nsfw_model's MobileNetV2 (alpha 1.0, MIT) as a
TF.js layers model, uint8-quantised. That model was fine-tuned from Keras' ImageNet weights with every layer up to
`block_10_project_BN` frozen, so the layers used here (up to `block_10_expand_relu`) hold the ImageNet weights;
nothing fine-tuned on the NSFW data is used. The tarball is fetched from the npm registry and checked by hash.

The head: global mean and max of the 384 `block_10_expand_relu` channels, standardised, one L2-regularised
logistic regression per output (scikit-learn, C chosen by grouped CV among a few), folded into one dense layer.
Training samples: crops around the grid detector's regions (`ember-tools eval frames --dump-boxes`), as the
appliance's `model` detector feeds them, each with its image's labels; the whole image where the grid proposes
nothing. Training data: ../shared/fixtures/train ONLY; ../shared/fixtures/frames is scored, never fitted on.
"""

import argparse
import base64
import hashlib
import importlib.util
import io
import json
import re
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("train_model", ROOT / "scripts" / "train-model.py")
tm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tm)

NSFWJS_URL = "https://registry.npmjs.org/nsfwjs/-/nsfwjs-4.3.0.tgz"
NSFWJS_SHA256 = "4496790efc9bdc6f3e85a826a8e482c1fa1e9db4b3d18c095e98cc0c73cfb12f"
CUT = "block_10_expand_relu"
SEED = 20261208
CS = [0.003, 0.01, 0.03, 0.1]


def log(msg):
    tm.log(msg)


def nsfwjs_weights():
    """The MobileNetV2's weights by `layer/variable` name, dequantised, from the npm tarball (cached)."""
    cache = ROOT / "target" / "nsfwjs-4.3.0.tgz"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(urllib.request.urlopen(NSFWJS_URL, timeout=120).read())
    blob = cache.read_bytes()
    if hashlib.sha256(blob).hexdigest() != NSFWJS_SHA256:
        sys.exit(f"{cache}: unexpected sha256, remove it and retry")
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        base = "package/dist/models/mobilenet_v2/"
        topo = t.extractfile(base + "model.min.js").read().decode()
        shard = t.extractfile(base + "group1-shard1of1.min.js").read().decode()
    # The wrappers are minified JS: model.json as an object literal, the shard as one base64 string.
    (b64,) = re.findall(r'"([A-Za-z0-9+/=]{100000,})"', shard)
    buf = base64.b64decode(b64)
    spec_re = re.compile(
        r'\{name:"([^"]+)",shape:\[([0-9,]*)\],dtype:"(\w+)"'
        r'(?:,quantization:\{min:([-+0-9.e]+),scale:([-+0-9.e]+),dtype:"(\w+)"\})?\}'
    )
    out, off = {}, 0
    for name, shape, dtype, qmin, qscale, qdtype in spec_re.findall(topo):
        shape = [int(v) for v in shape.split(",")] if shape else []
        n = int(np.prod(shape)) if shape else 1
        if qdtype:
            if qdtype != "uint8":
                sys.exit(f"{name}: quantisation {qdtype} not handled")
            arr = np.frombuffer(buf, np.uint8, n, off).astype(np.float32) * np.float32(qscale) + np.float32(qmin)
            off += n
        else:
            arr = np.frombuffer(buf, np.float32, n, off).copy()
            off += 4 * n
        out[name] = arr.reshape(shape)
    if off != len(buf) or len(out) != 266:
        sys.exit(f"weights manifest parse: {len(out)} tensors, {off} of {len(buf)} bytes")
    return out


def backbone(keras, weights, size):
    """uint8-range RGB in, [mean ‖ max] of the cut layer's channels out (float32, not standardised)."""
    full = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None
    )
    cut = keras.Model(full.input, full.get_layer(CUT).output)
    for layer in cut.layers:
        for v in layer.weights:
            key = f"{layer.name}/{v.name}"
            if key not in weights and isinstance(layer, keras.layers.DepthwiseConv2D):
                key = f"{layer.name}/depthwise_kernel"
            v.assign(weights[key])
    x = keras.Input((size, size, 3))
    t = cut(keras.layers.Rescaling(1 / 255)(x))
    f = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(t), keras.layers.GlobalMaxPooling2D()(t)])
    return keras.Model(x, f), full


def macs(full, size):
    """Multiply-adds of the convolutions up to the cut (the head's 2 x 768 is negligible)."""
    total = 0
    for layer in full.layers:
        shape = layer.output.shape
        if type(layer).__name__ == "Conv2D":
            k = layer.kernel.shape
            total += shape[1] * shape[2] * k[0] * k[1] * k[2] * k[3]
        elif type(layer).__name__ == "DepthwiseConv2D":
            k = layer.kernel.shape
            total += shape[1] * shape[2] * k[0] * k[1] * k[2]
        if layer.name == CUT:
            return int(total)
    return int(total)


def samples(rows, size):
    """Per image, its crops as the appliance makes them (or the whole image without a candidate)."""
    xs, owner = [], []
    for i, r in enumerate(rows):
        boxes = tm.candidate_boxes(r["px"], r.get("grid")) or [None]
        for box in boxes:
            xs.append(tm.to_input(r["px"], box))
            owner.append(i)
    return np.stack(xs).astype(np.float32), np.array(owner)


def features(model, x):
    return model.predict(x, batch_size=64, verbose=0)


def fit(feats, y, c):
    from sklearn.linear_model import LogisticRegression

    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mu) / sd
    heads = [LogisticRegression(C=c, max_iter=5000).fit(z, y[:, k]) for k in range(2)]
    w = np.stack([h.coef_[0] for h in heads], axis=1) / sd[:, None]
    b = np.array([h.intercept_[0] for h in heads]) - mu @ w
    return w.astype(np.float32), b.astype(np.float32)


def predict(feats, w, b):
    return 1 / (1 + np.exp(-(feats @ w + b)))


def per_image(p, owner, n, has_crop):
    """The appliance's frame score: the crop with the best max(fire, smoke); 0 when the grid proposed nothing."""
    out = [[0.0, 0.0] for _ in range(n)]
    for (a, b), i in zip(p, owner):
        if has_crop[i] and max(a, b) > max(out[i]):
            out[i] = [float(a), float(b)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=ROOT.parent / "shared/fixtures/train")
    ap.add_argument("--dev", type=Path, default=ROOT.parent / "shared/fixtures/frames")
    ap.add_argument("--boxes", type=Path, required=True, help="eval frames --dump-boxes of the training set")
    ap.add_argument("--dev-boxes", type=Path, required=True, help="the same for the dev split (scoring only)")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "backbone-model")
    ap.add_argument("--size", type=int, default=128, help="model input side")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    np.random.seed(SEED)
    import tensorflow as tf
    import keras

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tm.SIZE = args.size
    rows = tm.load_set(args.train, f"train-cache-{tm.KEEP_SIDE}.pkl")
    dev = tm.load_set(args.dev, f"dev-cache-{tm.KEEP_SIDE}.pkl")
    tm.attach_boxes(args.boxes, rows)
    tm.attach_boxes(args.dev_boxes, dev)
    weights = nsfwjs_weights()
    model, full = backbone(keras, weights, args.size)
    n_macs = macs(full, args.size)
    log(f"backbone to {CUT} at {args.size}x{args.size}: {n_macs} multiply-adds")
    x, owner = samples(rows, args.size)
    xd, owner_d = samples(dev, args.size)
    f, fd = features(model, x), features(model, xd)
    log(f"{len(x)} training samples, {len(xd)} dev samples featurised ({time.time() - t0:.0f}s)")
    y = np.array([[rows[i]["fire"], rows[i]["smoke"]] for i in owner], dtype=np.float32)
    has = [bool(r["grid"]) for r in rows]
    has_d = [bool(r["grid"]) for r in dev]

    fold_of = tm.scene_folds(rows, args.folds)
    fold = np.array([fold_of[rows[i]["group"]] for i in owner])
    cv = {}
    for c in CS:
        scores = [None] * len(rows)
        per_fold = []
        for k in range(args.folds):
            w, b = fit(f[fold != k], y[fold != k], c)
            test = [i for i, r in enumerate(rows) if fold_of[r["group"]] == k]
            sel = fold == k
            s = per_image(predict(f[sel], w, b), owner[sel], len(rows), has)
            for i in test:
                scores[i] = s[i]
            trows = [rows[i] for i in test]
            per_fold.append({"fold": k, "test_images": len(test), "summary": tm.summary(trows, [s[i] for i in test]),
                             "curve": tm.curve(trows, [s[i] for i in test])})
        cv[c] = {"per_fold": per_fold, "pooled": {"summary": tm.summary(rows, scores), "curve": tm.curve(rows, scores)}}
        log(f"C={c}: CV pipeline {cv[c]['pooled']['summary']}")
    best = max(CS, key=lambda c: cv[c]["pooled"]["summary"]["auc_any_vs_negatives"])
    log(f"chosen by CV: C={best}")

    w, b = fit(f, y, best)
    xi = keras.Input((args.size, args.size, 3))
    head = keras.layers.Dense(2, activation="sigmoid")
    net = keras.Model(xi, head(model(xi)))
    head.set_weights([w, b])
    rng = np.random.default_rng(SEED)
    rep_x = x[rng.choice(len(x), size=400, replace=False)]
    args.out.mkdir(parents=True, exist_ok=True)
    f32, i8 = tm.export(tf, net, rep_x, args.out)
    log(f"fire-f32.tflite {len(f32)} B, fire-int8.tflite {len(i8)} B")

    # Dev split, never fitted on: the exported int8 model through TF's interpreter (what ships).
    p_i8 = [tm.tflite_run(tf, i8, a.astype(np.float64))[0] for a in xd]
    dev_i8 = per_image(p_i8, owner_d, len(dev), has_d)
    dev_f32 = per_image(predict(fd, w, b), owner_d, len(dev), has_d)
    metrics = {
        "recipe": "backbone",
        "backbone": f"ImageNet MobileNetV2 (alpha 1.0) to {CUT}, from npm nsfwjs 4.3.0",
        "input": args.size,
        "train_images": len(rows),
        "scenes": len(fold_of),
        "dev_frames": len(dev),
        "training_samples": len(x),
        "parameters": int(net.count_params()),
        "macs": n_macs,
        "C": best,
        "cv": {"folds": args.folds, "by_C": {str(c): cv[c] for c in CS}},
        "dev_float_candidates": {"summary": tm.summary(dev, dev_f32), "curve": tm.curve(dev, dev_f32)},
        "dev_int8_candidates": {"summary": tm.summary(dev, dev_i8), "curve": tm.curve(dev, dev_i8)},
    }
    tm.print_curve(f"grouped CV, pipeline, C={best}: {cv[best]['pooled']['summary']}", cv[best]["pooled"]["curve"])
    tm.print_curve(f"dev split (int8, grid candidates): {metrics['dev_int8_candidates']['summary']}",
                   metrics["dev_int8_candidates"]["curve"])

    tm.write_reference(tf, args.out, f32, i8)
    metrics["seconds"] = round(time.time() - t0)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(f"done in {metrics['seconds']}s")


if __name__ == "__main__":
    main()
