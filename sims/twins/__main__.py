"""``python -m sims.twins``: print how far each twin pair drifts apart, and engine speeds."""

import sims  # noqa: F401  (sets up rendering before MuJoCo loads)
from sims.twins.drift import main

raise SystemExit(main())
