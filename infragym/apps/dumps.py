"""Dumps of load schedules, computed once per schedule object.

The env's resets hand the same (immutable) :class:`~infragym.apps.workload.Schedule`
object to every episode of a scenario variant, and a trace's dump runs to tens of kB
(about 2,100 points), so the resets ask for each dump once per variant, not per reset:
the sim backend writes the JSON into the resource graph, and the env's reset info holds
the JSON-mode dict.

Gym-side only: not one of the modules the k8s layers ship to the apps' pods
(``components.k8s._common.SHARED_APP_MODULES``), so the apps' code, and with it the
resource graph, stays as it is.
"""

from __future__ import annotations

import marshal
from typing import Any

from infragym.apps.workload import Schedule

_DUMPS: dict[int, tuple[Schedule, str | None, Any]] = {}
"""Memo of :func:`schedule_json` and :func:`schedule_dump`, by the schedule's identity:
(the schedule, kept so that its id stays its own; its JSON; its JSON-mode dump, or the
dump marshalled)."""

_DUMPS_SIZE = 1024
"""Schedules the memo keeps before it starts over."""


def _dumps_of(schedule: Schedule) -> tuple[Schedule, str | None, Any]:
    entry = _DUMPS.get(id(schedule))
    if entry is None or entry[0] is not schedule:
        if len(_DUMPS) >= _DUMPS_SIZE:
            _DUMPS.clear()
        entry = _DUMPS[id(schedule)] = (schedule, None, None)
    return entry


def schedule_json(schedule: Schedule) -> str:
    """``schedule.model_dump_json()``, computed once per schedule object.

    What the siege-engine layer puts in
    :data:`~infragym.apps.workload.SIEGE_SCHEDULE_ENV`. Scenarios hand out
    the same (immutable) schedule object for each of their variants, and a trace's JSON
    runs to tens of kB, so the env's resets ask for it once per variant, not per reset.
    The string is immutable, so the same one is returned each time.
    """
    entry = _dumps_of(schedule)
    if entry[1] is None:
        entry = _DUMPS[id(schedule)] = (schedule, schedule.model_dump_json(), entry[2])
    return entry[1]  # type: ignore[return-value]


def schedule_dump(schedule: Schedule) -> dict[str, Any]:
    """``schedule.model_dump(mode="json")``, dumped once per schedule object.

    Every call returns new dicts and lists (callers may change what they get), with the
    same content to the bit, except for a trace's points: the list is new, but the
    ``[t, rate]`` pairs in it are shared by every dump of the schedule (treat them as
    read-only). A trace has about 2,100 of them: making them anew at every reset costs
    more than the rest of a reset, mostly in the garbage collections that thousands of
    new containers set off.

    A dump is a dict holding the shape's dict, whose only lists are a trace's points or
    a step shape's rates; a dump of any other form is kept marshalled and unmarshalled
    whole (JSON-mode dumps hold only dicts, lists, strings, numbers, booleans and
    ``None``, all of which marshal exactly).
    """
    entry = _dumps_of(schedule)
    if entry[2] is None:
        dump = schedule.model_dump(mode="json")
        kept = marshal.dumps(dump) if not _copies_fast(dump) else b""
        entry = _DUMPS[id(schedule)] = (schedule, entry[1], kept or dump)
    kept = entry[2]
    if type(kept) is bytes:
        return marshal.loads(kept)
    out = dict(kept)
    out["shape"] = shape = dict(kept["shape"])
    if "points" in shape:
        shape["points"] = list(shape["points"])
    if "rates" in shape:
        shape["rates"] = list(shape["rates"])
    return out


_SCALARS = (str, int, float, bool, type(None))


def _copies_fast(dump: dict[str, Any]) -> bool:
    """Whether :func:`schedule_dump` copies ``dump`` as it says: its containers are the
    dump itself, the dict ``shape``, and in it at most ``points`` (a list of the pairs
    every dump shares) and ``rates`` (a list of scalars)."""
    shape = dump.get("shape")
    if type(shape) is not dict or any(
        type(v) not in _SCALARS for k, v in dump.items() if k != "shape"
    ):
        return False
    for key, value in shape.items():
        if key == "points" and type(value) is list:
            continue  # a new list of the pairs every dump shares
        if key == "rates" and type(value) is list:
            if not all(type(x) in _SCALARS for x in value):
                return False
        elif type(value) not in _SCALARS:
            return False
    return True
