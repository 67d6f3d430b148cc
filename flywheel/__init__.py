"""The flywheel service and the ``flywheel`` command."""
