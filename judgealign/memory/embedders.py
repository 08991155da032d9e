"""Embedders: ``embed(texts) -> float32 array of shape (len(texts), dim)``, rows L2-normalised.

Chroma never embeds by itself (its default function downloads a model): every vector comes
from one of these. The default, :class:`HashingEmbedder`, is offline, deterministic and
fit-free, so adding examples never changes the vectors of old ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from judgealign.errors import ArtifactError, ConfigError


@runtime_checkable
class Embedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def identity(self) -> dict[str, Any]:
        """Everything that determines the vectors; two embedders with equal identities give
        equal vectors, so an index built by one can be queried by the other."""
        ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


class HashingEmbedder:
    """Word 1–2-grams and character 3–5-grams hashed into ``dim`` buckets, sublinear counts.

    Each half is L2-normalised before they are added, so long code-heavy texts and short
    rationales weigh words and spelling alike. ``dim`` defaults to 2048.
    """

    name = "hashing"
    version = 1

    def __init__(self, dim: int = 2048) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        common = dict(n_features=dim, alternate_sign=False, norm=None, lowercase=True,
                      dtype=np.float32)
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2),
                                        token_pattern=r"(?u)\b\w+\b", **common)
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t or "" for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for vectorizer in (self._words, self._chars):
            counts = vectorizer.transform(texts)
            counts.data = np.log1p(counts.data)
            parts.append(_normalise(counts.toarray()))
        return _normalise(parts[0] + parts[1])

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name, "version": self.version, "dim": self.dim}


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local path (never downloaded)."""

    name = "sentence-transformers"

    def __init__(self, model: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("embedder.kind = 'sentence-transformers' needs the package: "
                              "pip install 'judgealign[embeddings]'") from None
        self.model_name = model
        self._model = SentenceTransformer(model, device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), normalize_embeddings=True)
        return _normalise(np.asarray(vectors))

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name, "model": self.model_name}


class LiteLLMEmbedder:
    """Any litellm embedding model (``openai/text-embedding-3-small``, ``ollama/...``)."""

    name = "litellm"

    def __init__(self, model: str, *, api_base: str | None = None,
                 api_key_env: str | None = None) -> None:
        self.model_name, self.api_base, self.api_key_env = model, api_base, api_key_env

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        kwargs: dict[str, Any] = {}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key_env:
            kwargs["api_key"] = os.environ.get(self.api_key_env)
        response = litellm.embedding(model=self.model_name, input=list(texts), **kwargs)
        return _normalise(np.array([row["embedding"] for row in response["data"]]))

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name, "model": self.model_name}


def embedder_from_identity(identity: Any, *, where: str = "a saved judge") -> Embedder:
    """Rebuild the embedder a saved index was made with -- only one that runs offline and
    needs nothing from outside: the hashing embedder. A saved file never makes judgealign
    load a model or call a service; other embedders must be named by the configuration."""
    if not isinstance(identity, dict):
        raise ArtifactError(f"{where}: the embedder entry is not an object")
    kind = identity.get("kind")
    if kind == "hashing":
        dim = identity.get("dim", 2048)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 64 <= dim <= 1 << 20:
            raise ArtifactError(f"{where}: embedder dim {dim!r} is not an int in [64, 2^20]")
        return HashingEmbedder(dim)
    if kind in ("sentence-transformers", "litellm"):
        raise ConfigError(f"{where} was indexed with the {kind} embedder "
                          f"{identity.get('model')!r}; configure it explicitly ([embedder] "
                          f"kind = {kind!r}, model = ...) to load this judge")
    raise ArtifactError(f"{where}: unknown embedder {identity!r}")
