"""Reading the text files a user hands to judgealign, with errors that name the file.

Every user file (labels, rubrics, config, items to judge) enters through :func:`read_text`:
the path is checked first (a NUL byte, a name longer than the file system allows, text that
cannot be a file name), then the bytes are read and decoded as UTF-8. A UTF-8 byte-order mark
is accepted and dropped (editors on Windows write one); any other encoding is refused with the
first bad byte and its line, because guessing an encoding silently changes the text a judge
sees. Each failure is the caller's :class:`~judgealign.errors.JudgeAlignError` subclass.

This module imports nothing heavy: the CLI's ``--help`` path may import it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
from pathlib import Path

from judgealign.errors import JudgeAlignError

# Limits of Linux and macOS file systems: bytes per file or folder name, bytes per path.
NAME_MAX = 255
PATH_MAX = 4096
# Errors json.loads raises on text it cannot turn into a value: JSONDecodeError (a ValueError),
# ValueError for an integer literal over Python's 4,300-digit limit, RecursionError when the
# nesting is deeper than the interpreter's stack.
JSON_ERRORS = (ValueError, RecursionError)


def shown(path: str | os.PathLike[str], width: int = 160) -> str:
    """A path for a message: whole when short, else its head and tail around an ellipsis."""
    text = os.fspath(path)
    if len(text) <= width:
        return text
    return f"{text[: width // 2]}…{text[-(width // 2):]} ({len(text)} characters)"


def checked_path(path: str | os.PathLike[str], *, error: type[JudgeAlignError],
                 what: str = "file") -> Path:
    """``path`` as a :class:`Path`, or ``error`` when no file system could hold it.

    Refused: an empty path, a NUL byte, characters the file system encoding cannot write
    (lone surrogates), a name longer than ``NAME_MAX`` bytes or a path longer than
    ``PATH_MAX`` bytes. Existence is not checked here.
    """
    try:
        text = os.fspath(path)
    except TypeError:
        raise error(f"{what}: expected a path, got {type(path).__name__}") from None
    if not isinstance(text, str):  # bytes paths: judgealign's messages and ids are text
        raise error(f"{what}: expected a text path, got {text!r}")
    if not text:
        raise error(f"{what}: the path is empty")
    if "\x00" in text:
        raise error(f"{what} path {shown(repr(text))} contains a NUL byte")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise error(f"{what} path {shown(repr(text))} has characters no file name can "
                    "hold") from None
    longest = max((len(os.fsencode(part)) for part in Path(text).parts), default=0)
    if longest > NAME_MAX or len(encoded) > PATH_MAX:
        raise error(f"{what} path is too long (names may have at most {NAME_MAX} bytes, paths "
                    f"{PATH_MAX}): {shown(text)}")
    return Path(text)


def read_text(path: str | os.PathLike[str], *, error: type[JudgeAlignError],
              what: str = "file") -> str:
    """The UTF-8 text of a regular file; a leading byte-order mark is dropped.

    Parameters
    ----------
    path
        The file; checked by :func:`checked_path` first.
    error
        The :class:`JudgeAlignError` subclass raised for every failure.
    what
        How messages call the file: ``"{what} not found: {path}"``.
    """
    p = checked_path(path, error=error, what=what)
    try:
        info = p.stat()
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what} {shown(p)} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            # FIFOs and devices block or never end (/dev/zero): not something to judge.
            raise error(f"{what} {shown(p)} is not a regular file")
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found: {shown(p)}") from None
    except PermissionError:
        raise error(f"cannot read {what} {shown(p)}: permission denied") from None
    except OSError as exc:
        raise error(f"cannot read {what} {shown(p)}: {exc.strerror or exc}") from None
    return decode_utf8(data, error=error, source=shown(p))


def decode_utf8(data: bytes, *, error: type[JudgeAlignError], source: str) -> str:
    """``data`` decoded as UTF-8 without its byte-order mark; ``error`` names the first bad byte
    and its line (counted from 1)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02X} on line {line}); "
                    "save the file as UTF-8") from None


def describe_json_error(exc: BaseException) -> str:
    """What went wrong in ``json.loads``, for a message (see :data:`JSON_ERRORS`)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (model files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
