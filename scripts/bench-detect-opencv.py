#!/usr/bin/env python3
"""OpenCV baseline for `ember-tools bench detect`: cvtColor → HSV, two inRange masks (EmberEye's), countNonZero,
on the same 640×480 frames (tests/fixtures/frames resized), one thread. Prints one JSON object per input format."""

import glob
import json
import sys
import time

import cv2
import numpy as np

cv2.setNumThreads(1)
W, H, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
files = sorted(glob.glob("tests/fixtures/frames/*.jpg"))
bgr = [cv2.resize(cv2.imread(f), (W, H), interpolation=cv2.INTER_NEAREST) for f in files]
# YUYV as a V4L2 camera delivers it (BT.601 limited range), built from the same frames.
def to_yuyv(img):
    yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV)  # full-range 4:4:4; good enough for timing
    y, u, v = yuv[:, :, 0], yuv[:, :, 1], yuv[:, :, 2]
    out = np.empty((H, W, 2), np.uint8)
    out[:, :, 0] = y
    out[:, 0::2, 1] = u[:, 0::2]
    out[:, 1::2, 1] = v[:, 0::2]
    return out
yuyv = [to_yuyv(f) for f in bgr]
lo_f, hi_f = np.array([0, 100, 100]), np.array([40, 255, 255])
lo_s, hi_s = np.array([0, 0, 180]), np.array([180, 60, 255])

def pipeline(img, fmt):
    if fmt == "yuyv":
        img = cv2.cvtColor(img, cv2.COLOR_YUV2BGR_YUYV)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    f = cv2.countNonZero(cv2.inRange(hsv, lo_f, hi_f))
    s = cv2.countNonZero(cv2.inRange(hsv, lo_s, hi_s))
    return min(1.0, 3 * f / (W * H) + 1.5 * s / (W * H))

for fmt, frames in (("rgb", bgr), ("yuyv", yuyv)):
    for i in range(50):
        pipeline(frames[i % len(frames)], fmt)
    ns, cpu = [], []
    for i in range(N):
        f = frames[i % len(frames)]
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        pipeline(f, fmt)
        ns.append(time.perf_counter_ns() - t)
        cpu.append(time.thread_time_ns() - c)
    ns.sort()
    cpu_mean = int(sum(cpu) / N)
    cpu.sort()
    print(json.dumps({"detector": "opencv", "format": fmt, "width": W, "height": H, "frames": N,
                      "mean_ns": int(sum(ns) / N), "p50_ns": ns[N // 2], "p99_ns": ns[min(N - 1, int(N * 0.99))],
                      "cpu_mean_ns": cpu_mean, "cpu_p50_ns": cpu[N // 2], "opencv": cv2.__version__}))
