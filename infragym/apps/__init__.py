"""infragym.apps."""
