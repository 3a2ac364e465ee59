"""Write the decode fixtures: small images in every supported format, and what OpenCV reads from them.

Usage: python scripts/make_opencv_fixtures.py crates/kiln-data/tests/fixtures/opencv

For each input file the script stores `cv2.imread(path, cv2.IMREAD_COLOR)` and
`cv2.imread(path, cv2.IMREAD_GRAYSCALE)` as raw HWC bytes (`<file>.color.raw`, `<file>.gray.raw`) and
lists them in `manifest.json` with their shapes and the OpenCV version. kiln's decoder must match the
lossless formats bit for bit and JPEG within the decoder-to-decoder difference it reports.
Needs: opencv-python-headless, pillow, numpy, scikit-learn (for its bundled photo).
"""
import io, json, os, sys
import cv2, numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(20261128)
files = []

def save_pil(name, img, **kw):
    img.save(os.path.join(out, name), **kw); files.append(name)

def save_cv(name, arr, params=()):
    assert cv2.imwrite(os.path.join(out, name), arr, list(params)); files.append(name)

rgb = rng.integers(0, 256, size=(11, 13, 3), dtype=np.uint8)
rgba = rng.integers(0, 256, size=(11, 13, 4), dtype=np.uint8)
gray = rng.integers(0, 256, size=(11, 13), dtype=np.uint8)
# A real photo for the lossy format: random pixels are the worst case for JPEG, photos the usual one.
china = load_sample_images().images[0]  # 427x640 RGB
photo = np.ascontiguousarray(china[100:148, 200:264])  # 48x64

# PNG: 8-bit colour, alpha, grey, grey+alpha, palette, 1-bit, 16-bit colour and grey.
save_pil("rgb8.png", Image.fromarray(rgb))
save_pil("rgba8.png", Image.fromarray(rgba, "RGBA"))
save_pil("gray8.png", Image.fromarray(gray))
save_pil("gray_alpha.png", Image.fromarray(np.dstack([gray, gray[::-1]]), "LA"))
save_pil("palette.png", Image.fromarray(rgb).quantize(colors=16))
save_pil("gray1bit.png", Image.fromarray(gray).convert("1"))
save_cv("rgb16.png", rng.integers(0, 65536, size=(11, 13, 3), dtype=np.uint16))
save_cv("gray16.png", rng.integers(0, 65536, size=(11, 13), dtype=np.uint16))
# BMP (24-bit colour, 8-bit grey palette) and TIFF (colour, grey, 16-bit), PNM.
save_pil("rgb.bmp", Image.fromarray(rgb))
save_pil("gray.bmp", Image.fromarray(gray))
save_pil("rgb.tif", Image.fromarray(rgb))
save_pil("gray.tif", Image.fromarray(gray))
save_cv("rgb16.tif", rng.integers(0, 65536, size=(11, 13, 3), dtype=np.uint16))
save_pil("rgb.ppm", Image.fromarray(rgb))
save_pil("gray.pgm", Image.fromarray(gray))
save_pil("lossless.webp", Image.fromarray(rgb), lossless=True)
# JPEG: 4:2:0 (the default), 4:4:4, greyscale, progressive.
save_pil("photo420.jpg", Image.fromarray(photo), quality=90)
save_pil("photo444.jpg", Image.fromarray(photo), quality=90, subsampling=0)
save_pil("photo_gray.jpg", Image.fromarray(photo).convert("L"), quality=90)
save_pil("photo_progressive.jpg", Image.fromarray(photo), quality=90, progressive=True)
# EXIF orientation 1..8 on an asymmetric photo (48x64), and on a PNG (eXIf chunk).
for o in range(1, 9):
    exif = Image.Exif(); exif[0x0112] = o
    save_pil(f"orient{o}.jpg", Image.fromarray(photo), quality=95, exif=exif.tobytes())
exif = Image.Exif(); exif[0x0112] = 6
save_pil("orient6.png", Image.fromarray(rgb), exif=exif.tobytes())
# (No TIFF with an orientation tag: OpenCV 5.0.0's imread fails on one, "original_ptr == real_mat.data".)

manifest = {"opencv": cv2.__version__, "cases": []}
for name in files:
    for mode, flag in (("color", cv2.IMREAD_COLOR), ("gray", cv2.IMREAD_GRAYSCALE)):
        img = cv2.imread(os.path.join(out, name), flag)
        assert img is not None and img.dtype == np.uint8, name
        img = img.reshape(img.shape[0], img.shape[1], -1)
        raw = f"{name}.{mode}.raw"
        with open(os.path.join(out, raw), "wb") as f:
            f.write(np.ascontiguousarray(img).tobytes())
        manifest["cases"].append({"file": name, "mode": mode, "shape": list(img.shape), "expected": raw})
# Resize: cv2.resize(INTER_LINEAR) of a lossless image, shrinking and enlarging, colour and grey.
manifest["resize"] = []
for src, flag in (("rgb8.png", cv2.IMREAD_COLOR), ("gray8.png", cv2.IMREAD_GRAYSCALE)):
    img = cv2.imread(os.path.join(out, src), flag)
    for (h, w) in ((5, 7), (29, 31), (11, 40)):
        r = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        raw = f"{src}.resize{h}x{w}.raw"
        with open(os.path.join(out, raw), "wb") as f:
            f.write(np.ascontiguousarray(r).tobytes())
        manifest["resize"].append({"file": src, "mode": "color" if flag == cv2.IMREAD_COLOR else "gray",
                                   "shape": list(r.shape), "expected": raw})
# Area (cv2.INTER_AREA) downscaling, fractional and integer factors (OpenCV has a separate fast
# path for integer factors, hence the 12x16 image: 6x8 and 4x4 are integer, 5x7 fractional).
manifest["area"] = []
cv2.imwrite(os.path.join(out, "even12x16.png"), np.random.default_rng(7).integers(0, 256, size=(12, 16, 3), dtype=np.uint8))
for src, flag, sizes in (("rgb8.png", cv2.IMREAD_COLOR, ((5, 7), (4, 6), (3, 4), (11, 13))),
                         ("gray8.png", cv2.IMREAD_GRAYSCALE, ((5, 7), (4, 6), (3, 4), (11, 13))),
                         ("even12x16.png", cv2.IMREAD_COLOR, ((6, 8), (4, 4), (3, 8), (5, 7)))):
    img = cv2.imread(os.path.join(out, src), flag)
    for (h, w) in sizes:
        r = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, -1)
        raw = f"{src}.area{h}x{w}.raw"
        with open(os.path.join(out, raw), "wb") as f:
            f.write(np.ascontiguousarray(r).tobytes())
        manifest["area"].append({"file": src, "mode": "color" if flag == cv2.IMREAD_COLOR else "gray",
                                 "shape": list(r.shape), "expected": raw})
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(f"wrote {len(files)} images and {len(manifest['cases'])} OpenCV outputs to {out} (OpenCV {cv2.__version__})")
