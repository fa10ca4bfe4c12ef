"""One module per verb; each registers its command(s) on the Typer app in `register(app)`."""
