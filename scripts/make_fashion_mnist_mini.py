#!/usr/bin/env python3
"""Re-create data/fashion-mnist-mini/ from the real Fashion-MNIST (Debian package dataset-fashion-mnist).

    apt-get install dataset-fashion-mnist
    python3 scripts/make_fashion_mnist_mini.py [--src /usr/share/datasets/fashion-mnist] [--out data/fashion-mnist-mini]

Keeps the first N_TRAIN training and the first N_TEST test samples, in the original idx format
(same magic numbers and big-endian header, first dimension rewritten), gzipped with mtime=0 so the
output is byte-for-byte reproducible. Standard library only.
"""
import argparse, gzip, hashlib, os, struct

N_TRAIN = 10_000
N_TEST = 2_000
FILES = [
    ("train-images-idx3-ubyte.gz", N_TRAIN),
    ("train-labels-idx1-ubyte.gz", N_TRAIN),
    ("t10k-images-idx3-ubyte.gz", N_TEST),
    ("t10k-labels-idx1-ubyte.gz", N_TEST),
]


def subset(raw: bytes, n: int) -> bytes:
    zero, dtype, ndim = raw[0:2], raw[2], raw[3]
    assert zero == b"\x00\x00" and dtype == 0x08, "expected u8 idx data"
    dims = list(struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim]))
    per_item = 1
    for d in dims[1:]:
        per_item *= d
    assert dims[0] >= n, f"only {dims[0]} items, asked for {n}"
    header = raw[:4] + struct.pack(">" + "I" * ndim, n, *dims[1:])
    body = raw[4 + 4 * ndim : 4 + 4 * ndim + n * per_item]
    return header + body


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "fashion-mnist-mini"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name, n in FILES:
        with gzip.open(os.path.join(a.src, name), "rb") as f:
            raw = f.read()
        out = subset(raw, n)
        path = os.path.join(a.out, name)
        with open(path, "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                g.write(out)
        print(f"{path}: {n} items, sha256(uncompressed)={hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main()
