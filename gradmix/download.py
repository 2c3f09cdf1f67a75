"""Verified, resumable downloads and safe extraction of dataset archives.

A :class:`Resource` names one official file: its URLs (tried in order), its checksum (md5 and/or
sha256) and, where published, its size. :func:`fetch` downloads it into ``<root>/downloads/``:

* **Resumable.** Bytes go to ``<file>.part``; an interrupted transfer is continued with an HTTP
  ``Range`` request (on the next attempt, or the next run), never restarted from zero unless the
  server ignores ranges.
* **Verified.** The complete file is checked against its checksum (and size) *before* it gets its
  final name. A file that fails is moved to ``<root>/quarantine/`` and a :class:`ChecksumError`
  names the file, the expected and the actual digest; it is never extracted or read.
* **Fetched once.** A verified file is recorded in ``<root>/prepared/.verified/`` (size, mtime,
  digest); later calls return it without a request or a re-hash. A final file that no longer
  verifies (edited, truncated on disk) is quarantined and fetched again.

:func:`safe_extract` unpacks tar (any compression) and zip archives after checking *every* member:
no absolute path, no ``..`` component, no link, device or FIFO; it extracts into a temporary folder
that is renamed into place only when complete. ``mirror`` (``data.mirror`` in params.yaml) replaces
the official hosts with ``<mirror>/<filename>``: a team mirror, or the tests' local server.
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download could not be completed; the message says what to do."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum or size (it has been quarantined)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would escape the target folder, or is a link/device; nothing was extracted."""


@dataclass(frozen=True)
class Resource:
    """One official file: ``filename`` under ``<root>/downloads``, its URLs (mirrors, tried in order),
    md5 and/or sha256 hex digests, and its size in bytes (0 = not published)."""

    filename: str
    urls: tuple[str, ...]
    md5: str = ""
    sha256: str = ""
    size: int = 0

    def __post_init__(self):
        if not (self.md5 or self.sha256):
            raise ValueError(f"resource {self.filename}: give an md5 or sha256 checksum")
        if PurePosixPath(self.filename).name != self.filename:
            raise ValueError(f"resource filename {self.filename!r} must be a plain file name")

    def expected(self) -> tuple[str, str]:
        """(algorithm, hex digest) used to verify: sha256 when published, else md5."""
        return ("sha256", self.sha256.lower()) if self.sha256 else ("md5", self.md5.lower())


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def quarantine(path: Path, root: Path) -> Path:
    """Move a bad file to ``<root>/quarantine/<name>.<UTC time>`` and return its new path."""
    qdir = Path(root) / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.{time.time_ns() % 10**9}"
    os.replace(path, target)
    return target


def _check(path: Path, res: Resource, root: Path) -> str:
    """Verify ``path`` against ``res``; on failure quarantine it and raise ChecksumError."""
    size = path.stat().st_size
    algorithm, want = res.expected()
    problem = None
    if res.size and size != res.size:
        problem = f"size {size} bytes, expected {res.size} (truncated or wrong file)"
    else:
        got = file_digest(path, algorithm)
        if got != want:
            problem = f"{algorithm} {got}, expected {want} ({size} bytes)"
    if problem:
        moved = quarantine(path, root)
        raise ChecksumError(f"{res.filename}: checksum verification failed: {problem}. The file was "
                            f"moved to {moved} and will not be used; run again to download it afresh.")
    return want


def _stamp_path(root: Path, res: Resource) -> Path:
    return Path(root) / "prepared" / ".verified" / f"{res.filename}.json"


def _stamped(path: Path, res: Resource, root: Path) -> bool:
    """True if ``path`` was verified before and has not changed since (size, mtime, digest)."""
    stamp = _stamp_path(root, res)
    if not (path.is_file() and stamp.is_file()):
        return False
    try:
        rec = json.loads(stamp.read_text())
    except ValueError:
        return False
    st = path.stat()
    return rec == {"digest": res.expected()[1], "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_stamp(path: Path, res: Resource, root: Path) -> None:
    stamp = _stamp_path(root, res)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": res.expected()[1], "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    os.replace(tmp, stamp)


@contextmanager
def _locked(path: Path):
    """An exclusive advisory lock, so two processes never write the same download."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def urls_for(res: Resource, mirror: str = "") -> list[str]:
    """The URLs to try: ``<mirror>/<filename>`` when a mirror is set, else the official ones."""
    return [f"{mirror.rstrip('/')}/{res.filename}"] if mirror else list(res.urls)


def _transfer(url: str, part: Path, timeout: float, progress: bool, size: int = 0) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its current size).

    Never writes past the expected size: ``size`` (the published one) when known, else the length the
    server announces; a server that sends more (a wrong or padded file, a body without a length) is
    cut off there, and the checksum decides. Raises DownloadError on an incomplete body (the part file
    is kept for the next resume).
    """
    have = part.stat().st_size if part.exists() else 0
    if size and have >= size:            # complete (or too long: the size check quarantines it)
        return
    req = urllib.request.Request(url, headers={"User-Agent": "gradmix-download/1"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:       # range not satisfiable: the part file is already complete
            return
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored the range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if size:
            total = size if total is None else min(total, size)
        mode = "ab" if have else "wb"
        got = have
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                         desc=part.name[:-5], disable=not progress, mininterval=1.0) as bar:
            while total is None or got < total:
                try:
                    block = resp.read(CHUNK if total is None else min(CHUNK, total - got))
                except (OSError, http.client.HTTPException) as e:  # connection dropped mid-body
                    raise DownloadError(f"{url}: transfer interrupted after {got} bytes ({e})") from None
                if not block:
                    break
                f.write(block)
                got += len(block)
                bar.update(len(block))
    if total is not None and got < total:
        raise DownloadError(f"{url}: incomplete transfer, got {got} of {total} bytes")


def fetch(res: Resource, root: str | Path, mirror: str = "", *, retries: int = 3, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Download ``res`` into ``<root>/downloads/`` (resumable), verify it, return its path.

    Nothing that already verified is fetched again. A checksum or size mismatch quarantines the file
    and raises :class:`ChecksumError`; an interrupted transfer is resumed up to ``retries`` times,
    then raises :class:`DownloadError`, keeping ``<file>.part`` so the next run resumes it.
    """
    root = Path(root)
    dest = root / "downloads" / res.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root / "prepared" / ".locks" / f"{res.filename}.lock"):
        if _stamped(dest, res, root):
            return dest
        if dest.exists():                       # present but not (or no longer) known to verify
            try:
                _check(dest, res, root)
                _write_stamp(dest, res, root)
                return dest
            except ChecksumError as e:          # quarantined by _check: fetch it afresh
                warnings.warn(str(e), stacklevel=2)
        part = dest.with_name(dest.name + ".part")
        errors = []
        for url in urls_for(res, mirror):
            for _ in range(retries + 1):
                try:
                    _transfer(url, part, timeout, progress, res.size)
                except DownloadError as e:      # interrupted mid-body: resume from the part file
                    errors.append(str(e))
                    continue
                except OSError as e:            # unreachable, HTTP error, timeout: next mirror
                    errors.append(f"{url}: {e}")
                    break
                _check(part, res, root)         # quarantines and raises on mismatch
                os.replace(part, dest)
                _write_stamp(dest, res, root)
                return dest
        hint = (f" The partial file {part} ({part.stat().st_size} bytes) is kept; run again to resume."
                if part.exists() else "")
        raise DownloadError(f"could not download {res.filename}: " + "; ".join(errors[-4:]) + "." + hint +
                            " Set data.mirror in params.yaml to fetch from another host.")


# ---------------------------------------------------------------------------------------------
# safe extraction


def _member_problem(name: str, kind: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in p.parts:
        return "'..' in path"
    if kind not in ("file", "dir"):
        return f"{kind} member"
    return None


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isfile():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym() or m.islnk():
        return "link"
    return "device/fifo"


def archive_members(archive: str | Path) -> list[str]:
    """Names of the members of a tar or zip archive, after the safety check of :func:`safe_extract`."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            items = [(i.filename, "dir" if i.is_dir() else "file") for i in z.infolist()]
    else:
        with tarfile.open(archive) as t:
            items = [(m.name, _tar_kind(m)) for m in t.getmembers()]
    bad = [(n, why) for n, k in items if (why := _member_problem(n, k))]
    if bad:
        listed = ", ".join(f"{n!r} ({why})" for n, why in bad[:5])
        raise UnsafeArchiveError(f"{archive.name}: refusing to extract: {len(bad)} unsafe member(s): {listed}")
    return [n for n, _ in items]


def safe_extract(archive: str | Path, dest: str | Path, members=None) -> Path:
    """Extract ``archive`` (tar.* or zip) into ``dest`` atomically; every member is checked first.

    ``members``: optional collection of member names to extract (default: all). ``dest`` must not
    exist yet; the archive is unpacked into ``<dest>.tmp`` and renamed when complete, so a folder at
    ``dest`` is always a complete extraction.
    """
    archive, dest = Path(archive), Path(dest)
    names = archive_members(archive)
    wanted = set(names) if members is None else set(members)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    base = tmp.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if info.filename in wanted:
                    _within(base, info.filename)
                    z.extract(info, tmp)
    else:
        with tarfile.open(archive) as t:
            for m in t:
                if m.name in wanted:
                    _within(base, m.name)
                    t.extract(m, tmp, filter="data")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _within(base: Path, name: str) -> None:
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise UnsafeArchiveError(f"refusing to extract {name!r}: it resolves outside {base}")
