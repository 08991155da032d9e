"""Episodic memory: every labelled example, stored in a Chroma collection (cosine space).

Chroma is the one store of the vectors: nothing keeps a second copy in Python. The episode
records (inputs, expert score, rationale) are kept beside it in full -- they are small, the
source of truth, and what a saved judge's ``episodes.jsonl`` holds.

Where the collection lives:

* a judge that was never saved: an in-memory (ephemeral) collection of its own;
* a loaded judge: the saved persistent index, opened on a private working copy of its files
  (Chroma writes to the directory it opens, so opening the saved one would modify the saved
  judge); the saved files are never written;
* either is dropped with the memory (``close()``, or when the memory is garbage-collected),
  so cross-validation folds do not pile collections up.

One collection serves all dimensions of a judge, filtered on the ``dimension`` metadata.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from judgealign.memory.embedders import Embedder
from judgealign.memory.records import Episode, item_text

COLLECTION = "episodes"
EPISODES_FILE = "episodes.jsonl"
INDEX_DIR = "chroma"
_CHUNK = 4000  # Chroma caps the batch size of one call
_PROBE = 8  # episodes re-embedded to check that a saved index matches the embedder

_CLIENT_LOCK = threading.Lock()  # Chroma's cache of shared systems is not thread-safe


def _chroma_settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


class _Store:
    """One Chroma collection and what must be released with it."""

    def __init__(self, client: Any, collection: Any, *, workdir: Path | None = None,
                 persistent: bool = False) -> None:
        self.client, self.collection = client, collection
        self.workdir, self.persistent = workdir, persistent

    @classmethod
    def in_memory(cls) -> _Store:
        import chromadb

        with _CLIENT_LOCK:
            client = chromadb.EphemeralClient(settings=_chroma_settings())
            collection = client.create_collection(
                name=f"episodes-{uuid.uuid4().hex}", embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}})
        return cls(client, collection)

    @classmethod
    def open_copy(cls, saved: Path) -> _Store:
        """Open a private copy of the persistent index in ``saved`` (never ``saved`` itself)."""
        import chromadb

        workdir = Path(tempfile.mkdtemp(prefix="judgealign-index-"))
        try:
            shutil.copytree(saved, workdir / INDEX_DIR, symlinks=False)
            with _CLIENT_LOCK:
                client = chromadb.PersistentClient(path=str(workdir / INDEX_DIR),
                                                   settings=_chroma_settings())
                collection = client.get_collection(COLLECTION)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(client, collection, workdir=workdir, persistent=True)

    def close(self) -> None:
        if self.collection is None:
            return
        if self.persistent:
            _release(self.client)
        else:
            try:
                self.client.delete_collection(self.collection.name)
            except Exception:  # already gone with its system
                pass
        self.client = self.collection = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[dict]) -> None:
        for start in range(0, len(ids), _CHUNK):
            end = start + _CHUNK
            self.collection.upsert(ids=list(ids[start:end]),
                                   embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                                   metadatas=list(metadatas[start:end]))

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), _CHUNK):
            got = self.collection.get(ids=list(ids[start:start + _CHUNK]),
                                      include=["embeddings"])
            for i, v in zip(got["ids"], got["embeddings"], strict=True):
                out[i] = np.asarray(v, dtype=np.float32)
        return out


class EpisodicMemory:
    """Labelled examples and a Chroma index over their item texts.

    Parameters
    ----------
    embedder
        Turns item texts into L2-normalised vectors; Chroma is never asked to embed.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._episodes: dict[str, Episode] = {}
        self._per_dimension: dict[str, int] = {}  # kept up to date: retrieval reads it per call
        self._store: _Store | None = None
        self._finalizer: Any = None
        self._lock = threading.Lock()  # judging threads race to create the store otherwise

    # --- content ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._episodes)

    def episodes(self, dimension: str | None = None) -> list[Episode]:
        """Stored episodes sorted by id, optionally of one dimension."""
        return [self._episodes[k] for k in sorted(self._episodes)
                if dimension is None or self._episodes[k].dimension == dimension]

    def item_ids(self) -> set[str]:
        return {e.item_id for e in self._episodes.values()}

    def counts(self) -> dict[str, int]:
        return {d: n for d, n in sorted(self._per_dimension.items()) if n}

    def _count(self, dimension: str, change: int) -> None:
        self._per_dimension[dimension] = self._per_dimension.get(dimension, 0) + change

    def _attach(self, store: _Store) -> None:
        self._store = store
        self._finalizer = weakref.finalize(self, store.close)

    def _ensure_store(self) -> _Store:
        with self._lock:
            if self._store is None:
                self._attach(_Store.in_memory())
            return self._store

    def add(self, episodes: Iterable[Episode], *,
            vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """Insert or replace episodes (by id). Each distinct item text is embedded once."""
        episodes = list(episodes)
        if not episodes:
            return
        given = dict(vectors or {})
        texts = sorted({item_text(e.inputs) for e in episodes if e.id not in given})
        by_text = dict(zip(texts, self.embedder.embed(texts), strict=True)) if texts else {}
        matrix = np.stack([given[e.id] if e.id in given else by_text[item_text(e.inputs)]
                           for e in episodes]).astype(np.float32)
        self._ensure_store().upsert([e.id for e in episodes], matrix,
                                    [{"dimension": e.dimension, "item_id": e.item_id}
                                     for e in episodes])
        for e in episodes:
            old = self._episodes.get(e.id)
            if old is not None:
                self._count(old.dimension, -1)
            self._episodes[e.id] = e
            self._count(e.dimension, +1)

    def remove(self, item_ids: Iterable[str]) -> int:
        """Forget every episode of these items; returns how many were removed."""
        gone = set(item_ids)
        ids = [k for k, e in self._episodes.items() if e.item_id in gone]
        for k in ids:
            self._count(self._episodes.pop(k).dimension, -1)
        if ids and self._store is not None:
            for start in range(0, len(ids), _CHUNK):
                self._store.collection.delete(ids=ids[start:start + _CHUNK])
        return len(ids)

    # --- retrieval ----------------------------------------------------------------------

    def embed_query(self, inputs: Mapping[str, str]) -> np.ndarray:
        """The vector an item is retrieved by (compute it once per judged item)."""
        return self.embedder.embed([item_text(inputs)])[0]

    def retrieve(self, inputs: Mapping[str, str], *, dimension: str, k: int,
                 vector: np.ndarray | None = None) -> list[Episode]:
        """The ``k`` stored episodes of ``dimension`` nearest to the item (cosine).

        ``vector`` is the item's :meth:`embed_query` when the caller has it already (one
        embedding serves every dimension of a judgment).
        """
        return [e for e, _ in self.retrieve_scored(inputs, dimension=dimension, k=k,
                                                   vector=vector)]

    def retrieve_scored(self, inputs: Mapping[str, str], *, dimension: str, k: int,
                        vector: np.ndarray | None = None,
                        exclude: Collection[str] = ()) -> list[tuple[Episode, float]]:
        """Like :meth:`retrieve`, with each episode's cosine similarity to the item (from
        Chroma's own distances), never returning episodes of the items in ``exclude``."""
        n = self._per_dimension.get(dimension, 0)
        n -= sum(1 for item in set(exclude) if f"{item}::{dimension}" in self._episodes)
        if k <= 0 or n <= 0:
            return []
        where: dict[str, Any] = {"dimension": dimension}
        if exclude:
            where = {"$and": [where, {"item_id": {"$nin": sorted(set(exclude))}}]}
        query = self.embed_query(inputs) if vector is None else vector
        found = self._ensure_store().collection.query(
            query_embeddings=[np.asarray(query, dtype=np.float32)], n_results=min(k, n),
            where=where, include=["distances"])
        pairs = sorted(zip(found["distances"][0], found["ids"][0], strict=True))
        # Cosine space: distance = 1 - cosine similarity.
        return [(self._episodes[i], 1.0 - float(d)) for d, i in pairs if i in self._episodes]

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Release the Chroma collection (and a loaded index's working copy) now."""
        if self._finalizer is not None:
            self._finalizer()
        self._store = self._finalizer = None

    def __deepcopy__(self, memo: dict[int, Any]) -> EpisodicMemory:
        # A copy gets its own in-memory collection with the same vectors: nothing is
        # re-embedded, and changing the copy never touches the original.
        new = EpisodicMemory(self.embedder)
        if self._episodes:
            ids = sorted(self._episodes)
            vectors = self._store.vectors(ids) if self._store is not None else {}
            new.add([self._episodes[i] for i in ids], vectors=vectors)
        return new

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("EpisodicMemory is saved with save()/open(), never pickled")

    # --- state and persistence ----------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        """The memory as JSON data: the embedder's identity and every record (no vectors)."""
        return {"embedder": self.embedder.identity(),
                "episodes": [e.to_dict() for e in self.episodes()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], embedder: Embedder) -> EpisodicMemory:
        """A fresh in-memory memory holding the records of ``state`` (re-embedded)."""
        memory = cls(embedder)
        memory.add(Episode.from_dict(e) for e in state.get("episodes", []))
        return memory

    def save(self, directory: str | Path) -> None:
        """Write ``episodes.jsonl`` and a persistent Chroma index into ``directory``."""
        import chromadb

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        episodes = self.episodes()
        with (directory / EPISODES_FILE).open("w", encoding="utf-8") as fh:
            for e in episodes:
                fh.write(json.dumps(e.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
        with _CLIENT_LOCK:
            client = chromadb.PersistentClient(path=str(directory / INDEX_DIR),
                                               settings=_chroma_settings())
        try:
            collection = client.get_or_create_collection(
                name=COLLECTION, embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}})
            store = _Store(client, collection, persistent=True)
            if episodes:
                ids = [e.id for e in episodes]
                vectors = self._store.vectors(ids) if self._store is not None else {}
                missing = [e for e in episodes if e.id not in vectors]
                if missing:  # never indexed (no store yet): embed now
                    fresh = self.embedder.embed([item_text(e.inputs) for e in missing])
                    vectors.update({e.id: v for e, v in zip(missing, fresh, strict=True)})
                store.upsert(ids, np.stack([vectors[i] for i in ids]),
                             [{"dimension": e.dimension, "item_id": e.item_id}
                              for e in episodes])
        finally:
            _release(client)

    @classmethod
    def open(cls, directory: str | Path, embedder: Embedder, *, episodes: Sequence[Episode],
             trust_index: bool = True) -> tuple[EpisodicMemory, str | None]:
        """Open a saved memory read-only: retrieval queries the saved index (on a private
        working copy). ``episodes`` are the verified records of ``episodes.jsonl``.

        Returns the memory and, when the saved index could not be used (missing, unreadable,
        other ids than the records, or vectors another embedder made), why it was rebuilt in
        memory from the records instead -- the saved files are left as they are either way.
        """
        directory = Path(directory)
        memory = cls(embedder)
        index = directory / INDEX_DIR
        problem = None
        store = None
        if not trust_index:
            problem = "the Chroma index files do not match the manifest"
        elif not index.is_dir() or index.is_symlink():
            problem = "the Chroma index is missing"
        else:
            try:
                store = _Store.open_copy(index)
                ids = sorted(e.id for e in episodes)
                if store.collection.count() != len(ids):
                    problem = "the Chroma index holds other ids than episodes.jsonl"
                elif ids:
                    probe = sorted(episodes, key=lambda e: e.id)[:_PROBE]
                    stored = store.vectors([e.id for e in probe])
                    if set(stored) != {e.id for e in probe}:
                        problem = "the Chroma index holds other ids than episodes.jsonl"
                    else:
                        fresh = embedder.embed([item_text(e.inputs) for e in probe])
                        if not np.allclose(fresh, np.stack([stored[e.id] for e in probe]),
                                           atol=1e-4):
                            problem = "the Chroma index vectors do not match the episodes"
            except Exception as exc:  # a corrupt index is derived data: rebuild it
                problem = f"the Chroma index cannot be read ({type(exc).__name__})"
        if problem is None and store is not None:
            memory._attach(store)
            for e in episodes:
                memory._episodes[e.id] = e
                memory._count(e.dimension, +1)
        else:
            if store is not None:
                store.close()
            memory.add(episodes)
        return memory, problem


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """The raw rows of an ``episodes.jsonl`` (validation is the caller's)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _release(client: Any) -> None:
    """Stop a persistent client's system so its directory can be moved or deleted."""
    try:
        from chromadb.api.shared_system_client import SharedSystemClient
    except ImportError:  # older chromadb
        try:
            from chromadb.api.client import SharedSystemClient
        except ImportError:
            return
    try:
        system = client._system
        system.stop()
        cache = getattr(SharedSystemClient, "_identifier_to_system", {})
        with _CLIENT_LOCK:
            for key, value in list(cache.items()):
                if value is system:
                    del cache[key]
    except Exception:  # nothing more we can do; the directory may stay open until exit
        pass


__all__ = ["Episode", "EpisodicMemory", "item_text", "read_episodes"]
