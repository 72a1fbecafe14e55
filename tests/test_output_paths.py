"""Output paths: npgan writes regular files only, never through a symlink and never over anything else, and the lock
file is never opened through a link (docs/reliability.md, "Untrusted files and paths").

A device node is what the bug replaced; no test here touches one (or /dev at all): a FIFO (os.mkfifo) and a symlink in
tmp_path stand in for "not a regular file". This process never opens a FIFO (it would block without a writer); the
tests whose code under test opens one run it in a child process, whose timeout only turns a regression's hang into a
failure (the pass condition is the child's exit).
"""

import os
import stat
import subprocess
import sys
import textwrap

import pytest
from helpers import ring8_config, run_cli

from npgan import files
from npgan.errors import FileKindError
from npgan.run.experiment import Run

HANG_GUARD = 600  # seconds


def _in_child(code):
    """Run ``code`` in a fresh Python; (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=HANG_GUARD)
    return p.returncode, p.stdout, p.stderr


def _fifo(path):
    os.mkfifo(path)
    return path


def _is_fifo(path):
    return stat.S_ISFIFO(os.lstat(path).st_mode)


def _one_error_line(err, rc, code=2):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code and len(lines) == 1 and lines[0].startswith("npgan: error: "), (rc, err)
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    Run.create(ring8_config(5), out).train(progress=False)
    return out


# ============================================================================ the rule, in npgan.files
@pytest.mark.parametrize("write", ["atomic_write_bytes", "publish"])
def test_every_write_refuses_a_fifo_or_a_symlink_and_leaves_it_as_it_was(tmp_path, write):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's file")
    fifo = _fifo(tmp_path / "fifo")
    link = tmp_path / "link"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for target, what in ((fifo, "a FIFO"), (link, "a symlink"), (dangling, "a symlink"), (tmp_path, "a directory")):
        if write == "atomic_write_bytes":
            with pytest.raises(FileKindError, match=what):
                files.atomic_write_bytes(target, b"x" * 16384)
        else:
            fd, tmp = files.temp_file(tmp_path / "other")
            os.write(fd, b"x")
            try:
                with pytest.raises(FileKindError, match=what):
                    files.publish(tmp, target)
            finally:
                os.close(fd)
                os.unlink(tmp)
    assert _is_fifo(fifo) and os.readlink(link) == str(victim) and victim.read_bytes() == b"the user's file"
    assert os.path.islink(dangling) and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "fifo", "link", "victim.txt"]  # no temp left
    files.atomic_write_bytes(victim, b"new")  # a regular file is replaced as before
    assert victim.read_bytes() == b"new"


def test_a_target_swapped_for_a_fifo_during_the_write_is_still_refused(tmp_path, monkeypatch):
    target = tmp_path / "t.bin"
    real = files._write_all

    def write_then_swap(fd, data):
        real(fd, data)
        _fifo(target)  # appears between the first check and the rename
    monkeypatch.setattr(files, "_write_all", write_then_swap)
    with pytest.raises(FileKindError, match="FIFO"):
        files.atomic_write_bytes(target, b"data")
    assert _is_fifo(target) and sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]


def test_append_never_goes_through_a_symlink_or_into_a_fifo(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep")
    (tmp_path / "h.csv").symlink_to(victim)
    with pytest.raises(FileKindError, match="symlink"):
        files.append_bytes(tmp_path / "h.csv", b"row\n")
    _fifo(tmp_path / "f.csv")
    rc, out, err = _in_child(f"""
        from npgan import files
        try:
            files.append_bytes({str(tmp_path / "f.csv")!r}, b"row\\n")  # O_NONBLOCK: ENXIO at once, never a hang
        except ValueError as exc:
            print(type(exc).__name__, exc)
    """)
    assert rc == 0 and out.startswith("FileKindError") and "FIFO" in out, (out, err)
    assert victim.read_bytes() == b"keep"


def test_open_regular_refuses_a_fifo_without_blocking(tmp_path):
    fifo = _fifo(tmp_path / "f")
    rc, out, err = _in_child(f"""
        from npgan import files
        try:
            files.open_regular({str(fifo)!r})  # O_NONBLOCK: the open returns at once, fstat says what it is
        except ValueError as exc:
            print(type(exc).__name__, exc)
    """)
    assert rc == 0 and out.startswith("FileKindError") and "FIFO" in out, (out, err)
    with pytest.raises(FileKindError, match="directory"):
        files.open_regular(tmp_path)
    (tmp_path / "r").write_bytes(b"abc")
    (tmp_path / "l").symlink_to(tmp_path / "r")
    with files.open_regular(tmp_path / "l") as f:  # reading through a link changes nothing: allowed
        assert f.read() == b"abc"


# ============================================================================ the commands
def test_sample_refuses_a_fifo_or_symlink_as_out_or_png_before_reading(trained, tmp_path, capsys):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"a picture the user keeps")
    (tmp_path / "link.png").symlink_to(victim)
    _fifo(tmp_path / "fifo.png")
    _fifo(tmp_path / "fifo.npy")
    for args, bad in ((["--out", tmp_path / "s.npy", "--png", tmp_path / "fifo.png"], "--png"),
                      (["--out", tmp_path / "s.npy", "--png", tmp_path / "link.png"], "--png"),
                      (["--out", tmp_path / "fifo.npy"], "--out")):
        rc, _, err = run_cli(["sample", trained, "--n", "8", *args], capsys)
        line = _one_error_line(err, rc)
        assert bad in line and ("FIFO" in line or "symlink" in line), line
        assert not (tmp_path / "s.npy").exists()  # refused before anything was written
    assert _is_fifo(tmp_path / "fifo.png") and _is_fifo(tmp_path / "fifo.npy")
    assert victim.read_bytes() == b"a picture the user keeps" and os.path.islink(tmp_path / "link.png")


def test_export_refuses_a_fifo_or_symlink_even_with_force(trained, tmp_path, capsys):
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"keep")
    (tmp_path / "link.safetensors").symlink_to(victim)
    _fifo(tmp_path / "fifo.safetensors")
    for name in ("link.safetensors", "fifo.safetensors"):
        rc, _, err = run_cli(["export", trained, "--out", tmp_path / name, "--force"], capsys)
        line = _one_error_line(err, rc)
        assert name in line, line
    assert victim.read_bytes() == b"keep" and _is_fifo(tmp_path / "fifo.safetensors")


@pytest.mark.parametrize("name", ["history.csv", "config.toml", "metrics.json", "losses.png"])
def test_resume_refuses_a_run_file_that_is_a_symlink_before_writing(tmp_path, capsys, name):
    out = tmp_path / "r"
    Run.create(ring8_config(10), out).train(progress=False)
    victim = tmp_path / "victim"
    content = (out / name).read_bytes()
    victim.write_bytes(content)
    (out / name).unlink()
    (out / name).symlink_to(victim)
    before = {p.name: p.lstat().st_mtime_ns for p in out.iterdir()}
    rc, _, err = run_cli(["resume", out, "--steps", "20", "--no-progress"], capsys)
    line = _one_error_line(err, rc)
    assert name in line and "symlink" in line, line
    assert os.readlink(out / name) == str(victim) and victim.read_bytes() == content
    assert {p.name: p.lstat().st_mtime_ns for p in out.iterdir()} == before  # nothing written, the lock included


def test_a_samples_folder_that_is_a_symlink_is_refused(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "r"
    out.mkdir()
    (out / "samples").symlink_to(elsewhere)
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", "--batch-size", "32", "--no-progress",
                          "--out", out], capsys)
    assert "samples" in _one_error_line(err, rc) and list(elsewhere.iterdir()) == []


def test_empty_paths_are_refused_not_read_as_the_current_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["train", "--preset", "ring8", "--out", ""], ["resume", ""], ["sample", "", "--out", "s.npy"],
                 ["info", ""]):
        rc, _, err = run_cli(args, capsys)
        assert "empty" in _one_error_line(err, rc), args
    assert list(tmp_path.iterdir()) == []


# ============================================================================ the lock file
@pytest.mark.parametrize("command", ["resume", "train"])
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path, capsys, command):
    out = tmp_path / "r"
    if command == "resume":
        Run.create(ring8_config(10), out).train(progress=False)
        (out / ".npgan.lock").unlink()
    else:
        out.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"x" * 1000)
    (out / ".npgan.lock").symlink_to(victim)
    args = (["resume", out, "--steps", "20"] if command == "resume"
            else ["train", "--preset", "ring8", "--steps", "2", "--batch-size", "32", "--out", out])
    rc, _, err = run_cli([*args, "--no-progress"], capsys)
    line = _one_error_line(err, rc)
    assert ".npgan.lock" in line and "symlink" in line, line
    assert victim.read_bytes() == b"x" * 1000 and os.path.islink(out / ".npgan.lock")


def test_a_fifo_lock_file_is_refused_and_info_does_not_hang(trained, tmp_path, capsys):
    import shutil
    out = tmp_path / "r"
    shutil.copytree(trained, out)
    (out / ".npgan.lock").unlink()
    _fifo(out / ".npgan.lock")
    rc, stdout, err = _in_child(f"""
        import sys
        from npgan.run.cli import main
        sys.exit(main(["info", {str(out)!r}]))  # the holder's text is read without blocking: none
    """)
    assert rc == 0 and "last_writer_pid: None" in stdout, err
    rc, _, err = run_cli(["resume", out, "--steps", "8", "--no-progress"], capsys)
    assert "FIFO" in _one_error_line(err, rc)
    assert _is_fifo(out / ".npgan.lock")


# ============================================================================ found by the adversarial pass
def test_a_symlink_loop_as_export_out_is_one_line_not_a_traceback(trained, tmp_path, capsys):
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop.name)
    rc, _, err = run_cli(["export", trained, "--out", loop, "--force"], capsys)
    assert "symlink" in _one_error_line(err, rc)
    looping_dir = tmp_path / "d"
    looping_dir.symlink_to("d")
    rc, _, err = run_cli(["export", trained, "--out", looping_dir / "g.safetensors"], capsys)
    _one_error_line(err, rc)


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_train_out_as_a_broken_symlink_is_bad_input_not_a_write_failure(tmp_path, capsys, kind):
    out = tmp_path / "r"
    out.symlink_to(tmp_path / "nowhere" if kind == "dangling" else "r")
    rc, _, err = run_cli(["train", "--preset", "ring8", "--steps", "2", "--batch-size", "32", "--no-progress",
                          "--out", out], capsys)
    assert "symlink" in _one_error_line(err, rc)  # exit 2 (it was 4, "could not write")
    assert os.path.islink(out) and not (tmp_path / "nowhere").exists()


def test_a_refused_resume_leaves_the_lock_file_as_it_was(trained, capsys):
    lock = trained / ".npgan.lock"
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    rc, _, err = run_cli(["resume", trained, "--restretch"], capsys)  # --restretch without --steps
    assert "--restretch needs --steps" in _one_error_line(err, rc)
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
