"""Episodic memory: every labelled example, stored in a Chroma collection (cosine space).

The episodes themselves (inputs, expert score, rationale) are the source of truth and are
kept in full; the Chroma index is derived from them and can always be rebuilt. One
collection serves all dimensions of a judge, filtered on the ``dimension`` metadata.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from judgealign.memory.embedders import Embedder


@dataclass(frozen=True)
class Episode:
    """One labelled example of one dimension: the item, the expert score (None: N/A), why."""

    item_id: str
    dimension: str
    inputs: dict[str, str] = field(hash=False)
    score: int | None
    rationale: str = ""

    @property
    def id(self) -> str:
        return f"{self.item_id}::{self.dimension}"

    @property
    def content_hash(self) -> str:
        blob = json.dumps([self.inputs, self.score, self.rationale], sort_keys=True,
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Episode:
        return cls(item_id=str(data["item_id"]), dimension=str(data["dimension"]),
                   inputs={str(k): str(v) for k, v in dict(data["inputs"]).items()},
                   score=data.get("score"), rationale=str(data.get("rationale") or ""))


def item_text(inputs: Mapping[str, str]) -> str:
    """The text an item is embedded by: its fields in name order."""
    return "\n\n".join(f"{name}:\n{inputs[name]}" for name in sorted(inputs) if inputs[name])


_CLIENT_LOCK = threading.Lock()  # Chroma's cache of shared systems is not thread-safe


def _chroma_client(path: Path | None) -> Any:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    with _CLIENT_LOCK:
        if path is None:
            return chromadb.EphemeralClient(settings=settings)
        return chromadb.PersistentClient(path=str(path), settings=settings)


class EpisodicMemory:
    """Labelled examples with their vectors and a Chroma index over them.

    Parameters
    ----------
    embedder
        Turns item texts into L2-normalised vectors; Chroma is never asked to embed.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._episodes: dict[str, Episode] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._per_dimension: dict[str, int] = {}  # kept up to date: retrieval reads it per call
        self._collection: Any = None
        self._client: Any = None
        self._lock = threading.Lock()  # judging threads race to build the index otherwise

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

    def add(self, episodes: Iterable[Episode], *, vectors: Mapping[str, np.ndarray] | None = None
            ) -> None:
        """Insert or replace episodes (by id). Each distinct item text is embedded once."""
        episodes = list(episodes)
        if not episodes:
            return
        given = dict(vectors or {})
        todo = [e for e in episodes if e.id not in given]
        texts = sorted({item_text(e.inputs) for e in todo})
        by_text = dict(zip(texts, self.embedder.embed(texts), strict=True)) if texts else {}
        for e in episodes:
            vec = given.get(e.id)
            if vec is None:
                vec = by_text[item_text(e.inputs)]
            self._vectors[e.id] = np.asarray(vec, dtype=np.float32)
            old = self._episodes.get(e.id)
            if old is not None:
                self._count(old.dimension, -1)
            self._episodes[e.id] = e
            self._count(e.dimension, +1)
        self._index_upsert(episodes)

    def remove(self, item_ids: Iterable[str]) -> int:
        """Forget every episode of these items; returns how many were removed."""
        gone = set(item_ids)
        ids = [k for k, e in self._episodes.items() if e.item_id in gone]
        for k in ids:
            self._count(self._episodes.pop(k).dimension, -1)
            del self._vectors[k]
        if ids and self._collection is not None:
            self._collection.delete(ids=ids)
        return len(ids)

    # --- retrieval ----------------------------------------------------------------------

    def retrieve(self, inputs: Mapping[str, str], *, dimension: str, k: int) -> list[Episode]:
        """The ``k`` stored episodes of ``dimension`` nearest to the item (cosine)."""
        n = self._per_dimension.get(dimension, 0)
        if k <= 0 or n == 0:
            return []
        query = self.embedder.embed([item_text(inputs)])[0]
        found = self._index().query(query_embeddings=[query.tolist()], n_results=min(k, n),
                                    where={"dimension": dimension}, include=["distances"])
        pairs = sorted(zip(found["distances"][0], found["ids"][0], strict=True))
        return [self._episodes[i] for _, i in pairs if i in self._episodes]

    # --- the Chroma index ---------------------------------------------------------------

    def _index(self) -> Any:
        with self._lock:
            if self._collection is None:
                client = _chroma_client(None)
                collection = client.create_collection(
                    name=f"episodes-{uuid.uuid4().hex}", embedding_function=None,
                    configuration={"hnsw": {"space": "cosine"}})
                self._client, self._collection = client, collection
                self._index_upsert(list(self._episodes.values()))
            return self._collection

    def _index_upsert(self, episodes: Sequence[Episode]) -> None:
        if self._collection is None or not episodes:
            return  # built lazily on first retrieval, from everything stored
        for start in range(0, len(episodes), 4000):  # Chroma caps the batch size
            chunk = episodes[start:start + 4000]
            self._collection.upsert(
                ids=[e.id for e in chunk],
                embeddings=[self._vectors[e.id].tolist() for e in chunk],
                metadatas=[{"dimension": e.dimension, "item_id": e.item_id} for e in chunk])

    def close(self) -> None:
        """Drop the in-memory index (it is rebuilt on the next retrieval)."""
        if self._collection is not None and self._client is not None:
            try:
                self._client.delete_collection(self._collection.name)
            except Exception:  # already gone with its client
                pass
        self._collection = self._client = None

    def __deepcopy__(self, memo: dict[int, Any]) -> EpisodicMemory:
        # A copy gets its own index, rebuilt from the stored vectors: nothing is re-embedded.
        new = EpisodicMemory(self.embedder)
        new._episodes = dict(self._episodes)
        new._vectors = dict(self._vectors)
        new._per_dimension = dict(self._per_dimension)
        return new

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("EpisodicMemory is saved with judgealign.artifacts, never pickled")

    # --- persistence (used by judgealign.artifacts) --------------------------------------

    def write_episodes(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as fh:
            for e in self.episodes():
                fh.write(json.dumps(e.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")

    def write_index(self, directory: Path) -> None:
        """Write a persistent Chroma index of every episode into ``directory``."""
        client = _chroma_client(directory)
        collection = client.get_or_create_collection(
            name="episodes", embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}})
        episodes = self.episodes()
        for start in range(0, len(episodes), 4000):
            chunk = episodes[start:start + 4000]
            collection.upsert(ids=[e.id for e in chunk],
                              embeddings=[self._vectors[e.id].tolist() for e in chunk],
                              metadatas=[{"dimension": e.dimension, "item_id": e.item_id}
                                         for e in chunk])
        _release(client)

    @classmethod
    def read(cls, episodes_path: Path, index_dir: Path, embedder: Embedder
             ) -> tuple[EpisodicMemory, str | None]:
        """Load episodes and their index; returns the memory and, if the index could not be
        used (missing, unreadable, or disagreeing with the episodes), why it was rebuilt."""
        episodes = [Episode.from_dict(json.loads(line))
                    for line in episodes_path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        memory = cls(embedder)
        problem = None
        vectors: dict[str, np.ndarray] = {}
        if not index_dir.is_dir():
            problem = "the Chroma index is missing"
        else:
            try:
                client = _chroma_client(index_dir)
                got = client.get_collection("episodes").get(include=["embeddings"])
                vectors = {i: np.asarray(v, dtype=np.float32)
                           for i, v in zip(got["ids"], got["embeddings"], strict=True)}
                _release(client)
                if set(vectors) != {e.id for e in episodes}:
                    problem = "the Chroma index holds other ids than episodes.jsonl"
                elif episodes:
                    # The index must be what this embedder makes of these episodes.
                    probe = episodes[: min(8, len(episodes))]
                    fresh = embedder.embed([item_text(e.inputs) for e in probe])
                    stored = np.stack([vectors[e.id] for e in probe])
                    if not np.allclose(fresh, stored, atol=1e-4):
                        problem = "the Chroma index vectors do not match the episodes"
            except Exception as exc:  # a corrupt index is derived data: rebuild it
                problem = f"the Chroma index cannot be read ({type(exc).__name__})"
        memory.add(episodes, vectors=None if problem else vectors)
        return memory, problem


def _release(client: Any) -> None:
    """Close a persistent client so its directory can be moved or deleted."""
    try:
        from chromadb.api.client import SharedSystemClient

        client._system.stop()
        SharedSystemClient.clear_system_cache()
    except Exception:  # older/newer chromadb: nothing more we can do
        pass
