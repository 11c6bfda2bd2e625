"""Clustered Compositional Explanations: the old import path of :mod:`lightning_probes.measures.concepts`.

Every name this module had is re-exported from the package, which keeps one concept per module.
"""

from lightning_probes.measures.concepts import *  # noqa: F403
from lightning_probes.measures.concepts import NETDISSECT_QUANTILE as NETDISSECT_QUANTILE
from lightning_probes.measures.concepts import __all__ as __all__
