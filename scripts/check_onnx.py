#!/usr/bin/env python3
"""Checks kiln's ONNX exports with ONNX's checker and ONNX Runtime (Python only checks).

Usage: check_onnx.py MANIFEST.json [--tolerance 1e-4]

The manifest (written by kiln's tests) is a JSON list of cases:
  {"onnx": "model.onnx", "input": "x.npy", "logits": "logits.npy" (optional),
   "probabilities": "probs.npy" (optional)}
Paths are relative to the manifest's folder. For each case the model goes through
`onnx.checker.check_model(full_check=True)` (which also infers shapes), then runs in ONNX Runtime on
2 threads; each output given must equal kiln's within the tolerance (absolute). Prints one line per
case and "onnxruntime agrees on N models"; exits 1 on the first disagreement.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    args = sys.argv[1:]
    tolerance = 1e-4
    if "--tolerance" in args:
        i = args.index("--tolerance")
        tolerance = float(args[i + 1])
        del args[i : i + 2]
    manifest = args[0]
    root = os.path.dirname(os.path.abspath(manifest))
    with open(manifest) as f:
        cases = json.load(f)
    for case in cases:
        path = os.path.join(root, case["onnx"])
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        x = np.load(os.path.join(root, case["input"]))
        logits, probabilities = session.run(["logits", "probabilities"], {"input": x})
        worst = {}
        for name, got in (("logits", logits), ("probabilities", probabilities)):
            if name not in case:
                continue
            want = np.load(os.path.join(root, case[name]))
            if got.shape != want.shape:
                print(f"FAIL {case['onnx']}: {name} shape {got.shape}, kiln {want.shape}")
                return 1
            worst[name] = float(np.abs(got - want).max())
        line = ", ".join(f"max |{k} - expected| = {v:.2e}" for k, v in worst.items())
        line += f" (logits up to {float(np.abs(logits).max()):.3g})"
        if any(v > tolerance for v in worst.values()):
            print(f"FAIL {case['onnx']} on {case['input']} {list(x.shape)}: {line} (tolerance {tolerance})")
            return 1
        print(f"ok {case['onnx']} on {case['input']} {list(x.shape)}: {line}")
    print(f"onnxruntime agrees on {len(cases)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
