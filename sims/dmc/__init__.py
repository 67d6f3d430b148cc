"""dm-control suite tasks, and a generic adapter for any ``dmc/<domain>-<task>``."""
