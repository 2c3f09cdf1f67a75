"""gradmix.download against a local HTTP server: verification, resume, quarantine, safe extraction."""
import io
import tarfile
import zipfile

import pytest

from archives import Server, md5, unsafe_tar, write
from gradmix.download import (ChecksumError, DownloadError, Resource, UnsafeArchiveError, fetch,
                              safe_extract)

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB, so a transfer spans several reads


@pytest.fixture
def server():
    s = Server()
    s.files["blob.bin"] = PAYLOAD
    yield s
    s.close()


def res(**kw):
    return Resource("blob.bin", ("http://invalid.invalid/blob.bin",), **{"md5": md5(PAYLOAD), **kw})


def test_fetch_verifies_and_never_fetches_twice(server, tmp_path):
    path = fetch(res(size=len(PAYLOAD)), tmp_path, server.url, progress=False)
    assert path == tmp_path / "downloads" / "blob.bin" and path.read_bytes() == PAYLOAD
    assert len(server.requests("blob.bin")) == 1
    assert fetch(res(size=len(PAYLOAD)), tmp_path, server.url, progress=False) == path
    assert len(server.requests("blob.bin")) == 1                 # verified once: no second request


def test_sha256_is_accepted(server, tmp_path):
    import hashlib

    r = Resource("blob.bin", (), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert fetch(r, tmp_path, server.url, progress=False).read_bytes() == PAYLOAD


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    path = fetch(res(), tmp_path, server.url + "/drop", progress=False)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for _, r in server.requests("blob.bin")]
    assert ranges[0] is None and ranges[1] == f"bytes={len(PAYLOAD) // 2}-"
    assert not (tmp_path / "downloads" / "blob.bin.part").exists()


def test_existing_part_file_is_resumed(server, tmp_path):
    write(tmp_path / "downloads" / "blob.bin.part", PAYLOAD[:1000])
    assert fetch(res(), tmp_path, server.url, progress=False).read_bytes() == PAYLOAD
    assert server.requests("blob.bin") == [("/blob.bin", "bytes=1000-")]


def test_checksum_mismatch_is_quarantined(server, tmp_path):
    with pytest.raises(ChecksumError, match="checksum verification failed: md5 .* expected 0{32}") as e:
        fetch(res(md5="0" * 32), tmp_path, server.url, progress=False)
    assert not (tmp_path / "downloads" / "blob.bin").exists()
    assert not (tmp_path / "downloads" / "blob.bin.part").exists()
    bad = list((tmp_path / "quarantine").iterdir())
    assert len(bad) == 1 and bad[0].read_bytes() == PAYLOAD and str(bad[0]) in str(e.value)


@pytest.mark.parametrize("size", [len(PAYLOAD), 0])
def test_truncated_file_fails_clearly_and_is_quarantined(server, tmp_path, size):
    with pytest.raises(ChecksumError, match="truncated" if size else "md5") as e:
        fetch(res(size=size), tmp_path, server.url + "/trunc", progress=False)
    assert f"{len(PAYLOAD) // 2}" in str(e.value)
    assert not (tmp_path / "downloads" / "blob.bin").exists()
    assert [p.stat().st_size for p in (tmp_path / "quarantine").iterdir()] == [len(PAYLOAD) // 2]


def test_corrupted_file_on_disk_is_quarantined_and_fetched_again(server, tmp_path):
    write(tmp_path / "downloads" / "blob.bin", b"garbage")
    with pytest.warns(UserWarning, match="checksum verification failed"):
        path = fetch(res(), tmp_path, server.url, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.read_bytes() for p in (tmp_path / "quarantine").iterdir()] == [b"garbage"]


def test_unreachable_host_fails_with_a_hint(tmp_path):
    with pytest.raises(DownloadError, match="could not download blob.bin.*data.mirror"):
        fetch(res(), tmp_path, "http://127.0.0.1:9", retries=0, timeout=2, progress=False)


def test_missing_checksum_is_rejected():
    with pytest.raises(ValueError, match="md5 or sha256"):
        Resource("x.tar", ("http://h/x.tar",))


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_tar_member_escaping_the_folder_is_refused(tmp_path, member):
    archive = write(tmp_path / "bad.tar.gz", unsafe_tar(member))
    dest = tmp_path / "out" / "x"
    with pytest.raises(UnsafeArchiveError, match="unsafe member"):
        safe_extract(archive, dest)
    assert not dest.exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_tar_links_are_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(info)
    archive = write(tmp_path / "link.tar", buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="link member"):
        safe_extract(archive, tmp_path / "out")


def test_zip_slip_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("good.txt", "ok")
        z.writestr("../../evil.txt", "bad")
    archive = write(tmp_path / "bad.zip", buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./\.\./evil\.txt'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_is_complete_and_atomic(tmp_path):
    archive = write(tmp_path / "ok.tar.gz", unsafe_tar("sub/inner.txt"))
    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "ok.txt").read_bytes() == b"fine" and (dest / "sub" / "inner.txt").read_bytes() == b"escaped"
    assert not (tmp_path / "out.tmp").exists()
    part = safe_extract(archive, tmp_path / "only", members=["ok.txt"])
    assert sorted(p.name for p in part.iterdir()) == ["ok.txt"]


@pytest.mark.parametrize("mode", ["long", "nolength"])
def test_transfer_stops_at_the_published_size(server, tmp_path, mode):
    """A server that sends more than the published size (junk after the file, announced or not) is cut
    off at the size: the file verifies and nothing past it is written."""
    path = fetch(res(size=len(PAYLOAD)), tmp_path, f"{server.url}/{mode}", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "quarantine").exists()


def test_longer_body_without_published_size_is_quarantined(server, tmp_path):
    """Without a published size, the announced length is the limit; the checksum then rejects the file."""
    with pytest.raises(ChecksumError, match="md5"):
        fetch(res(), tmp_path, f"{server.url}/long", progress=False)
    assert [p.stat().st_size for p in (tmp_path / "quarantine").iterdir()] == [len(PAYLOAD) + server.extra]
