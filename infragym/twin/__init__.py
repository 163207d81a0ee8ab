"""infragym.twin."""
