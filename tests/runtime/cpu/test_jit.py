"""runtime.cpu.jit: the kernel cache on disk is emptied when runtime/cpu's sources change
(Numba itself only checks the file that defines each cached function)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime.cpu import jit

ROOT = Path(__file__).resolve().parents[3]


def _fill(cache: Path) -> list[Path]:
    files = [cache / "conv_blocked._dense-140.py311.nbi", cache / "conv_blocked._dense-140.py311.1.nbc",
             cache / "nhwc._gemm_strips-143.py311.nbi"]
    for f in files:
        f.write_bytes(b"compiled")
    return files


def test_a_cache_of_other_sources_is_emptied_and_stamped(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "_cache_dir", lambda: tmp_path)
    files = _fill(tmp_path)
    (tmp_path / "keep.pyc").write_bytes(b"python bytecode")
    (tmp_path / jit.STAMP).write_text("digest of older sources")
    jit.drop_stale_caches()
    assert not any(f.exists() for f in files)
    assert (tmp_path / "keep.pyc").exists()  # only Numba's cache files go
    stamp = (tmp_path / jit.STAMP).read_text()
    assert stamp != "digest of older sources" and len(stamp) == 40


def test_a_cache_of_these_sources_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "_cache_dir", lambda: tmp_path)
    jit.drop_stale_caches()  # stamps the empty cache with the current sources
    files = _fill(tmp_path)
    jit.drop_stale_caches()
    assert all(f.exists() for f in files)


def test_an_unstamped_cache_counts_as_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "_cache_dir", lambda: tmp_path)
    files = _fill(tmp_path)
    jit.drop_stale_caches()
    assert not any(f.exists() for f in files) and (tmp_path / jit.STAMP).exists()


def test_the_cache_is_where_numba_puts_the_kernels(tmp_path):
    # with NUMBA_CACHE_DIR, Numba caches under it (not beside the sources): the check
    # must look there, and a kernel compiled afterwards must land in the same place
    code = ("import runtime.cpu, numpy as np\n"
            "from runtime.cpu import jit\n"
            "from runtime.cpu.elementwise import bind_relu\n"
            "x = np.ones(8, np.float32); bind_relu([x], [x], {})()\n"
            "d = jit._cache_dir()\n"
            "print(d); print(sorted(p.suffix for p in d.iterdir()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    where, suffixes = r.stdout.splitlines()[-2:]
    assert Path(where).is_relative_to(tmp_path)
    assert ".nbi" in suffixes and ".sha1" in suffixes
