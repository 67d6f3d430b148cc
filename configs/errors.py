"""``ConfigError``: a configuration that cannot work, raised before any work starts, naming the field.

It lives in ``configs``, the leaf every package may import, because every layer raises it:
the schema's own field checks (``configs.run_schema``), the controller's checks that need a
sim or Ray, and the modules that find a run's starting weights and world models. Owned by
any one of them, the others would have to import it back against the dependency direction.
"""


class ConfigError(ValueError):
    """A run configuration that cannot work; raised before Ray starts, naming the field."""
