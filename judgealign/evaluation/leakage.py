"""The leakage guard: a judge (or reference predictor) fitted for a fold must not know any
item of that fold's held-out set. Checked after every alignment; a hit stops the run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from judgealign.errors import JudgeAlignError


class LeakageError(JudgeAlignError):
    """A judge aligned for a fold knows an item of that fold's held-out set."""


def check_no_leakage(judge: object, held_out: Iterable[str], *, where: str = "") -> None:
    """Raise :class:`LeakageError` if the aligned ``judge`` knows any held-out item.

    Looked at: the item ids of the judge's (and each dimension's) memory, every guideline's
    ``sources`` (kept and rejected), the keys of ``judge.seen`` (``item_id::dimension``), the
    ``item_id`` of any demo stored on a predictor, and -- for a reference predictor -- the
    ``trained_on`` ids it was fitted on.
    """
    found: dict[str, set[str]] = {}
    held = set(held_out)

    def note(kind: str, ids: Iterable[object]) -> None:
        bad = held & {str(i) for i in ids}
        if bad:
            found.setdefault(kind, set()).update(bad)

    memories = [getattr(judge, "memory", None)]
    for djudge in getattr(judge, "judges", {}).values():
        memories.append(getattr(djudge, "memory", None))
        for g in [*getattr(djudge, "guidelines", []), *getattr(djudge, "rejected", [])]:
            note("guideline sources", g.sources)
        predict = getattr(djudge, "predict", None)
        note("predictor demos", [d.get("item_id") for d in getattr(predict, "demos", [])
                                 if d.get("item_id") is not None])
    for memory in {id(m): m for m in memories if m is not None}.values():
        note("episodic memory", memory.item_ids())
    note("seen episodes", [key.split("::", 1)[0] for key in getattr(judge, "seen", {})])
    note("training items", getattr(judge, "trained_on", ()))
    raise_if_found(found, where)


def raise_if_found(found: Mapping[str, set[str]], where: str = "") -> None:
    """Raise :class:`LeakageError` listing ``kind -> held-out ids`` (no-op when empty)."""
    if found:
        detail = "; ".join(f"{kind}: {', '.join(sorted(ids)[:10])}"
                           for kind, ids in sorted(found.items()) if ids)
        if detail:
            raise LeakageError(f"held-out items reached the aligned judge{where} -- {detail}")


__all__ = ["LeakageError", "check_no_leakage", "raise_if_found"]
