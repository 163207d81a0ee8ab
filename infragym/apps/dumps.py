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

_DUMPS: dict[int, tuple[Schedule, str | None, bytes | None]] = {}
"""Memo of :func:`schedule_json` and :func:`schedule_dump`, by the schedule's identity
(the schedule is kept with its dumps, so that its id stays its own)."""

_DUMPS_SIZE = 1024
"""Schedules the memo keeps before it starts over."""


def _dumps_of(schedule: Schedule) -> tuple[Schedule, str | None, bytes | None]:
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
    """``schedule.model_dump(mode="json")`` as a fresh dict, dumped once per schedule object.

    Every call returns new containers (callers may change what they get): the dump is
    kept marshalled, and unmarshalling a trace's dump is a few times cheaper than dumping
    it again, with the same content to the bit (JSON-mode dumps hold only dicts, lists,
    strings, numbers, booleans and ``None``, all of which marshal exactly).
    """
    entry = _dumps_of(schedule)
    if entry[2] is None:
        entry = _DUMPS[id(schedule)] = (
            schedule,
            entry[1],
            marshal.dumps(schedule.model_dump(mode="json")),
        )
    return marshal.loads(entry[2])  # type: ignore[arg-type]
