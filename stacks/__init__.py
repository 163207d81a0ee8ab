"""Per-layer stack programs: the layer registry, settings models and the CLI entry point.

``stacks.registry`` holds the contract; ``stacks.layers`` registers every layer.
"""
