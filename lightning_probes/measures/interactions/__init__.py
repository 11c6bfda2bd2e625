"""AND-OR interactions (transitional: the split into one module per concept follows)."""

from lightning_probes.measures.interactions.solvers import *  # noqa: F401,F403
from lightning_probes.measures.interactions.solvers import __all__, _GraphProjector, masked_rows  # noqa: F401
