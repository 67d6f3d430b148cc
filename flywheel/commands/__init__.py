"""One module per CLI command group; ``flywheel.cli`` dispatches to them (they never import it:
Hydra runs through ``flywheel.hydra``)."""
