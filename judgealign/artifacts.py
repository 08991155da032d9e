"""Saved judges on disk: the manifest, checksums, verification and the atomic swap.

This module knows no field of a judge. A judge writes its own files into a fresh directory
(:meth:`RubricJudge.save`: ``program.json`` with its state, ``memory/`` with its episodic
memory's records and Chroma index); this module then checksums every file, writes the
manifest, and moves the directory into place. Layout::

    judge.json           manifest: format, versions, created-at, what the judge says of itself
                         (rubric, LM and embedder identity ...), settings (no secrets), and the
                         SHA-256 of every other file
    judge.json.sha256    the SHA-256 of judge.json itself
    program.json         the judge's state (see judgealign.state)
    memory/...           the episodic memory (episodes.jsonl + chroma/)

Saving is atomic: the new judge is written to a sibling ``.NAME.tmp-ID``; the old one, if
any, is renamed to ``.NAME.old-ID`` and the new one into place, under a lock file. A save
killed at any point is finished or rolled back by the next save or load (a complete new
judge wins; else the old one comes back), and leftovers of earlier saves are removed.

Loading (:func:`open_saved`) is read-only: it refuses symlinks and paths that leave the
folder, checks the manifest's own checksum and every file's, and parses each file with a
schema. Nothing is executed and nothing in the folder is written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from judgealign.errors import ArtifactError
from judgealign.textfiles import file_sha256

FORMAT_VERSION = 2
MANIFEST = "judge.json"
MANIFEST_SUM = "judge.json.sha256"
PROGRAM = "program.json"
MEMORY_DIR = "memory"
EPISODES = "memory/episodes.jsonl"
INDEX_PREFIX = "memory/chroma/"
# Files whose checksum must match; a mismatch elsewhere (the derived Chroma index) only
# makes the loader rebuild that part in memory.
_CORE_PREFIXES = (PROGRAM, EPISODES)
_MAX_JSON_BYTES = 512 * 1024 * 1024


# --- save ------------------------------------------------------------------------------------

def save_directory(path: str | Path, write: Callable[[Path], dict[str, Any]], *,
                   settings: dict[str, Any] | None = None) -> Path:
    """Save a judge atomically: ``write(root)`` fills the empty directory ``root`` and
    returns what the judge says of itself for the manifest; returns the target path.

    An existing judge at ``path`` is replaced only once the new one is complete; a directory
    at ``path`` that is not a saved judge is never replaced.
    """
    target = Path(path)
    if target.is_symlink():
        raise ArtifactError(f"{target} is a symbolic link; refusing to save through it")
    if target.exists() and not target.is_dir():
        raise ArtifactError(f"{target} exists and is not a directory; refusing to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create {target.parent}: {exc.strerror or exc}") from None
    with _locked(target):
        _recover(target, cleanup=True)
        if target.exists() and not (target / MANIFEST).is_file():
            if any(target.iterdir()):
                raise ArtifactError(f"{target} exists and is not a saved judge; refusing to "
                                    "replace it")
            target.rmdir()  # an empty directory: nothing to lose
        uid = uuid.uuid4().hex[:8]
        tmp = _sibling(target, "tmp", uid)
        try:
            tmp.mkdir()
            meta = write(tmp)
            _write_manifest(tmp, meta, settings)
            _swap_into_place(tmp, target, uid)
        except OSError as exc:
            raise ArtifactError(f"cannot save the judge to {target}: "
                                f"{exc.strerror or exc}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_manifest(root: Path, meta: dict[str, Any], settings: dict[str, Any] | None) -> None:
    files = {rel: _sha256(root / rel) for rel in _list_files(root)}
    manifest = {
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **meta,
        "settings": settings,
        "files": files,
    }
    data = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    _write_bytes(root / MANIFEST, data)
    _write_bytes(root / MANIFEST_SUM, (hashlib.sha256(data).hexdigest() + "\n").encode())


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: Path, data: Any) -> None:
    """Write JSON the way every file of a saved judge is written (UTF-8, fsynced)."""
    _write_bytes(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _sibling(target: Path, kind: str, uid: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{uid}"


def _swap_into_place(tmp: Path, target: Path, uid: str) -> None:
    _fsync_dir(tmp)
    if not target.exists():
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return
    old = _sibling(target, "old", uid)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise saves and recoveries between processes: an advisory lock on the parent
    directory itself, so no lock file is left beside the judge."""
    try:
        fd = os.open(target.parent, os.O_RDONLY)
    except OSError as exc:
        raise ArtifactError(f"cannot open {target.parent}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _leftovers(target: Path) -> tuple[list[Path], list[Path]]:
    """``.NAME.tmp-*`` and ``.NAME.old-*`` siblings of ``target``."""
    if not target.parent.is_dir():
        return [], []
    tmps = sorted(target.parent.glob(f".{target.name}.tmp-*"))
    olds = sorted(target.parent.glob(f".{target.name}.old-*"))
    return tmps, olds


def _complete(root: Path) -> bool:
    try:
        _verified_manifest(root)
        return True
    except ArtifactError:
        return False


def _recover(target: Path, *, cleanup: bool) -> str | None:
    """Finish or roll back a save that was killed; returns what was done (or None).

    With no judge at ``target``: a complete new judge (``tmp``) is moved into place, else the
    previous one (``old``) is moved back. With ``cleanup``, every leftover is then removed.
    """
    tmps, olds = _leftovers(target)
    done = None
    if not target.exists() and (tmps or olds):
        complete_new = [t for t in tmps if _complete(t)]
        if complete_new:
            os.replace(complete_new[-1], target)
            done = f"finished an interrupted save of {target}"
        elif olds:
            os.replace(olds[-1], target)
            done = f"rolled back an interrupted save of {target}"
        if done:
            _fsync_dir(target.parent)
    if cleanup:
        for leftover in [*tmps, *olds]:
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return done


# --- load ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SavedJudge:
    """A verified saved judge: its manifest and state, read-only.

    ``index_ok`` is False when the files of the Chroma index do not match the manifest (the
    memory is then rebuilt in memory from the verified records).
    """

    root: Path
    manifest: dict[str, Any]
    state: dict[str, Any]
    sha256: str
    index_ok: bool

    @property
    def memory_dir(self) -> Path:
        return self.root / MEMORY_DIR

    @property
    def embedder_identity(self) -> dict[str, Any] | None:
        episodic = self.state.get("episodic")
        return episodic.get("embedder") if isinstance(episodic, dict) else None

    def read_episodes(self) -> list[dict[str, Any]]:
        """The rows of ``memory/episodes.jsonl`` (checksummed; validated by the caller)."""
        path = self.root / EPISODES
        if not path.is_file():
            return []
        rows = []
        for n, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                raise ArtifactError(f"{path}, line {n}: not valid JSON ({exc})") from None
        return rows


def open_saved(path: str | Path) -> SavedJudge:
    """Verify a saved judge and read its state; never writes inside it.

    A save that was killed before it finished is finished or rolled back first when no judge
    is at ``path`` (see the module docstring).
    """
    root = Path(path)
    if not root.exists() and not root.is_symlink() and any(_leftovers(root)):
        with _locked(root):
            done = _recover(root, cleanup=False)
        if done:
            warnings.warn(done, UserWarning, stacklevel=2)
    manifest, digest = _verified_manifest(root)
    files = manifest["files"]
    index_ok = True
    for rel, expected in files.items():
        file = root / rel
        core = rel == PROGRAM or rel == EPISODES
        if not file.is_file():
            if core:
                raise ArtifactError(f"{file} is missing")
            index_ok = False
        elif _sha256(file) != expected:
            if core:
                raise ArtifactError(f"{file} does not match its checksum in {MANIFEST}: it "
                                    "was edited or corrupted; restore it or re-save the judge")
            index_ok = False
    if PROGRAM not in files:
        raise ArtifactError(f"{root / MANIFEST}: the file list has no {PROGRAM}")
    on_disk = set(_list_files(root, strict=False))
    extra = sorted(on_disk - set(files) - {MANIFEST, MANIFEST_SUM})
    core_extra = [rel for rel in extra if not rel.startswith(INDEX_PREFIX)]
    if core_extra:
        raise ArtifactError(f"{root}: unexpected file(s) not in {MANIFEST}: "
                            f"{', '.join(core_extra[:5])}")
    if extra:
        index_ok = False
    state = _read_json(root / PROGRAM)
    if not isinstance(state, dict):
        raise ArtifactError(f"{root / PROGRAM}: expected an object, got {type(state).__name__}")
    return SavedJudge(root, manifest, state, digest, index_ok)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The verified manifest of a saved judge (format and every core checksum checked)."""
    return open_saved(path).manifest


def _verified_manifest(root: Path) -> tuple[dict[str, Any], str]:
    if root.is_symlink():
        raise ArtifactError(f"{root} is a symbolic link; a saved judge is a real directory")
    if not root.is_dir():
        raise ArtifactError(f"no saved judge at {root}")
    for name in (MANIFEST, MANIFEST_SUM):
        if (root / name).is_symlink():
            raise ArtifactError(f"{root / name} is a symbolic link; refusing to read it")
    if not (root / MANIFEST).is_file():
        raise ArtifactError(f"no saved judge at {root} ({MANIFEST} is missing)")
    raw = _read_bytes(root / MANIFEST)
    digest = hashlib.sha256(raw).hexdigest()
    if not (root / MANIFEST_SUM).is_file():
        raise ArtifactError(f"{root / MANIFEST_SUM} is missing: the manifest cannot be "
                            "verified; re-save the judge")
    expected = _read_bytes(root / MANIFEST_SUM).decode("ascii", "replace").strip()
    if expected != digest:
        raise ArtifactError(f"{root / MANIFEST} does not match {MANIFEST_SUM}: it was edited or "
                            "corrupted; restore it or re-save the judge")
    manifest = _parse_json(raw, root / MANIFEST)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{root / MANIFEST}: expected a JSON object")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArtifactError(f"{root / MANIFEST}: no format_version")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{root} was saved by a newer judgealign (format {version}; this "
                            f"version reads format {FORMAT_VERSION}): upgrade judgealign")
    if version < FORMAT_VERSION:
        raise ArtifactError(f"{root} has the old format {version}; re-align and save it again")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in files.items()):
        raise ArtifactError(f"{root / MANIFEST}: the file list is missing or malformed")
    for rel in files:
        _check_relative(rel, root)
    return manifest, digest


def _check_relative(rel: str, root: Path) -> None:
    """A manifest path must stay inside the judge folder and pass through no link."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or rel in ("", ".") or "\\" in rel:
        raise ArtifactError(f"{root / MANIFEST}: file path {rel!r} leaves the judge folder")
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise ArtifactError(f"{current} is a symbolic link; refusing to follow it")


def _list_files(root: Path, *, strict: bool = True) -> list[str]:
    """Every regular file below ``root`` except the manifest pair, as POSIX paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if (here / name).is_symlink():
                raise ArtifactError(f"{here / name} is a symbolic link; a saved judge holds "
                                    "real files only")
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if rel not in (MANIFEST, MANIFEST_SUM):
                out.append(rel)
    return sorted(out)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            raise ArtifactError(f"{path} is larger than {_MAX_JSON_BYTES >> 20} MiB")
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _parse_json(raw: bytes, path: Path) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not UTF-8 ({exc.reason})") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({str(exc)[:200]})") from None


def _read_json(path: Path) -> Any:
    if path.is_symlink():
        raise ArtifactError(f"{path} is a symbolic link; refusing to read it")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    return _parse_json(_read_bytes(path), path)


def _sha256(path: Path) -> str:
    return file_sha256(path)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("judgealign", "dspy", "chromadb"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


# --- what `judgealign memory show` prints ---------------------------------------------------

def read_memory(path: str | Path) -> dict[str, Any]:
    """A summary of a saved judge's memories: per dimension, kept and rejected guidelines
    with their sources (and the mode that made them), and the episode count."""
    from judgealign.state import validate_episode, validate_state

    saved = open_saved(path)
    where = str(saved.root / PROGRAM)
    try:
        state = validate_state(saved.state, where=where)
        rows = saved.read_episodes()
        episodes = [validate_episode(row, where=f"{saved.root / EPISODES}, line {n}")
                    for n, row in enumerate(rows, start=1)]
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if state.episodic is None and episodes:
        raise ArtifactError(f"{where}: no episodic memory, but {EPISODES} holds episodes; the "
                            "files disagree -- re-save the judge")
    counts: dict[str, int] = {}
    for e in episodes:
        counts[e.dimension] = counts.get(e.dimension, 0) + 1
    dims = {d: {"guidelines": info.guidelines, "rejected": info.rejected}
            for d, info in state.dimensions.items()}
    return {"judge": str(saved.root), "embedder": saved.embedder_identity,
            "lm": saved.manifest.get("lm"), "sha256": saved.sha256,
            "dimensions": {d: {"episodes": counts.get(d, 0),
                               "kept": list(info["guidelines"]),
                               "rejected": list(info["rejected"])}
                           for d, info in dims.items()}}


def save(judge: Any, path: str | Path, *, config: Any = None) -> Path:
    """Save ``judge`` to ``path`` (the same as ``judge.save(path, config=config)``)."""
    return judge.save(path, config=config)


__all__ = ["FORMAT_VERSION", "MANIFEST", "SavedJudge", "open_saved", "read_manifest",
           "read_memory", "save", "save_directory", "write_json"]
