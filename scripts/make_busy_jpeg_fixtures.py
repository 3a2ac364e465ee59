"""Write busy chroma-subsampled JPEGs and what OpenCV (libjpeg-turbo) decodes from them.

Usage: python scripts/make_busy_jpeg_fixtures.py crates/kiln-data/tests/fixtures/opencv-busy-jpeg

Issue 27 found kiln's JPEG decode (zune-jpeg) further from `cv2.imread` on busy 4:2:0 images than
docs/data.md said. These fixtures pin the measured difference: per-pixel colour noise and a
saturated checkerboard (chroma at the highest frequency), at sizes whose width is even but not a
multiple of the 16-pixel MCU (where zune-jpeg upsamples the last column from the encoder's padding
and libjpeg-turbo repeats the last chroma sample) and at one that is odd.
Each `<file>.raw` is `cv2.imread(file, cv2.IMREAD_COLOR)` as raw HWC BGR bytes; `manifest.json`
lists shapes and the OpenCV version. Needs: opencv-python-headless, numpy.
"""
import json, os, sys
import cv2, numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(20261203)
cases = []
for h, w in [(100, 100), (45, 63)]:
    noise = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = np.where(((xx + yy) % 2 == 0)[..., None], [255, 0, 0], [0, 0, 255]).astype(np.uint8)
    for name, img in [("noise", noise), ("checker", checker)]:
        for q, sub, flag in [(95, "420", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420),
                             (75, "422", cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422)]:
            f = f"{name}{h}x{w}_q{q}_{sub}.jpg"
            assert cv2.imwrite(os.path.join(out, f), img,
                               [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, flag])
            dec = cv2.imread(os.path.join(out, f), cv2.IMREAD_COLOR)
            dec.tofile(os.path.join(out, f + ".raw"))
            cases.append({"file": f, "shape": list(dec.shape), "expected": f + ".raw"})
json.dump({"opencv": cv2.__version__, "cases": cases}, open(os.path.join(out, "manifest.json"), "w"), indent=1)
print(f"{len(cases)} cases with OpenCV {cv2.__version__}")
