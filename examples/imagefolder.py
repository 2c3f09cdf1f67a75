"""Bring your own data: write a small ImageFolder tree, then run the pipeline on it unchanged.

    python examples/imagefolder.py /tmp/shapes
    dvc exp run -S data.dataset=imagefolder -S data.folder=/tmp/shapes -S data.known=random \\
        -S data.num_known=3 -S 'data.splits=[0,1]' -S data.image_size=0

Your own data needs only the layout: ``<folder>/train/<class>/*.png|jpg`` and
``<folder>/test/<class>/*``, class names = folder names (sorted, as torchvision's ImageFolder).
:func:`build_tree` writes such a tree: 5 classes of 20x14 noise images with a bright vertical bar
whose column codes the class (inside the central 14x14 crop that the computed resolution keeps).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog", "fox", "owl", "yak")


def build_tree(root: str | Path, n_train: int = 10, n_test: int = 6, grey: bool = False,
               classes=CLASSES, seed: int = 0) -> Path:
    """Write ``root/train/<class>/<class>_<i>.png`` (``n_train`` each) and ``root/test/...`` (``n_test``
    each); RGB (or ``grey``) 20x14 uint8 images, the same for the same ``seed``. Returns ``root``.
    Raises FileExistsError if a class folder already exists (nothing is overwritten)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (14, 20, 3), dtype=np.uint8)
                img[:, 3 + 3 * k:5 + 3 * k] = 230
                Image.fromarray(img[..., 0] if grey else img).save(root / split / c / f"{c}_{i}.png")
    return root


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="where to write the tree (must not hold it already)")
    ap.add_argument("--train", type=int, default=10, help="training images per class (default 10)")
    ap.add_argument("--test", type=int, default=6, help="test images per class (default 6)")
    ap.add_argument("--grey", action="store_true", help="1-channel images")
    args = ap.parse_args(argv)
    root = build_tree(args.folder, args.train, args.test, args.grey)
    print(f"wrote {root}/train and {root}/test ({len(CLASSES)} classes); run the pipeline on it with\n"
          f"  dvc exp run -S data.dataset=imagefolder -S data.folder={root.resolve()} -S data.known=random "
          f"-S data.num_known=3 -S 'data.splits=[0,1]' -S data.image_size=0")
    return root


if __name__ == "__main__":
    main()
