"""Per-layer reconciliation; moved to :mod:`infragym.updates` (re-exported here).

The twin models when a layer's update completes and must not import a backend
(DESIGN.md, decision 11), so the bookkeeping both share lives below both.
"""

from infragym.updates import LayerQueue, Update

__all__ = ["LayerQueue", "Update"]
