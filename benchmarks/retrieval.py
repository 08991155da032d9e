"""Latency of one episodic-memory lookup as the memory grows, insert rate and memory use.

One lookup is ``EpisodicMemory.retrieve``: embed the query item with the default
:class:`HashingEmbedder`, then a Chroma query filtered on the dimension. One memory grows
through the sizes (100 → 1,000 → 10,000 [→ 100,000] episodes); at each size the script times
lookups of fresh items (never stored) and records the process RSS.

Episodes are synthetic pseudo-notebooks of 1–3 KB, generated deterministically (seeded), one
distinct item per episode, spread round-robin over the nine ``ml_notebook`` dimensions, so a
lookup searches ~1/9 of the index.

Run from the repository root::

    python -m benchmarks.retrieval            # 100 .. 100,000 episodes, 300 lookups per size
    python -m benchmarks.retrieval --quick    # 100 .. 10,000 episodes, 200 lookups per size
    python -m benchmarks.retrieval --no-write # print only, leave BENCHMARKS.md alone
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from benchmarks._report import command_line, emit, machine_info, machine_markdown, table  # noqa: E402

SECTION = "retrieval"
DIMENSIONS = ("library_installation", "exploratory_data_analysis", "data_imputation",
              "feature_engineering", "model_training", "model_use", "metrics_evaluation",
              "mlflow_logging", "cell_organization")
FULL = {"sizes": (100, 1_000, 10_000, 100_000), "queries": 300}
QUICK = {"sizes": (100, 1_000, 10_000), "queries": 200}
WARMUP_QUERIES = 10
K = 3
INSERT_BATCH = 1_000   # episodes per EpisodicMemory.add call

# --- synthetic pseudo-notebooks ------------------------------------------------------------

_DATASETS = ["flights", "churn", "housing", "credit_default", "taxi_trips", "retail_sales",
             "sensor_readings", "hospital_readmissions", "energy_load", "ad_clicks",
             "loan_applications", "bike_sharing", "wine_quality", "insurance_claims"]
_TARGETS = ["delayed", "churned", "price", "default", "fare", "units_sold", "failure",
            "readmitted", "load_mw", "clicked", "approved", "rentals", "quality", "claim_amount"]
_COLUMNS = ["age", "income", "distance", "duration", "month", "weekday", "hour", "region",
            "category", "temperature", "humidity", "tenure", "balance", "num_items", "rating",
            "carrier", "origin", "dest", "sqft", "rooms", "year_built", "visits", "score"]
_MODELS = ["RandomForestClassifier", "GradientBoostingRegressor", "LogisticRegression",
           "XGBClassifier", "LGBMRegressor", "Ridge", "HistGradientBoostingClassifier",
           "KNeighborsClassifier", "SVC", "ElasticNet", "ExtraTreesRegressor"]
_METRICS = ["accuracy_score", "f1_score", "roc_auc_score", "mean_absolute_error",
            "mean_squared_error", "r2_score", "precision_score", "recall_score"]
_IMPUTE = ["median", "mean", "most_frequent", "constant"]
_PACKAGES = ["pandas", "numpy", "scikit-learn", "xgboost", "lightgbm", "mlflow", "matplotlib",
             "seaborn", "scipy", "category_encoders"]
_WORDS = ("the data model feature train test split missing values target column outliers "
          "distribution baseline improve tune cross validation leakage pipeline encode scale "
          "metric score check drop rows hyperparameters overfit results plot correlation "
          "we first then next finally note that this because so").split()


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _prose(rng: random.Random, lo: int, hi: int) -> str:
    return f"## {_sentence(rng, rng.randint(3, 8))}\n{_sentence(rng, rng.randint(lo, hi))}"


def _cells(rng: random.Random) -> list[str]:
    ds = rng.randrange(len(_DATASETS))
    data, target = _DATASETS[ds], _TARGETS[ds]
    cols = rng.sample(_COLUMNS, rng.randint(4, 9))
    model = rng.choice(_MODELS)
    df = rng.choice(["df", "data", "raw", f"{data}_df"])
    cells = [f"# {data.replace('_', ' ').title()}: predict `{target}`\n{_sentence(rng, 14)}"]
    if rng.random() < 0.7:
        pkgs = rng.sample(_PACKAGES, rng.randint(2, 5))
        pins = " ".join(f"{p}=={rng.randint(0, 3)}.{rng.randint(0, 30)}" if rng.random() < 0.5
                        else p for p in pkgs)
        cells.append(f"%pip install -q {pins}")
    cells.append("import pandas as pd\nimport numpy as np\n"
                 f"from sklearn.model_selection import train_test_split\n"
                 f"from sklearn.metrics import {rng.choice(_METRICS)}")
    cells.append(f"{df} = pd.read_csv('data/{data}.csv')\n{df}.shape")
    for _ in range(rng.randint(1, 3)):
        c = rng.choice(cols)
        cells.append(rng.choice([
            f"{df}.describe()", f"{df}['{c}'].value_counts().head({rng.randint(5, 20)})",
            f"{df}.isna().mean().sort_values(ascending=False)",
            f"{df}.groupby('{c}')['{target}'].mean().plot(kind='bar')",
            f"## {_sentence(rng, rng.randint(4, 9))}\n{_sentence(rng, rng.randint(8, 20))}"]))
    strategy = rng.choice(_IMPUTE)
    split_first = rng.random() < 0.5
    split = (f"X_train, X_test, y_train, y_test = train_test_split(\n    {df}[{cols!r}], "
             f"{df}['{target}'], test_size={rng.choice([0.2, 0.25, 0.3])}, "
             f"random_state={rng.randint(0, 99)})")
    impute = ("from sklearn.impute import SimpleImputer\n"
              f"imp = SimpleImputer(strategy='{strategy}')\n"
              + ("X_train = imp.fit_transform(X_train)\nX_test = imp.transform(X_test)"
                 if split_first else f"{df}[{cols[:3]!r}] = imp.fit_transform({df}[{cols[:3]!r}])"))
    cells += [split, impute] if split_first else [impute, split]
    if rng.random() < 0.6:
        a, b = rng.sample(cols, 2)
        cells.append(f"# feature engineering\n{df}['{a}_per_{b}'] = {df}['{a}'] / "
                     f"({df}['{b}'] + 1)\n{df}['log_{a}'] = np.log1p({df}['{a}'])")
    params = ", ".join(f"{p}={rng.randint(2, 500)}" for p in
                       rng.sample(["n_estimators", "max_depth", "min_samples_leaf",
                                   "max_iter", "num_leaves"], rng.randint(1, 3)))
    cells.append(f"model = {model}({params})\nmodel.fit(X_train, y_train)")
    metric = rng.choice(_METRICS)
    cells.append(f"pred = model.predict(X_test)\nprint('{metric}', {metric}(y_test, pred))")
    if rng.random() < 0.5:
        cells.append("import mlflow\nwith mlflow.start_run():\n"
                     f"    mlflow.log_params(model.get_params())\n"
                     f"    mlflow.log_metric('{metric}', {metric}(y_test, pred))\n"
                     "    mlflow.sklearn.log_model(model, 'model')")
    for _ in range(rng.randint(0, 4)):
        cells.append(_prose(rng, 10, 30))
    return cells


def pseudo_notebook(i: int, seed: int = 0) -> str:
    """A deterministic pseudo-notebook text of 1,000–3,000 characters (item ``i``)."""
    rng = random.Random(f"{seed}:{i}")
    target = rng.randint(1_000, 3_000)
    cells = _cells(rng)
    while sum(len(c) + 30 for c in cells) < target:  # pad with more prose cells
        cells.append(_prose(rng, 15, 40))
    text = "\n\n".join(f"# In[{n}]:\n{c}" for n, c in enumerate(cells, start=1))
    if len(text) > target:
        cut = text.rfind("\n", 0, target)
        text = text[:cut] if cut >= max(1_000, target - 200) else text[:target]
    return text


def episodes(start: int, stop: int, *, seed: int = 0) -> list:
    from judgealign.memory.episodic import Episode

    return [Episode(item_id=f"nb-{i:06d}", dimension=DIMENSIONS[i % len(DIMENSIONS)],
                    inputs={"notebook": pseudo_notebook(i, seed)}, score=1 + i % 3,
                    rationale=f"synthetic rationale {i}") for i in range(start, stop)]


# --- measurements --------------------------------------------------------------------------


def rss_mib() -> tuple[float, float]:
    """Current and peak resident set size of this process in MiB (from /proc/self/status)."""
    cur = peak = float("nan")
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_lookups(memory, queries: list[dict[str, str]]) -> dict[str, list[float]]:
    """Seconds per ``retrieve`` call, and per component (embed, Chroma query) separately."""
    embedder = memory.embedder
    collection = memory._ensure_store().collection  # noqa: SLF001 - timed directly below
    for n in range(WARMUP_QUERIES):
        memory.retrieve(queries[n % len(queries)], dimension=DIMENSIONS[n % 9], k=K)
    total, embed, query = [], [], []
    from judgealign.memory.records import item_text

    for n, inputs in enumerate(queries):
        dim = DIMENSIONS[n % len(DIMENSIONS)]
        t0 = time.perf_counter()
        found = memory.retrieve(inputs, dimension=dim, k=K)
        total.append(time.perf_counter() - t0)
        assert len(found) == K and all(e.dimension == dim for e in found)
        t0 = time.perf_counter()
        vec = embedder.embed([item_text(inputs)])[0]
        embed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        collection.query(query_embeddings=[vec], n_results=K, where={"dimension": dim},
                         include=["distances"])
        query.append(time.perf_counter() - t0)
    return {"retrieve": total, "embed": embed, "chroma": query}


class TimedEmbedder:
    """Wraps an embedder and adds up the seconds spent in ``embed``."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def embed(self, texts):
        t0 = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - t0

    def identity(self):
        return self.inner.identity()


def run(quick: bool, *, seed: int = 0) -> dict:
    from judgealign.memory.embedders import HashingEmbedder
    from judgealign.memory.episodic import EpisodicMemory

    cfg = QUICK if quick else FULL
    gc.collect()
    rss_start, _ = rss_mib()
    embedder = TimedEmbedder(HashingEmbedder())
    memory = EpisodicMemory(embedder)
    memory._ensure_store()  # noqa: SLF001 - create the empty collection: inserts then upsert
    rss_empty, _ = rss_mib()
    queries = [{"notebook": pseudo_notebook(10_000_000 + n, seed)} for n in range(cfg["queries"])]
    rows = []
    stored = 0
    for size in cfg["sizes"]:
        insert_seconds = 0.0
        embedder.seconds = 0.0
        while stored < size:
            batch = episodes(stored, min(stored + INSERT_BATCH, size), seed=seed)
            t0 = time.perf_counter()
            memory.add(batch)   # embeds each text, keeps the vector, upserts into Chroma
            insert_seconds += time.perf_counter() - t0
            stored += len(batch)
        embed_seconds = embedder.seconds
        added = size - (rows[-1]["size"] if rows else 0)
        gc.collect()
        rss_after_insert, _ = rss_mib()
        times = time_lookups(memory, queries)
        rss_now, peak = rss_mib()
        row = {"size": size, "added": added, "insert_s": insert_seconds,
               "insert_rate": added / insert_seconds if insert_seconds else float("nan"),
               "insert_embed_share": embed_seconds / insert_seconds if insert_seconds else 0.0,
               "rss_mib": rss_now, "rss_after_insert": rss_after_insert, "peak_mib": peak}
        for key, vals in times.items():
            row[f"{key}_p50"] = percentile(vals, 50) * 1e3
            row[f"{key}_p95"] = percentile(vals, 95) * 1e3
        rows.append(row)
        print(f"  {size:>7,} episodes: retrieve p50 {row['retrieve_p50']:.2f} ms, "
              f"p95 {row['retrieve_p95']:.2f} ms; insert {row['insert_rate']:.0f} ep/s; "
              f"RSS {rss_now:.0f} MiB", file=sys.stderr, flush=True)
    memory.close()
    return {"rows": rows, "rss_start": rss_start, "rss_empty": rss_empty, "cfg": cfg,
            "text_chars": statistics.mean(len(q["notebook"]) for q in queries)}


def render(result: dict, *, quick: bool, argv: Sequence[str], seconds: float) -> str:
    rows, cfg = result["rows"], result["cfg"]
    base = result["rss_empty"]
    out = [f"## Episodic retrieval latency ({'quick' if quick else 'full'} mode)", "",
           f"Command: `{command_line('benchmarks.retrieval', argv)}` — figures from the "
           f"**{'quick' if quick else 'full'}** mode, run took {seconds:.0f} s.", "",
           f"One lookup = `EpisodicMemory.retrieve(item, dimension=d, k={K})`: HashingEmbedder "
           "(2,048 dims) on the query item + Chroma query (in-memory, HNSW cosine) filtered on "
           f"`dimension`. {cfg['queries']} lookups of fresh items per size after "
           f"{WARMUP_QUERIES} warm-up lookups; episodes are synthetic pseudo-notebooks "
           f"(1–3 KB, mean query {result['text_chars']:.0f} chars), one item per episode, spread "
           f"over 9 dimensions; inserted with `EpisodicMemory.add` in batches of {INSERT_BATCH:,} "
           "into an existing index (embedding + Chroma upsert). The memory grows in place "
           "from one size to the next.", ""]
    out.append(table(
        ["episodes", "retrieve p50 (ms)", "retrieve p95 (ms)", "embed p50 (ms)",
         "Chroma query p50 / p95 (ms)",
         "insert (episodes/s; share embedding)", "RSS (MiB)",
         "RSS growth since empty memory (MiB)"],
        [(f"{r['size']:,}", f"{r['retrieve_p50']:.2f}", f"{r['retrieve_p95']:.2f}",
          f"{r['embed_p50']:.2f}", f"{r['chroma_p50']:.2f} / {r['chroma_p95']:.2f}",
          f"{r['insert_rate']:,.0f} ({r['insert_embed_share']:.0%})", f"{r['rss_mib']:,.0f}",
          f"{r['rss_mib'] - base:,.0f}")
         for r in rows]))
    out += ["", f"RSS at start {result['rss_start']:.0f} MiB, with the empty memory and Chroma "
            f"loaded {base:.0f} MiB; peak RSS {rows[-1]['peak_mib']:,.0f} MiB.", ""]
    out.append(growth_text(rows, base))
    out += ["", machine_markdown(machine_info())]
    return "\n".join(out)


def growth_text(rows: list[dict], base: float) -> str:
    """A few sentences on how latency and memory scale, computed from the rows."""
    first, last = rows[0], rows[-1]
    factor = last["size"] / first["size"]
    lat = last["retrieve_p50"] / first["retrieve_p50"]
    chroma = last["chroma_p50"] / first["chroma_p50"]
    big = [r for r in rows if r["size"] >= 1_000]
    per_ep = []
    for a, b in zip(big, big[1:], strict=False):
        per_ep.append((b["rss_mib"] - a["rss_mib"]) * 1024 / (b["size"] - a["size"]))
    per_ep_text = (f"about {statistics.mean(per_ep):.0f} KiB per episode between "
                   f"{big[0]['size']:,} and {big[-1]['size']:,} episodes"
                   if per_ep else "too few sizes to estimate a per-episode cost")
    return (f"**How it grows.** From {first['size']:,} to {last['size']:,} episodes "
            f"(×{factor:,.0f}) the median lookup grows ×{lat:.2f} "
            f"({first['retrieve_p50']:.2f} → {last['retrieve_p50']:.2f} ms) and the Chroma query "
            f"alone ×{chroma:.2f}. The query embedding (~{last['embed_p50']:.1f} ms) does not "
            f"depend on the memory size. Memory grows roughly linearly: "
            f"{per_ep_text} (each episode's 2,048-float32 vector lives only in Chroma's index, "
            "with its metadata; Python keeps the episode's record and its 1–3 KB text). Inserting "
            f"runs at {last['insert_rate']:,.0f} episodes/s at the largest size, "
            f"{last['insert_embed_share']:.0%} of it in the embedder, the rest in Chroma's "
            "upsert.")


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip 100,000 episodes and time fewer lookups (< 10 min)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", help="comma-separated memory sizes (default: the mode's)")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
        FULL["sizes"] = QUICK["sizes"] = sizes
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    result = run(args.quick, seed=args.seed)
    text = render(result, quick=args.quick, argv=argv, seconds=time.perf_counter() - started)
    emit(SECTION, text, write=not args.no_write)
    return text


if __name__ == "__main__":
    main()
