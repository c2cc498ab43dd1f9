"""The notes' Sobel example, then the same kernel over a real Fashion-MNIST image.

Run:  python examples/sobel.py  [--data-dir DIR]
"""
import argparse
import gzip
import os
import sys

import numpy as np

import convcore as cc

SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"


def first_test_image(data_dir):
    path = os.path.join(data_dir, "t10k-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as fh:
        header = fh.read(16)
        if len(header) != 16 or int.from_bytes(header[:4], "big") != 2051:
            raise ValueError(f"{path} is not an IDX image file")
        rows, cols = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
        pixels = fh.read(rows * cols)
    return np.frombuffer(pixels, dtype=np.uint8).reshape(rows, cols).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("CONVCORE_DATA", DEFAULT_DIR))
    args = ap.parse_args()

    patch = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], dtype=np.float64)
    y = cc.conv2d(patch[None, None], SOBEL[None, None], bias=np.array([0.0]))
    print(f"notes' patch . Sobel kernel = {y.item():g} + bias")

    try:
        img = first_test_image(args.data_dir)
    except FileNotFoundError:
        print(f"no Fashion-MNIST in {args.data_dir}: apt-get install dataset-fashion-mnist",
              file=sys.stderr)
        return 1
    edges = cc.conv2d(img[None, None] / 255.0, SOBEL[None, None], padding=1)[0, 0]
    print(f"first Fashion-MNIST test image {img.shape}: vertical-edge map {edges.shape}, "
          f"range [{edges.min():.2f}, {edges.max():.2f}]")
    shades = " .:-=+*#%@"
    mag = np.abs(edges) / max(np.abs(edges).max(), 1e-12)
    for row in mag[::2]:
        print("".join(shades[min(int(v * len(shades)), len(shades) - 1)] for v in row[::1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
