"""The on-disk container: one zip file holding ``manifest.json`` and ``arrays.npz``.

Readable with standard tools (unzip, json, numpy), never pickle: arrays are loaded
with ``allow_pickle=False``. Writes go to a temporary file that replaces the target
only once complete, so a failed save never destroys a file the user already had.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np

MAGIC = "cnncomp"
FORMAT_VERSION = 1


class FormatError(ValueError):
    """A file is not a cnncomp archive, is corrupt, or comes from an incompatible version."""


def write_archive(path: str, manifest: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                  ) -> None:
    """Atomically write ``manifest`` (JSON-able) and ``arrays`` to ``path``."""
    man = dict(manifest, format=MAGIC, format_version=FORMAT_VERSION)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".cnnc", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(man, indent=1, sort_keys=True))
            z.writestr("arrays.npz", buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_archive(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read an archive written by ``write_archive``; FormatError on anything wrong."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if not {"manifest.json", "arrays.npz"} <= names:
                raise FormatError(f"{path}: not a cnncomp file (expected manifest.json and "
                                  f"arrays.npz inside, found {sorted(names)})")
            manifest = json.loads(z.read("manifest.json").decode("utf-8"))
            blob = z.read("arrays.npz")
    except zipfile.BadZipFile as e:
        raise FormatError(f"{path}: not a cnncomp file or truncated/corrupt ({e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: manifest.json is corrupt ({e})") from None
    except (zipfile.LargeZipFile, OSError, EOFError) as e:
        raise FormatError(f"{path}: cannot be read as a cnncomp file ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MAGIC:
        raise FormatError(f"{path}: manifest is not a cnncomp manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: format version {version!r} is not supported by this "
                          f"cnncomp (it reads version {FORMAT_VERSION}); re-save the model "
                          "with a matching cnncomp version")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # numpy raises several types for a damaged npz
        raise FormatError(f"{path}: the weights (arrays.npz) are corrupt ({e})") from None
    return manifest, arrays
