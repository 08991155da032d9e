"""Every CLI command's happy path, each in a fresh process, against an OpenAI-compatible fake
LM served on 127.0.0.1 (``--lm openai/fake --api-base ...``): exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scenarios import Reflector, banana_judge, label_rows

from judgealign.testing import TINY_RUBRIC, FakeOpenAIServer

REFLECT = Reflector()


def respond(prompt: str):
    """Reflection prompts get guidelines; judging prompts the banana judge's answer."""
    if "expert rationale:" in prompt:
        return REFLECT(prompt)
    return banana_judge(prompt)


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(respond) as srv:
        yield srv


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RUBRIC))
    rows = label_rows() + label_rows(dimension="clarity")
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "answer.txt").write_text("A banana explains the tides.")
    return tmp_path


def cli(workdir: Path, server, *argv: str, lm: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUDGEALIGN_")}
    env.update({"OPENAI_API_KEY": "test-key", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "JUDGEALIGN_CACHE_DIR": str(workdir / ".cache"),
                "DSPY_CACHEDIR": str(workdir / ".dspy"), "ANONYMIZED_TELEMETRY": "False"})
    extra = ["--lm", "openai/fake", "--api-base", server.api_base] if lm else []
    proc = subprocess.run([sys.executable, "-m", "judgealign.cli", *argv, *extra],
                          capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_score_align_memory_unalign_round_trip(workdir, server):
    proc = cli(workdir, server, "score", "--rubric", "tiny.yaml", "answer.txt")
    assert proc.returncode == 0, proc.stderr
    assert "Correctness" in proc.stdout and "Clarity" in proc.stdout
    assert "3" in proc.stdout  # the unaligned judge calls a banana answer right

    proc = cli(workdir, server, "align", "--rubric", "tiny.yaml", "--labels", "labels.jsonl",
               "--out", "judge")
    assert proc.returncode == 0, proc.stderr
    assert "saved the aligned judge to judge" in proc.stdout
    assert (workdir / "judge" / "judge.json").is_file()

    proc = cli(workdir, server, "memory", "show", "judge", lm=False)
    assert proc.returncode == 0, proc.stderr
    assert "Answers that mention a banana are wrong" in proc.stdout
    assert "b1" in proc.stdout  # its sources are shown

    proc = cli(workdir, server, "score", "--judge", "judge", "answer.txt")
    assert proc.returncode == 0, proc.stderr
    assert "guideline: banana" in proc.stdout  # the aligned judge applies what it learned

    proc = cli(workdir, server, "unalign", "--judge", "judge", "--items", "b1", "b2", "b3",
               lm=False)
    assert proc.returncode == 0, proc.stderr
    assert "forgot 3 item(s): episodes 12 -> 6, guidelines" in proc.stdout
    proc = cli(workdir, server, "memory", "show", "judge", "--json", lm=False)
    memory = json.loads(proc.stdout)
    kept = memory["dimensions"]["correctness"]["kept"]
    assert not any("banana" in g["text"] for g in kept)  # all its sources are forgotten
    assert memory["dimensions"]["correctness"]["episodes"] == 3


def test_cv_writes_a_report(workdir, server):
    proc = cli(workdir, server, "cv", "--rubric", "tiny.yaml", "--labels", "labels.jsonl",
               "--folds", "2", "--bootstrap", "200", "--variants", "baseline,memalign",
               "--out", "report")
    assert proc.returncode == 0, proc.stderr
    assert "memalign" in proc.stdout and "baseline" in proc.stdout
    for name in ("report.md", "results.json", "mae.png"):
        assert (workdir / "report" / name).is_file(), name


def test_demo_with_a_tiny_limit(workdir, server):
    proc = cli(workdir, server, "demo", "--limit", "8", "--folds", "2", "--bootstrap", "100",
               "--out", "demo")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((workdir / "demo" / "results.json").read_text())
    assert results["data"]["items"] == 8
    assert "model_training" in proc.stdout or "Model Training" in proc.stdout
