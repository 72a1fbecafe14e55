"""An image folder's cache is integrity-checked and never stale; image files are decoded within limits and only when
they are regular files; the temporary files of a killed cache build or download are swept by the next one
(docs/images.md, docs/reliability.md "Untrusted files and paths").

Every image, cache and hostile file is made here, in tmp_path. No FIFO is opened for reading by this process; the
test that puts one in an image folder runs the folder in a child process (its timeout only turns a regression's
hang into a failure: the pass condition is the child's exit).
"""

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from npgan.data import download, images
from npgan.data.images import ImageDataError, ImageDataWarning

HANG_GUARD = 600  # seconds: a child that hangs (a regression) fails the test instead of hanging the suite


def _folder(root, n=6, size=24, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(root / f"im{i}.png",
                                                                                      compress_level=0)
    return root


def _open(root, size=16, **kw):
    return images.ImageFolder(root, size, progress=False, **kw)


def _quiet_open(root, size=16, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = _open(root, size, **kw)
    return ds, [str(w.message) for w in rec if issubclass(w.category, ImageDataWarning)]


def _parts(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".part")) if d.is_dir() else []


# ============================================================================ integrity
def _npy_data_offset(path):
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _zero_pixels(path):
    off = _npy_data_offset(path)
    with open(path, "r+b") as f:
        f.seek(off + 100)
        f.write(bytes(64))


def _flip_fortran(path):
    raw = open(path, "rb").read()
    assert b"'fortran_order': False" in raw[:128]
    open(path, "wb").write(raw.replace(b"'fortran_order': False", b"'fortran_order': True ", 1))


@pytest.mark.parametrize("tamper", [_zero_pixels, _flip_fortran])
def test_a_tampered_cache_is_rebuilt_with_one_warning(tmp_path, tamper):
    root = _folder(tmp_path / "photos")
    first = _open(root)
    want = np.array(first.images)
    st = os.stat(first.cache_path)
    tamper(first.cache_path)
    os.utime(first.cache_path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as they were
    again, msgs = _quiet_open(root)
    assert again.built and again.cache_path == first.cache_path
    assert len(msgs) == 1 and first.cache_path in msgs[0] and "rebuilding" in msgs[0], msgs
    np.testing.assert_array_equal(np.array(again.images), want)
    assert not _quiet_open(root)[0].built  # the rebuilt cache is reused


def test_a_smaller_cache_copied_over_a_caches_name_is_refused(tmp_path):
    root = _folder(tmp_path / "photos")
    big, small = _open(root, 16), _open(root, 8)
    want = np.array(big.images)
    shutil.copyfile(small.cache_path, big.cache_path)  # 8 px images under the 16 px cache's name
    again, msgs = _quiet_open(root, 16)
    assert again.built and len(msgs) == 1 and "uint8 (6, 3, 8, 8)" in msgs[0] and "(6, 3, 16, 16)" in msgs[0], msgs
    np.testing.assert_array_equal(np.array(again.images), want)


def test_full_verification_finds_what_sampling_may_miss(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "CACHE_BLOCK", 256)  # a cache of many blocks, checked in samples on opening
    monkeypatch.setattr(images, "CACHE_FULL_CHECK_BLOCKS", 4)
    root = _folder(tmp_path / "photos", n=12)
    ds = _open(root)
    n_blocks = -(-ds.images.nbytes // 256)
    assert n_blocks > images.CACHE_SAMPLED_BLOCKS
    ds.verify()  # intact: passes
    off = _npy_data_offset(ds.cache_path)
    with open(ds.cache_path, "r+b") as f:  # one byte in block 7, in the middle of the file
        f.seek(off + 7 * 256 + 3)
        b = f.read(1)
        f.seek(off + 7 * 256 + 3)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ImageDataError, match="pixel block 7 .*fails its SHA-256"):
        ds.verify()
    again, msgs = _quiet_open(root, verify="full")
    assert again.built and len(msgs) == 1 and "block 7" in msgs[0]


def test_a_deeply_nested_cache_json_is_rebuilt_not_a_traceback(tmp_path):
    root = _folder(tmp_path / "photos")
    ds = _open(root)
    with open(ds.cache_path[:-4] + ".json", "wb") as f:
        f.write(b"[" * 100_000 + b"]" * 100_000)
    again, msgs = _quiet_open(root)
    assert again.built and len(msgs) == 1 and "nests too deeply" in msgs[0]


# ============================================================================ never stale
def _same_size_other_bytes(path):
    """Another picture in a PNG of exactly the same size (stored, uncompressed: the size depends on the shape only)."""
    im = np.asarray(Image.open(path)).copy()
    im[:8] ^= 0xFF
    buf = path.with_suffix(".tmp.png")
    Image.fromarray(im).save(buf, compress_level=0)
    assert buf.stat().st_size == path.stat().st_size
    return buf.read_bytes()


def _a_cache_and_a_same_size_edit(tmp_path):
    """A folder with its cache built: (root, the dataset, image 2's pixels, its path, its stat, the bytes of another
    picture of the same file size, also left at im2.tmp.png)."""
    root = _folder(tmp_path / "photos")
    ds = _open(root)
    path = root / "im2.png"
    st = os.stat(path)
    return root, ds, np.array(ds.images[2]), path, st, _same_size_other_bytes(path)


def test_an_in_place_edit_that_keeps_size_and_mtime_is_seen(tmp_path):
    """cp -p: the same inode, new bytes, the old size and mtime put back (the ctime cannot be put back)."""
    root, ds, want_old, path, st, new = _a_cache_and_a_same_size_edit(tmp_path)
    (root / "im2.tmp.png").unlink()
    while True:  # the ctime moves on with the kernel's clock tick: write until it has (an event, not a wait)
        with open(path, "r+b") as f:
            f.write(new)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = os.stat(path)
        if now.st_ctime_ns != st.st_ctime_ns:
            break
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    again = _open(root)
    assert again.built and again.cache_path != ds.cache_path
    assert not np.array_equal(np.array(again.images[2]), want_old)


def test_a_replaced_file_with_the_old_size_and_mtime_is_seen(tmp_path):
    """rsync -a: a new file renamed over the old one, size and mtime as they were."""
    root, ds, want_old, path, st, new = _a_cache_and_a_same_size_edit(tmp_path)
    tmp = root / "im2.tmp.png"
    assert len(new) == st.st_size
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = _open(root)
    assert again.built and again.cache_path != ds.cache_path
    assert not np.array_equal(np.array(again.images[2]), want_old)


# ============================================================================ decoding limits
def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(path, width, height):
    """A PNG whose header claims width × height grey pixels (a few hundred bytes: a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _png_chunk(b"IEND", b""))


def _bmp_header_only(path, width, height):
    """A BMP whose header claims width × height 24-bit pixels and holds none of them."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info)


def test_decompression_bombs_are_skipped_with_the_undecodable_files(tmp_path):
    root = _folder(tmp_path / "photos")
    _png_header_only(root / "bomb.png", 20000, 20000)
    _bmp_header_only(root / "bomb.bmp", 30000, 30000)
    ds, msgs = _quiet_open(root)
    assert len(ds) == 6 and sorted(ds.skipped) == ["bomb.bmp", "bomb.png"]
    assert len(msgs) == 1 and "skipped 2 of 8" in msgs[0] and "more than the limit" in msgs[0], msgs


def test_an_extreme_aspect_ratio_is_skipped_and_the_limits_can_be_raised(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos")
    Image.new("L", (100_000, 1), 128).save(root / "line.png")  # would be resized to 1,600,000 x 16 first
    ds, msgs = _quiet_open(root)
    assert ds.skipped == ["line.png"] and "aspect ratio" in msgs[0]
    lenient = _open(root, max_aspect=100_000, max_pixels=10**6, cache_dir=tmp_path / "c1")
    assert lenient.skipped == [] and len(lenient) == 7
    monkeypatch.setenv("NPGAN_MAX_IMAGE_PIXELS", "400")  # 24 x 28 = 672 pixels: every file is over it
    with pytest.raises(ImageDataError, match="none of the 7"):
        _open(root, cache_dir=tmp_path / "c2")
    monkeypatch.setenv("NPGAN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageDataError, match="NPGAN_MAX_IMAGE_PIXELS must be a positive integer"):
        _open(root, cache_dir=tmp_path / "c3")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_a_png_is_skipped(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    y, x = np.mgrid[0:800, 0:800]
    smooth = np.stack([x * 255 // 800, y * 255 // 800, (x + y) * 255 // 1600], -1).astype(np.uint8)
    Image.fromarray(smooth).save(root / "big.jpg", quality=95)
    Image.fromarray(smooth).save(root / "big.png")
    ds, msgs = _quiet_open(root, size=32, max_pixels=200 * 200)  # 640,000 pixels: 1/4 scale fits, 1/2 does not
    assert ds.files == ["big.jpg"] and ds.skipped == ["big.png"] and "more than the limit" in msgs[0]
    full = _open(root, size=32, cache_dir=tmp_path / "full")  # no limit reached: decoded whole
    diff = np.abs(np.array(ds.images[0], dtype=int) - np.array(full.images[full.files.index("big.jpg")], dtype=int))
    assert diff.max() <= 12  # a smooth picture: decoding at 1/4 scale then resizing moves it by a few levels


# ============================================================================ regular files only
def test_a_dangling_symlink_is_skipped_not_fatal(tmp_path):
    root = _folder(tmp_path / "photos")
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "link.png").symlink_to(root / "im0.png")  # a link to a regular file is read through
    ds, msgs = _quiet_open(root)
    assert ds.skipped == ["gone.png"] and "link.png" in ds.files and "dangling symlink" in msgs[0]


def test_a_fifo_in_an_image_folder_is_skipped_without_hanging(tmp_path):
    root = _folder(tmp_path / "photos")
    os.mkfifo(root / "f.png")
    code = textwrap.dedent(f"""
        import warnings
        from npgan.data import images
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            ds = images.ImageFolder({str(root)!r}, 16, progress=False)
        print(len(ds), ds.skipped, [str(w.message) for w in rec])
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("6 ['f.png']") and "FIFO" in p.stdout, p.stdout


# ============================================================================ temporary files of killed processes
KILLED_BUILD = """
import sys
from npgan.data import images
real, seen = images._decode, []

def decode(*a):
    seen.append(a[0])
    if len(seen) == 3:  # the cache's temporary file is written and open: say so, then wait to be killed
        print("ready", flush=True)
        sys.stdin.readline()
    return real(*a)

images._decode = decode
{call}
"""


def _start(call):
    p = subprocess.Popen([sys.executable, "-c", KILLED_BUILD.format(call=call)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def test_a_killed_builds_temporary_files_are_swept_by_the_next_build(tmp_path):
    root = _folder(tmp_path / "photos")
    cache = root / ".npgan-cache"
    p = _start(f"images.ImageFolder({str(root)!r}, 16, progress=False)")
    p.kill()
    p.wait(HANG_GUARD)
    left = _parts(cache)
    assert left and all(f".{p.pid}." in name for name in left)  # what the kill left: named with its PID
    live_fd, live = images.temp_file(cache / "images-other.npy", ".part")  # a live writer's, locked: kept
    ours = cache / f".images-old.npy.{os.getpid()}.0123456789ab.part"
    ours.write_bytes(b"older than this process")
    os.utime(ours, (1_000_000, 1_000_000))  # this PID then belonged to a process that has ended
    try:
        ds = _open(root)
        assert ds.built and len(ds) == 6
        assert _parts(cache) == [live.name]
    finally:
        os.close(live_fd)
        live.unlink()


def test_sigterm_during_a_cache_build_leaves_nothing(tmp_path):
    root = _folder(tmp_path / "photos")
    out = tmp_path / "run"
    p = _start("from npgan.run.cli import main\n"
               f"sys.exit(main(['train', '--preset', 'dcgan64', '--data-dir', {str(root)!r}, '--image-size', '16', "
               f"'--batch-size', '4', '--steps', '1', '--no-progress', '--out', {str(out)!r}]))")
    p.send_signal(signal.SIGTERM)  # it waits in a read: the signal interrupts it
    assert p.wait(HANG_GUARD) == 130, p.stderr.read()
    assert not (root / ".npgan-cache").exists()


def test_a_killed_downloads_part_is_swept_by_the_next_download(tmp_path, monkeypatch):
    from helpers import serve_directory
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.bin").write_bytes(b"payload")
    import hashlib
    sha = hashlib.sha256(b"payload").hexdigest()
    dest = tmp_path / "data"
    dest.mkdir()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)  # a process that has ended
    stale = dest / f".f.bin.{dead}.0123456789ab.part"
    stale.write_bytes(b"half a download")
    os.utime(stale, (1_000_000, 1_000_000))
    foreign = dest / ".notes.part"  # not npgan's name: never touched
    foreign.write_bytes(b"user")
    with serve_directory(www, monkeypatch) as (url, _):
        path = download.download_file("test", str(dest), "f.bin", [url], sha, timeout=HANG_GUARD)
    assert open(path, "rb").read() == b"payload"
    assert sorted(os.listdir(dest)) == [".notes.part", "f.bin"]


def test_the_cache_directory_error_names_what_a_cli_user_can_set(tmp_path):
    root = _folder(tmp_path / "photos")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ImageDataError, match="NPGAN_CACHE"):
        _open(root, cache_dir=tmp_path / "afile" / "cache")
