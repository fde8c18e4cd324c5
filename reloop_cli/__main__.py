"""Allow `python -m reloop_cli` (and `torchrun -m reloop_cli`)."""

from reloop_cli.cli import main

main()
