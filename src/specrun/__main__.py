"""``python -m specrun``: the same command line as the ``specrun`` script."""

from specrun.cli.main import main

main(prog_name="specrun")
