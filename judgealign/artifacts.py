"""Saved judges: one self-contained directory, JSON only (no pickle), verified on load.

::

    judge.json               manifest: format, versions, rubric, settings (no secrets), LM and
                             embedder identity, created-at, SHA-256 of every file below
    program.json             the DSPy program state (instructions with guidelines, signatures)
    memory/guidelines.json   kept and rejected guidelines per dimension, with their sources
    memory/episodes.jsonl    every stored example in full (the source of truth)
    memory/seen.json         what has been distilled already (incremental alignment)
    memory/chroma/           the vector index: derived data, verified by content, rebuilt
                             from episodes.jsonl (with a warning) when missing or wrong

Saving writes a sibling temporary directory and renames it into place, so a crash leaves the
previous judge untouched. Loading checks every checksum and never executes artifact code.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

from judgealign.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "judge.json"
PROGRAM = "program.json"
GUIDELINES = "memory/guidelines.json"
EPISODES = "memory/episodes.jsonl"
SEEN = "memory/seen.json"
INDEX_DIR = "memory/chroma"


# --- save ------------------------------------------------------------------------------------

def save(judge: Any, path: str | Path, *, config: Any = None) -> Path:
    """Write ``judge`` to the directory ``path`` atomically; returns the path.

    An existing judge at ``path`` is replaced only once the new one is complete.
    """
    target = Path(path)
    if target.exists() and not (target / MANIFEST).is_file():
        raise ArtifactError(f"{target} exists and is not a saved judge; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _write(judge, tmp, config)
        _swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write(judge: Any, root: Path, config: Any) -> None:
    from judgealign.lm import lm_identity

    (root / "memory").mkdir(parents=True)
    _write_json(root / PROGRAM, _program_state(judge))
    _write_json(root / GUIDELINES, {
        dim: {"kept": [g.to_dict() for g in j.guidelines],
              "rejected": [g.to_dict() for g in j.rejected]}
        for dim, j in judge.judges.items()})
    _write_json(root / SEEN, dict(sorted(judge.seen.items())))
    memory = judge.memory
    episodes_path = root / EPISODES
    if memory is not None:
        memory.write_episodes(episodes_path)
        memory.write_index(root / INDEX_DIR)
    else:
        episodes_path.write_text("", encoding="utf-8")
    lm = judge.get_lm()
    manifest = {
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "rubric": judge.rubric.model_dump(mode="json"),
        "settings": config.public_dict() if config is not None else None,
        "lm": lm_identity(lm) if lm is not None else None,
        "embedder": memory.embedder.identity() if memory is not None else None,
        "episodic": memory is not None,
        "judges": {dim: {"k": j.k, "demo_input_tokens": j.demo_input_tokens,
                         "item_tokens": j.item_tokens}
                   for dim, j in judge.judges.items()},
        "report": judge.report.to_dict() if getattr(judge.report, "to_dict", None) else None,
        "files": {rel: _sha256(root / rel) for rel in (PROGRAM, GUIDELINES, EPISODES, SEEN)},
    }
    _write_json(root / MANIFEST, manifest)


def _program_state(judge: Any) -> dict[str, Any]:
    """Each predictor's signature and stored demos; the LM is chosen at load, never saved."""
    state = {}
    for name, pred in judge.named_predictors():
        state[name] = {"signature": pred.signature.dump_state(),
                       "demos": [d.toDict() if hasattr(d, "toDict") else dict(d)
                                 for d in pred.demos]}
    return state


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n",
                    encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("judgealign", "dspy", "chromadb"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


# --- load ------------------------------------------------------------------------------------

def read_manifest(path: str | Path) -> dict[str, Any]:
    """The verified manifest of a saved judge (format and checksums checked)."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"no saved judge at {root}")
    manifest = _read_json(root / MANIFEST)
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{root / MANIFEST}: no format_version")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{root} was saved by a newer judgealign (format {version}; this "
                            f"version reads format {FORMAT_VERSION}): upgrade judgealign")
    if version < FORMAT_VERSION:
        raise ArtifactError(f"{root} has the old format {version}; re-align and save it again")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {PROGRAM, GUIDELINES, EPISODES, SEEN}:
        raise ArtifactError(f"{root / MANIFEST}: the file list is missing or incomplete")
    for rel, digest in files.items():
        file = root / rel
        if not file.is_file():
            raise ArtifactError(f"{file} is missing")
        if _sha256(file) != digest:
            raise ArtifactError(f"{file} does not match its checksum in {MANIFEST}: it was "
                                "edited or corrupted; restore it or re-save the judge")
    return manifest


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None


def load(path: str | Path, lm: Any = None, *, config: Any = None, reembed: bool = False,
         attach_lm: bool = True) -> Any:
    """Load and verify a saved judge.

    Parameters
    ----------
    lm
        The LM to judge with: a model string (``"openai/gpt-4.1-mini"``, ``"local"``), a
        ``dspy.LM``, or ``None`` for the LM of ``config``.
    config
        A :class:`Settings` or TOML path; default ``./judgealign.toml`` and the environment.
    reembed
        Allow an embedder other than the one that built the index: every episode is then
        re-embedded with the configured embedder.
    attach_lm
        ``False`` loads the memories only (e.g. to unalign) without building an LM.
    """
    from judgealign.config import LMSettings, Settings, load_config
    from judgealign.lm import build_lm
    from judgealign.memory.embedders import build_embedder, embedder_from_identity
    from judgealign.memory.episodic import EpisodicMemory
    from judgealign.memory.semantic import Guideline
    from judgealign.program import RubricJudge
    from judgealign.signatures.rubric import rubric_from_dict

    root = Path(path)
    manifest = read_manifest(root)
    settings = config if isinstance(config, Settings) else load_config(config)
    try:
        rubric = rubric_from_dict(manifest["rubric"], source=str(root / MANIFEST))
    except Exception as exc:
        raise ArtifactError(f"{root / MANIFEST}: invalid rubric ({exc})") from None
    judge = RubricJudge(rubric)
    for dim, opts in (manifest.get("judges") or {}).items():
        if dim in judge.judges:
            judge.judges[dim].k = int(opts.get("k", 3))
            judge.judges[dim].demo_input_tokens = int(opts.get("demo_input_tokens", 350))
            item_tokens = opts.get("item_tokens")
            judge.judges[dim].item_tokens = None if item_tokens is None else int(item_tokens)
    guidelines = _read_json(root / GUIDELINES)
    try:
        for dim, sets in guidelines.items():
            djudge = judge.judges[dim]
            djudge.set_guidelines([Guideline.from_dict(g) for g in sets["kept"]])
            djudge.rejected = [Guideline.from_dict(g) for g in sets["rejected"]]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{root / GUIDELINES}: unexpected content ({exc})") from None
    _check_program(judge, _read_json(root / PROGRAM), root / PROGRAM)
    judge.seen = {str(k): str(v) for k, v in _read_json(root / SEEN).items()}
    if manifest.get("episodic"):
        saved_identity = manifest.get("embedder") or {}
        wanted = build_embedder(settings.embedder)
        if wanted.identity() == saved_identity:
            embedder = wanted
        elif reembed:
            embedder = wanted
        elif config is None or settings.embedder == type(settings.embedder)():
            embedder = embedder_from_identity(saved_identity)  # nothing asked for: keep it
        else:
            raise ArtifactError(f"{root} was indexed with embedder {saved_identity}, but the "
                                f"configuration asks for {wanted.identity()}; pass "
                                "reembed=True (CLI: --reembed) to re-embed its episodes")
        index = root / INDEX_DIR if embedder.identity() == saved_identity else root / "-none-"
        memory, problem = EpisodicMemory.read(root / EPISODES, index, embedder)
        if problem and not reembed:
            warnings.warn(f"{root}: {problem}; rebuilt the index from {EPISODES}",
                          UserWarning, stacklevel=2)
        judge.attach_memory(memory)
    if attach_lm:
        if lm is None:
            judge.set_lm(build_lm(settings.lm))
        elif isinstance(lm, str):
            judge.set_lm(build_lm(LMSettings(**{**settings.lm.model_dump(), "model": lm})))
        else:
            judge.set_lm(lm)
    return judge


def _check_program(judge: Any, state: Any, where: Path) -> None:
    """The saved DSPy state must be what the rubric and guidelines rebuild; stored demos
    (from DSPy few-shot optimizers) are restored from it."""
    import dspy

    expected = _program_state(judge)
    if not isinstance(state, dict) or set(state) != set(expected):
        raise ArtifactError(f"{where}: its predictors do not match the rubric in {MANIFEST}")
    predictors = dict(judge.named_predictors())
    for name, exp in expected.items():
        saved = state[name]
        if not isinstance(saved, dict) or saved.get("signature") != exp["signature"]:
            raise ArtifactError(f"{where}: predictor {name!r} differs from the rubric and "
                                f"guidelines saved beside it")
        demos = saved.get("demos") or []
        if not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos):
            raise ArtifactError(f"{where}: predictor {name!r} has malformed demos")
        predictors[name].demos = [dspy.Example(**d) for d in demos]


def read_memory(path: str | Path) -> dict[str, Any]:
    """A summary of a saved judge's memories: per dimension, kept and rejected guidelines
    with their sources, and the episode count (what ``judgealign memory show`` prints)."""
    root = Path(path)
    manifest = read_manifest(root)
    guidelines = _read_json(root / GUIDELINES)
    counts: dict[str, int] = {}
    for line in (root / EPISODES).read_text(encoding="utf-8").splitlines():
        if line.strip():
            dim = json.loads(line)["dimension"]
            counts[dim] = counts.get(dim, 0) + 1
    dims = [d["id"] for d in manifest["rubric"]["dimensions"]]
    return {"judge": str(root), "embedder": manifest.get("embedder"), "lm": manifest.get("lm"),
            "dimensions": {d: {"episodes": counts.get(d, 0),
                               "kept": guidelines.get(d, {}).get("kept", []),
                               "rejected": guidelines.get(d, {}).get("rejected", [])}
                           for d in dims}}
