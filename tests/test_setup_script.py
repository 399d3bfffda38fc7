"""tools/setup.sh: a disk too small for the environment is said up front, not as pip's OSError."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_names_the_missing_disk_space_before_installing(tmp_path):
    # A copy of the script and its inputs, with no environment built, and a `df` that reports 100 MB free.
    (tmp_path / "tools").mkdir()
    shutil.copy(REPO / "tools" / "setup.sh", tmp_path / "tools" / "setup.sh")
    shutil.copy(REPO / "requirements-webui-pins.txt", tmp_path)
    shims = tmp_path / "shims"
    shims.mkdir()
    fake_df = shims / "df"
    fake_df.write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        "echo '/dev/fake 1000000000 999897600 102400 99% /'\n"
    )
    fake_df.chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", PYTHON_WEBUI=sys.executable)

    result = subprocess.run(
        ["bash", "tools/setup.sh", "webui"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert "needs about 9 GB free" in result.stderr
    assert "which has 100 MB" in result.stderr
    assert not (tmp_path / ".venv-webui").exists(), "nothing is installed when the disk is too small"
