"""AND-OR (Harsanyi) interactions of a network's output and of its layers (SCIENCE.md §3).

Cheng et al., ICML 2024 (arXiv 2409.08712), building on Ren et al. / Li & Zhang (AND-OR interactions with
learned γ and bounded noise δ). A user-given partition of the input into n "players" defines a game: x_T keeps
the players in T and sets the others to a baseline b; v(x_T) is the log-odds of the true class. Its AND and OR
interactions are Möbius transforms on the lattice of subsets, computed here with the butterfly (fast zeta /
Möbius) transform in O(n·2^n) — never with a 2^n×2^n matrix.

One concept per module, all re-exported here (``lightning_probes.measures.interactions.ImagePatches`` and the
other paths configs name keep working):

- :mod:`.transforms`: the subset lattice, zeta / Möbius transforms on Kronecker blocks, dense references;
- :mod:`.and_or`: AND and OR interactions for given γ and δ, universal matching;
- :mod:`.solvers`: the sparse decomposition (Douglas-Rachford, the exact LP, the reference SGD recipe);
- :mod:`.players`: partitions of an input into players;
- :mod:`.games`: masked outputs and the log-odds game v;
- :mod:`.change`: salient sets, their comparison across layers and probes (emergence, forgetting);
- :mod:`.summary`: the figures one probe reports, from the salient sets of the output and the layers;
- :mod:`lightning_probes.measures.linear_probes`: the layer probes behind v^(l) (re-exported here).
"""

from lightning_probes.measures.interactions.and_or import and_or_interactions, reconstruct
from lightning_probes.measures.interactions.change import (
    InteractionChange,
    count_by_order,
    interaction_change,
    merge_first_order,
    salient_iou,
    salient_mask,
    strongest_interactions,
)
from lightning_probes.measures.interactions.games import LogOdds, log_odds, masked_outputs
from lightning_probes.measures.interactions.games import masked_rows as masked_rows  # public, not in __all__
from lightning_probes.measures.interactions.players import (
    FeatureGroups,
    ImagePatches,
    Players,
    RestMode,
    TokenPositions,
)
from lightning_probes.measures.interactions.solvers import AndOrDecomposition, SolverMethod, sparse_and_or
from lightning_probes.measures.interactions.solvers import _GraphProjector as _GraphProjector  # used by the tests
from lightning_probes.measures.interactions.summary import (
    InteractionSummary,
    LayerAgreement,
    SalientInteractions,
    SolverCertificate,
    Turnover,
    interaction_summary,
    salient_interactions,
    solver_certificate,
)
from lightning_probes.measures.interactions.transforms import MAX_PLAYERS_HARD as MAX_PLAYERS_HARD
from lightning_probes.measures.interactions.transforms import (
    dense_mobius_matrix,
    dense_or_matrix,
    dense_zeta_matrix,
    mobius_transform,
    subset_masks,
    subset_orders,
    superset_zeta_transform,
    zeta_transform,
)
from lightning_probes.measures.linear_probes import LinearProbe, fit_linear_probe

__all__ = [
    "AndOrDecomposition",
    "FeatureGroups",
    "ImagePatches",
    "InteractionChange",
    "InteractionSummary",
    "LayerAgreement",
    "LinearProbe",
    "LogOdds",
    "Players",
    "RestMode",
    "SalientInteractions",
    "SolverCertificate",
    "SolverMethod",
    "TokenPositions",
    "Turnover",
    "and_or_interactions",
    "count_by_order",
    "dense_mobius_matrix",
    "dense_or_matrix",
    "dense_zeta_matrix",
    "fit_linear_probe",
    "interaction_change",
    "interaction_summary",
    "log_odds",
    "masked_outputs",
    "merge_first_order",
    "mobius_transform",
    "reconstruct",
    "salient_iou",
    "salient_interactions",
    "salient_mask",
    "solver_certificate",
    "sparse_and_or",
    "strongest_interactions",
    "subset_masks",
    "subset_orders",
    "superset_zeta_transform",
    "zeta_transform",
]
