import os
from pathlib import Path

import pytest

from depth2img.base.files import OutputError, check_output, write_bytes_atomic


def test_outputs_never_overwrite_inputs(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"original")
    (tmp_path / "link.png").symlink_to(source)
    for out in (source, tmp_path / "." / "in.png", tmp_path / "link.png"):
        with pytest.raises(OutputError, match="is also an input"):
            check_output(out, "--out", [source], (".png",))
    with pytest.raises(OutputError, match="unsupported file type"):
        check_output(tmp_path / "x.npy", "--out", [source], (".png",))
    assert check_output(tmp_path / "new.PNG", "--out", [source, None], (".png",)) == tmp_path / "new.PNG"
    assert source.read_bytes() == b"original"


def test_atomic_write_is_whole_and_readable_by_others(tmp_path):
    old = os.umask(0o077)  # a restrictive umask must not make outputs private
    try:
        path = write_bytes_atomic(tmp_path / "sub" / "f.bin", b"data")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"data" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]

    def fail(_temporary):
        raise RuntimeError("interrupted")

    from depth2img.base.files import write_atomic

    with pytest.raises(RuntimeError):
        write_atomic(path, fail)
    assert path.read_bytes() == b"data" and [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_the_config_written_beside_a_found_checkpoint_is_whole_or_absent(tmp_path, monkeypatch):
    # The WebUI reads <checkpoint>.yaml: a copy that fails halfway (a full disk) must not leave half a config
    # there for it (or another WebUI sharing the folder) to read (issue 15.8).
    import shutil

    from depth2img.base import paths
    from depth2img.webui import job_checkpoint as webui_job_checkpoint

    monkeypatch.setattr(paths, "USER_CHECKPOINT_DIR", tmp_path)
    checkpoint = tmp_path / "mine.safetensors"
    checkpoint.write_bytes(b"x")
    real_copy = shutil.copyfile

    def copy_half_then_fail(source, target):
        data = Path(source).read_bytes()
        Path(target).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", copy_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        webui_job_checkpoint.checkpoints_to_register([], lambda path: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.safetensors"]  # no half YAML, no temporary

    monkeypatch.setattr(shutil, "copyfile", real_copy)
    assert webui_job_checkpoint.checkpoints_to_register([], lambda path: True) == [checkpoint]
    assert (tmp_path / "mine.yaml").read_bytes() == paths.SHIPPED_DEPTH_CONFIG.read_bytes()
