"""`python -m flowmetal_cli` is `flowmetal`."""

from flowmetal_cli.main import app

app()
