"""``python -m trainlab`` runs the command-line interface."""

from trainlab.cli import main

main()
