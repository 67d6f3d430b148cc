"""Reference learners the flywheel is compared against (benchmark-only: never imported at runtime)."""
