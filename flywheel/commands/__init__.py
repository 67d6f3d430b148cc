"""One module per CLI command group; ``flywheel.cli`` dispatches to them."""
