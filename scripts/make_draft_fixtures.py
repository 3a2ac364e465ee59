"""Fixtures for kiln's reduced-size JPEG decoding (`kiln_data::decode::imread_draft`) against PIL's
`Image.draft`, which decodes through libjpeg(-turbo)'s scaled IDCT.

Writes crates/kiln-data/tests/fixtures/draft/:
- mosaic_420.jpg, mosaic_444.jpg: 251 x 187 colour mosaics of real Fashion-MNIST items (the vendored
  subset), each tinted and upscaled, on a gradient; quality 90, chroma 4:2:0 and 4:4:4; odd sizes so
  the last MCU is partial;
- grey.jpg: the same mosaic's luma as a one-channel JPEG;
- mosaic_420_exif6.jpg: mosaic_420 with EXIF orientation 6 (rotate 90 degrees clockwise on display);
- large.jpg: 2048 x 1536, two flat colours, quality 50: the size an 8x reduction is for;
- <name>.d<S>.rgb: PIL's `draft("RGB", (w // S, h // S))` result for S in 2, 4, 8, converted to
  RGB and EXIF-transposed (as kiln shows images), raw HWC u8; manifest.json has their sizes.

Usage: python scripts/make_draft_fixtures.py   (from the repository root; needs numpy, PIL)
"""
import gzip, json, os, struct
import numpy as np
from PIL import Image, ImageOps

OUT = "crates/kiln-data/tests/fixtures/draft"
rng = np.random.default_rng(7)

def idx(path):
    raw = gzip.open(path).read()
    dims = struct.unpack(">" + "I" * raw[3], raw[4:4 + 4 * raw[3]])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)

items = idx("data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz")
H, W = 187, 251
yy, xx = np.mgrid[0:H, 0:W]
canvas = np.stack([40 + 150 * xx / W, 60 + 120 * yy / H, 200 - 120 * (xx + yy) / (W + H)], axis=2)
for k in range(14):
    size = int(rng.integers(40, 90))
    item = np.asarray(Image.fromarray(items[k]).resize((size, size), Image.BILINEAR), np.float64) / 255
    tint = rng.uniform(0, 255, 3)
    y, x = int(rng.integers(0, H - size)), int(rng.integers(0, W - size))
    region = canvas[y:y + size, x:x + size]
    canvas[y:y + size, x:x + size] = region * (1 - item[..., None]) + tint * item[..., None]
mosaic = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))

os.makedirs(OUT, exist_ok=True)
mosaic.save(f"{OUT}/mosaic_420.jpg", quality=90, subsampling=2)
mosaic.save(f"{OUT}/mosaic_444.jpg", quality=90, subsampling=0)
mosaic.convert("L").save(f"{OUT}/grey.jpg", quality=90)
exif = Image.Exif(); exif[0x0112] = 6
mosaic.save(f"{OUT}/mosaic_420_exif6.jpg", quality=90, subsampling=2, exif=exif)
large = np.full((1536, 2048, 3), (200, 120, 40), np.uint8)
large[300:1200, 500:1500] = (30, 90, 220)
Image.fromarray(large).save(f"{OUT}/large.jpg", quality=50)

manifest = {}
for name in ["mosaic_420.jpg", "mosaic_444.jpg", "grey.jpg", "mosaic_420_exif6.jpg"]:
    for s in [2, 4, 8]:
        im = Image.open(f"{OUT}/{name}")
        w, h = im.size
        im.draft("RGB", (w // s, h // s))
        rgb = ImageOps.exif_transpose(im.convert("RGB"))
        np.asarray(rgb).tofile(f"{OUT}/{name}.d{s}.rgb")
        manifest[f"{name}.d{s}"] = [rgb.size[1], rgb.size[0]]
json.dump(manifest, open(f"{OUT}/manifest.json", "w"), indent=1)
print(manifest)
