"""Former home of the compiled twin; :class:`infragym.twin.twin.Twin` is it now.

The twin's step loop lives in one place, the compiled core, and :class:`~infragym.twin.twin.Twin`
is its Python API: the Python twin it used to be checked against was retired. These
names stay for code written against the two-twin API.
"""

from __future__ import annotations

from infragym.twin.twin import (
    ENGINES,
    METRIC_NAMES,
    ReferenceNeeded,
    Twin,
    advance_all,
    core_module,
    make_twin,
)

FastTwin = Twin
"""The compiled twin, the only one (an alias of :class:`~infragym.twin.twin.Twin`)."""

__all__ = [
    "ENGINES",
    "METRIC_NAMES",
    "FastTwin",
    "ReferenceNeeded",
    "Twin",
    "advance_all",
    "core_module",
    "make_twin",
]
