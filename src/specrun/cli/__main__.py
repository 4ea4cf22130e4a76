"""``python -m specrun.cli``: how torchrun relaunches specrun on every rank."""

from specrun.cli.main import main

main(prog_name="specrun")
