"""Pulumi ComponentResources, one module per layer (no config reads, no exports)."""
