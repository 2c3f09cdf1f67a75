"""Test helpers: small archives in each official format, and a local HTTP server that serves them.

The archives have the official layouts (file names, folders, pickle keys, idx headers, .mat
variables, val annotations) with few, small, seeded images, so the real download and preparation
code runs on them from URL to ready dataset.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


class Server:
    """A local HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) with Range support.

    Paths under ``/drop/`` send their full Content-Length but close the connection after half of
    the body the first time; paths under ``/trunc/`` serve only the first half, as if complete;
    paths under ``/long/`` append ``extra`` bytes of junk (announced in Content-Length), paths under
    ``/nolength/`` do the same without a Content-Length (the body ends when the connection closes).
    ``log`` records (path, Range header) of every request.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.dropped: set[str] = set()
        self.extra = 1 << 20
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                mode, name = "plain", self.path.lstrip("/")
                if name.startswith(("drop/", "trunc/", "long/", "nolength/")):
                    mode, name = name.split("/", 1)
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if mode == "trunc":
                    data = data[: len(data) // 2]
                if mode in ("long", "nolength"):
                    data = data + bytes(server.extra)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if mode == "nolength":
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop" and self.path not in server.dropped:
                    server.dropped.add(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, name: str) -> list:
        return [r for r in self.log if r[0].endswith("/" + name)]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _pickle(d) -> bytes:
    return pickle.dumps(d, protocol=2)


def cifar10_tarball(n_train_per_class=10, n_test_per_class=6, seed=0):
    """cifar-10-python.tar.gz: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}.

    Returns (bytes, arrays) with arrays = x_train (N, 3, 32, 32), y_train, x_test, y_test.
    """
    rng = np.random.default_rng(seed)
    y_tr = np.tile(np.arange(10), n_train_per_class)
    y_te = np.tile(np.arange(10), n_test_per_class)
    x_tr = rng.integers(0, 256, (len(y_tr), 3, 32, 32), dtype=np.uint8)
    x_te = rng.integers(0, 256, (len(y_te), 3, 32, 32), dtype=np.uint8)
    members = {}
    for i, idx in enumerate(np.array_split(np.arange(len(y_tr)), 5)):
        members[f"cifar-10-batches-py/data_batch_{i + 1}"] = _pickle(
            {"batch_label": f"training batch {i + 1} of 5", "labels": y_tr[idx].tolist(),
             "data": x_tr[idx].reshape(len(idx), -1), "filenames": [f"{j}.png" for j in idx]})
    members["cifar-10-batches-py/test_batch"] = _pickle(
        {"batch_label": "testing batch 1 of 1", "labels": y_te.tolist(), "data": x_te.reshape(len(y_te), -1)})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members["cifar-10-batches-py/batches.meta"] = _pickle({"label_names": names, "num_cases_per_batch": 10000})
    return _tar(members), {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def cifar100_tarball(n_train_per_class=1, n_test_per_class=2, seed=1):
    rng = np.random.default_rng(seed)
    y_tr = np.tile(np.arange(100), n_train_per_class)
    y_te = np.tile(np.arange(100), n_test_per_class)
    x_tr = rng.integers(0, 256, (len(y_tr), 3, 32, 32), dtype=np.uint8)
    x_te = rng.integers(0, 256, (len(y_te), 3, 32, 32), dtype=np.uint8)
    members = {
        "cifar-100-python/train": _pickle({"fine_labels": y_tr.tolist(), "coarse_labels": (y_tr // 5).tolist(),
                                           "data": x_tr.reshape(len(y_tr), -1)}),
        "cifar-100-python/test": _pickle({"fine_labels": y_te.tolist(), "coarse_labels": (y_te // 5).tolist(),
                                          "data": x_te.reshape(len(y_te), -1)}),
        "cifar-100-python/meta": _pickle({"fine_label_names": [f"class{i:02d}" for i in range(100)],
                                          "coarse_label_names": [f"super{i}" for i in range(20)]}),
    }
    return _tar(members), {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _idx(arr: np.ndarray) -> bytes:
    magic = 0x0803 if arr.ndim == 3 else 0x0801
    return gzip.compress(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def mnist_files(n_train_per_class=6, n_test_per_class=4, seed=2):
    """The four MNIST idx.gz files (big-endian idx headers, 28x28 uint8)."""
    rng = np.random.default_rng(seed)
    y_tr = np.tile(np.arange(10, dtype=np.uint8), n_train_per_class)
    y_te = np.tile(np.arange(10, dtype=np.uint8), n_test_per_class)
    x_tr = rng.integers(0, 256, (len(y_tr), 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, (len(y_te), 28, 28), dtype=np.uint8)
    files = {"train-images-idx3-ubyte.gz": _idx(x_tr), "train-labels-idx1-ubyte.gz": _idx(y_tr),
             "t10k-images-idx3-ubyte.gz": _idx(x_te), "t10k-labels-idx1-ubyte.gz": _idx(y_te)}
    return files, {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def svhn_mat(n_per_class=4, seed=3) -> tuple[bytes, dict]:
    """A ``*_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with labels 1..10 (10 = digit 0)."""
    import scipy.io as sio

    rng = np.random.default_rng(seed)
    digits = np.tile(np.arange(10), n_per_class)
    x = rng.integers(0, 256, (len(digits), 3, 32, 32), dtype=np.uint8)
    y = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)
    buf = io.BytesIO()
    sio.savemat(buf, {"X": np.transpose(x, (2, 3, 1, 0)), "y": y})
    return buf.getvalue(), {"x": x, "y": digits}


def tinyimagenet_zip(n_classes=200, train_per_class=1, val_per_class=1, seed=4):
    """tiny-imagenet-200.zip: wnids.txt (unsorted), train/<wnid>/images/*.JPEG, val/images + val_annotations.txt.

    Every image of the class with sorted index k is the solid colour (k, 255 - k, 128).
    """
    rng = np.random.default_rng(seed)
    wnids = [f"n{10000000 + 7919 * i:08d}" for i in range(n_classes)]
    order = list(rng.permutation(wnids))
    sorted_idx = {w: i for i, w in enumerate(sorted(wnids))}
    members = {"tiny-imagenet-200/wnids.txt": ("\n".join(order) + "\n").encode(),
               "tiny-imagenet-200/words.txt": "".join(f"{w}\tthing {w}\n" for w in wnids).encode()}

    def img(k):
        return _jpeg(np.broadcast_to(np.array([k, 255 - k, 128], np.uint8), (64, 64, 3)).copy())

    ann = []
    for w in order:
        k = sorted_idx[w]
        members[f"tiny-imagenet-200/train/{w}/{w}_boxes.txt"] = b""
        for j in range(train_per_class):
            members[f"tiny-imagenet-200/train/{w}/images/{w}_{j}.JPEG"] = img(k)
        for j in range(val_per_class):
            name = f"val_{len(ann)}.JPEG"
            members[f"tiny-imagenet-200/val/images/{name}"] = img(k)
            ann.append(f"{name}\t{w}\t0\t0\t63\t63")
    members["tiny-imagenet-200/val/val_annotations.txt"] = ("\n".join(ann) + "\n").encode()
    members["tiny-imagenet-200/test/images/test_0.JPEG"] = img(0)
    return _zip(members), {"wnids": sorted(wnids)}


def cifar10c_tar(test: dict, corruptions=("gaussian_noise", "contrast")) -> bytes:
    """CIFAR-10-C.tar: CIFAR-10-C/<corruption>.npy (5 n, 32, 32, 3) and labels.npy (5 n,).

    Severity 1 rows are the clean test images; severities 2..5 are black images.
    """
    x = np.transpose(test["x_test"], (0, 2, 3, 1))
    n = len(x)
    stack = np.concatenate([x] + [np.zeros_like(x)] * 4)
    labels = np.tile(test["y_test"].astype(np.uint8), 5)

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    members = {f"CIFAR-10-C/{c}.npy": npy(stack) for c in corruptions}
    members["CIFAR-10-C/labels.npy"] = npy(labels)
    assert len(labels) == 5 * n
    return _tar(members, "w")


def dtd_tarball(classes=("banded", "woven"), per_class=3) -> bytes:
    members = {}
    for ci, c in enumerate(classes):
        for j in range(per_class):
            rgb = np.full((48 + 8 * j, 40, 3), 60 * ci + 10 * j, np.uint8)
            members[f"dtd/images/{c}/{c}_{j:04d}.jpg"] = _jpeg(rgb)
    members["dtd/labels/train1.txt"] = b"".join(f"{c}/{c}_0000.jpg\n".encode() for c in classes)
    return _tar(members)


def places_tar(n=12) -> bytes:
    return _tar({f"val_256/Places365_val_{i + 1:08d}.jpg": _jpeg(np.full((256, 256, 3), 20 * i % 256, np.uint8))
                 for i in range(n)}, "w")


def unsafe_tar(member: str = "../evil.txt") -> bytes:
    return _tar({"ok.txt": b"fine", member: b"escaped"})


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
