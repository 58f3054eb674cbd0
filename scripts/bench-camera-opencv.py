#!/usr/bin/env python3
"""OpenCV peer for `ember-tools bench camera`: EmberEye's whole per-frame path on a JPEG camera, cv2.imdecode
(libjpeg-turbo, full size) then cvtColor → HSV, its two inRange masks and countNonZero, one thread, on the JPEG
files `bench camera --write-jpegs DIR` wrote (DIR/WxH/*.jpg). Prints one JSON object per size."""

import glob
import json
import os
import sys
import time

import cv2
import numpy as np

cv2.setNumThreads(1)
root, N = sys.argv[1], int(sys.argv[2])
lo_f, hi_f = np.array([0, 100, 100]), np.array([40, 255, 255])
lo_s, hi_s = np.array([0, 0, 180]), np.array([180, 60, 255])


def pipeline(buf):
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    f = cv2.countNonZero(cv2.inRange(hsv, lo_f, hi_f))
    s = cv2.countNonZero(cv2.inRange(hsv, lo_s, hi_s))
    return min(1.0, 3 * f / (w * h) + 1.5 * s / (w * h))


for d in sorted(os.listdir(root), key=lambda s: int(s.split("x")[0])):
    W, H = (int(v) for v in d.split("x"))
    bufs = [np.frombuffer(open(f, "rb").read(), np.uint8) for f in sorted(glob.glob(os.path.join(root, d, "*.jpg")))]
    for i in range(20):
        pipeline(bufs[i % len(bufs)])
    ns, dec, cpu = [], [], []
    for i in range(N):
        b = bufs[i % len(bufs)]
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        img = cv2.imdecode(b, cv2.IMREAD_COLOR)
        t1 = time.perf_counter_ns()
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        cv2.countNonZero(cv2.inRange(hsv, lo_f, hi_f))
        cv2.countNonZero(cv2.inRange(hsv, lo_s, hi_s))
        ns.append(time.perf_counter_ns() - t)
        dec.append(t1 - t)
        cpu.append(time.thread_time_ns() - c)
    for v in (ns, dec, cpu):
        v.sort()
    print(json.dumps({"path": "opencv imdecode + EmberEye rule", "width": W, "height": H, "frames": N,
                      "decode_p50_ns": dec[N // 2], "p50_ns": ns[N // 2], "p99_ns": ns[min(N - 1, int(N * 0.99))],
                      "mean_ns": int(sum(ns) / N), "cpu_p50_ns": cpu[N // 2], "opencv": cv2.__version__}))
