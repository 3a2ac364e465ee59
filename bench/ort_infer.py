#!/usr/bin/env python3
"""Inference throughput of an ONNX model in ONNX Runtime, for bench/onnx.sh.

Usage: ort_infer.py MODEL.onnx INPUT.npy [--threads 2] [--steps 4] [--expect PROBS.npy]

Times `session.run` on the whole INPUT batch (two untimed warm-up runs first) and prints
`ort_images_per_s=… session_s=… max_abs_diff=…` (the last against --expect, kiln predict's
probabilities on the same input, when given).
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    args = sys.argv[1:]
    opts = {"--threads": "2", "--steps": "4", "--expect": None}
    for k in list(opts):
        if k in args:
            i = args.index(k)
            opts[k] = args[i + 1]
            del args[i : i + 2]
    model, inp = args
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(opts["--threads"])
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    session_s = time.perf_counter() - t0
    x = np.load(inp)
    for _ in range(2):
        probs = session.run(["probabilities"], {"input": x})[0]
    steps = int(opts["--steps"])
    t0 = time.perf_counter()
    for _ in range(steps):
        probs = session.run(["probabilities"], {"input": x})[0]
    per_s = steps * x.shape[0] / (time.perf_counter() - t0)
    diff = float("nan")
    if opts["--expect"]:
        diff = float(np.abs(probs - np.load(opts["--expect"])).max())
    print(f"ort_images_per_s={per_s:.1f} session_s={session_s:.2f} max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
