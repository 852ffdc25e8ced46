"""Publishing an export folder: its file table and manifest, the swap into place, and what a killed export left
beside its destination."""

import os
import shutil
from pathlib import Path

from zoo.files import write_json
from zoo.runtime.core import sha256_file


def file_table(root: Path, skip=("manifest.json",)) -> dict:
    return {
        str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) not in skip
    }


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem or kernel cannot
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def publish(tmp: Path, out_dir: Path):
    """Put the finished folder `tmp` at `out_dir`. With an export already there the two are swapped
    in one step, so `out_dir` is at every moment the old export or the new one, never missing;
    then the old one, now at `tmp`, is removed (a kill before that leaves it for `remove_leftovers`)."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
    elif _exchange(tmp, out_dir):
        shutil.rmtree(tmp, ignore_errors=True)
    else:  # two renames: a kill between them leaves the old export at .<name>.old-<pid>
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out_dir: Path):
    """Folders that killed exports to `out_dir` left beside it (`.<name>.partial-<pid>-*`, the old
    export in `.<name>.old-<pid>`), unless their process still runs. Where a kill between the two
    renames of the fallback left no `out_dir`, the old export is put back first."""
    for path in sorted(out_dir.parent.glob(f".{out_dir.name}.*")):
        kind, _, rest = path.name[len(out_dir.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind not in ("partial", "old") or not pid.isdigit() or _alive(int(pid)) and int(pid) != os.getpid():
            continue
        if kind == "old" and not out_dir.exists():
            os.rename(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _write_manifest(folder: Path, manifest: dict):
    manifest["files"] = file_table(folder)
    write_json(folder / "manifest.json", manifest)  # rewrite_card writes a published export's in place
