"""Shared helpers of the benchmark scripts: the machine they ran on, and BENCHMARKS.md.

Each script renders one markdown section and calls :func:`write_section`, which replaces only
the text between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->`` in ``BENCHMARKS.md`` at the
repository root (creating the file, or appending the section, when missing). Writes take an
exclusive lock and replace the file atomically, so two scripts finishing together cannot lose
each other's sections.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\n"
          "Each section below is written by a script in `benchmarks/` (the section says which "
          "command produced it, on which machine, and when). Re-running a script replaces only "
          "its own section.\n")
DEFAULT_PACKAGES = ("dspy", "mlflow", "chromadb", "litellm", "llama_cpp_python", "numpy",
                    "scikit-learn")


def nproc() -> int:
    """CPUs usable by this process (what ``nproc`` prints)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ram_gib() -> float | None:
    """Total RAM from ``/proc/meminfo`` in GiB (``None`` where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed distribution versions (``"not installed"`` when missing)."""
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """What a benchmark figure depends on besides the code: CPUs, RAM, date, versions."""
    ram = ram_gib()
    return {
        "nproc": nproc(),
        "ram": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "cpu": cpu_model(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_revision(),
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": versions(packages),
    }


def machine_markdown(info: dict[str, Any] | None = None, *, lm: str | None = None) -> str:
    """The machine block every section ends with (a two-column table)."""
    info = info or machine_info()
    rows = [("machine", f"{info['nproc']} CPUs (`nproc`), {info['ram']} RAM (/proc/meminfo), "
                        f"{info['cpu']}"),
            ("os / python", f"{info['os']} / Python {info['python']}"),
            ("date", info["date"]),
            ("judgealign revision", info["git"])]
    if info.get("load"):
        rows.append(("load average when written (1 / 5 / 15 min)",
                     " / ".join(f"{x:.1f}" for x in info["load"])
                     + f" on {info['nproc']} CPUs (other processes share the machine)"))
    if lm:
        rows.append(("LM", lm))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in info["versions"].items())))
    return table(["", ""], rows)


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, e.g. ``python -m benchmarks.retrieval --quick``."""
    return " ".join(["python", "-m", module, *map(shlex.quote, argv)])


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Lock the directory itself: no lock file is left next to BENCHMARKS.md.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_section(name: str, markdown: str, path: Path | str | None = None) -> Path:
    """Put ``markdown`` between this section's markers in BENCHMARKS.md; returns the path.

    Only the text between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->`` changes; a file or
    section that does not exist yet is created (new sections go at the end).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name must be [A-Za-z0-9_.-]+, got {name!r}")
    path = Path(path) if path is not None else BENCHMARKS_MD
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with _locked(path):
        text = path.read_text(encoding="utf-8") if path.exists() else HEADER
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".BENCHMARKS.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def emit(name: str, markdown: str, *, write: bool = True) -> None:
    """Print a section and (unless ``write`` is False) store it in BENCHMARKS.md."""
    print(markdown)
    if write:
        where = write_section(name, markdown)
        print(f"\n[section {name!r} written to {where}]", file=sys.stderr)


__all__ = ["BENCHMARKS_MD", "command_line", "emit", "machine_info", "machine_markdown",
           "table", "write_section"]
