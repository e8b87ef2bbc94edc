"""A small ext4 file system on a loop device, for disk-fault tests (root only).

ext4 rather than tmpfs: it takes O_DIRECT (so both io modes can be tested),
and `/sys/fs/ext4/<dev>/trigger_fs_error` with `errors=remount-ro` turns it
read-only under a running broker, even with files open for writing (a plain
`mount -o remount,ro` refuses with EBUSY while the broker holds segments open).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


class SmallFs:
    def __init__(self, tmp: Path, size_mb: int):
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a small file system")
        if not shutil.which("mkfs.ext4"):
            pytest.skip("mkfs.ext4 not installed")
        self.image = tmp / "fs.img"
        self.mnt = tmp / "mnt"
        self.mnt.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        r = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
        if r.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {r.stderr.strip()}")
        r = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt))
        if r.returncode != 0:
            pytest.skip(f"cannot loop-mount an ext4 image: {r.stderr.strip()}")
        self.mounted = True

    def device(self) -> str:
        r = _run("findmnt", "-n", "-o", "SOURCE", str(self.mnt))
        return os.path.basename(r.stdout.strip())

    def fail(self) -> None:
        """Makes the file system fail: ext4 remounts it read-only (EROFS from then on)."""
        path = f"/sys/fs/ext4/{self.device()}/trigger_fs_error"
        if not os.path.exists(path):
            pytest.skip(f"{path} not available on this kernel")
        with open(path, "w") as f:
            f.write("sluice test: simulated disk failure\n")

    def free_bytes(self) -> int:
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def unmount(self) -> None:
        if self.mounted:
            r = _run("umount", str(self.mnt))
            if r.returncode != 0:
                _run("umount", "-l", str(self.mnt))
            self.mounted = False


@pytest.fixture
def small_fs(tmp_path):
    made: list[SmallFs] = []

    def make(size_mb: int = 48) -> SmallFs:
        fs = SmallFs(tmp_path, size_mb)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.unmount()
