"""The Pulumi CLI entry point: ``pulumi up -s <deployment>.<layer>`` runs that one layer.

``Pulumi.yaml`` at the repository root points ``main`` here. All logic is in
:mod:`stacks.cli_program` so that it can be tested under Pulumi's mocks.
"""

from stacks.cli_program import main

main()
