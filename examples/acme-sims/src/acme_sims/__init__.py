"""Example simulators plugged into the flywheel through the ``flywheel.sims`` entry point."""
