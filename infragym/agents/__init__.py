"""infragym.agents."""
