"""Local Interaction Basis (Bushnaq et al. 2024, "The Local Interaction Basis", arXiv 2405.10928).

A network is cut at node points l = 0..L; ``sections[l]`` maps the node-l activations f^l to f^{l+1}. Each
node layer gets a basis in which its activations are (a) decorrelated, (b) stripped of directions the rest of
the network does not read, and (c) scaled by how strongly they matter downstream. SCIENCE.md §4, in order:

1. Bias folding: f^l carries a constant coordinate, placed FIRST here: f = (1, a) ∈ R^{p+1}. Centring goes
   through it: Yᵀ f = (1, a - μ). The centred Gram G = E[Yᵀf fᵀY] = diag(1, Cov(a)) = U D Uᵀ (the constant
   direction first, then the covariance eigenvectors by decreasing eigenvalue); eigenvalues ≤ the threshold
   are dropped (first truncation).
2. R = Y U D^{-1/2} (whitened PCA); the PCA basis is Y U.
3. M' = E_x[Jᵀ J], J = ∂f̂^{l+1}/∂f^l the Jacobian of the next layer's (already scaled) LIB features.
4. M = R⁺ M' R⁺ᵀ, R⁺ = D^{1/2} Uᵀ Y^{-1} the left inverse of R that maps whitened coordinates back onto the
   data (R⁺R = I): the Jacobian with respect to the whitened features w = Rᵀf is J R⁺ᵀ. The constant direction
   (the first whitened coordinate, w_0 = c) stays its own LIB direction, as in the authors' reference code: only
   the block M[1:, 1:] is diagonalised, V = diag(1, V₁) with M[1:, 1:] = V₁ Λ₁ V₁ᵀ, and Λ₀ = M[0, 0].
   Diagonalising the whole of M would mix the bias into the data directions (features with a non-zero mean).
   Eigenvalues ≤ the threshold are dropped (second truncation; the constant direction when Λ₀ is).
5. C^l = R V Λ^{1/2}; LIB features f̂^l = C^lᵀ f = Λ^{1/2} Vᵀ D^{-1/2} Uᵀ Yᵀ f: the constant feature
   f̂_0 = Λ₀^{1/2} c first, then the data features (zero mean over the probe set) by decreasing Λ.
   Layers are processed from the output backwards. The output layer's basis (``final_basis``): ``"logits"``
   (the paper's configs: the raw logits, no rotation, no constant coordinate, no centring; the default),
   ``"pca"`` (the output's PCA basis, which centres the logits and carries the constant) or ``"identity"``
   (the raw outputs plus the constant coordinate).

Edges E^l_ij = E_x[(∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²] (gradient × activation), in the LIB and the PCA basis (the
output node has the ``final_basis`` in both graphs). Sparsity figures are meant to be counted over the data
directions (:func:`data_edges`); the edges to or from a constant direction are reported apart
(:func:`constant_edge_share`).

Gradients (``gradients``): ``"plain"`` takes J at the data point; ``"integrated"`` takes the path average
J̄(f) = ∫₀¹ J(αf) dα along the straight path α·f from 0 to f in the bias-folded coordinates (the constant
coordinate is scaled too, as the reference code scales its whole folded input), by Gauss–Legendre quadrature
with ``integration_points`` nodes, for M' and for the edges alike: M' = E[J̄ᵀJ̄], E_ij = E[(J̄ C_invᵀ)_ij² f̂_j²]
(the integral inside the square, as the reference's squared edges). Because the biases ride on the scaled
constant coordinate, a bias-folded ReLU (or linear) section is positively homogeneous along that path,
F(αf) = αF(f), so its Jacobian is constant on it and the two options agree to round-off; with the constant held
at 1 they would not. On smooth activations (GELU, tanh) they differ.

How the constant coordinate enters a section: the section is evaluated with every parameter whose name ends
in ``bias`` multiplied by the constant coordinate c, and c is passed through to the next layer — exactly the
network with its biases folded into the weights, as in the paper. A plain function (not an ``nn.Module``) has
no visible biases: its internal constants are held fixed (so it is not homogeneous along the path).

Jacobians use ``torch.func`` (vmap over samples of jacrev / jacfwd) or a closed form for dense sections, in
sample chunks of at most 2^20 entries (and ``max_jacobian_elements``) so memory does not grow with N; M' is
accumulated in float64 and every eigen-problem runs in float64.

Symbols: N samples; p_l the width of node layer l (flattened); k_l the number of directions kept.

One concept a module: :mod:`.jacobians` (bias folding, the sections' Jacobians and their checks), :mod:`.bases`
(whitened PCA, the output basis, the LIB backward pass) and :mod:`.graph` (edges, sparsity figures, node
ablation); :mod:`.sections` finds a model's sections.
Every name is re-exported here, so ``from lightning_probes.measures.interaction_basis import ...`` works as before.
"""

from lightning_probes.measures.interaction_basis.bases import (
    Basis,
    FinalBasis,
    InteractionBasis,
    WhitenedPCA,
    interaction_basis,
    pca_basis,
    whitened_pca,
)
from lightning_probes.measures.interaction_basis.bases import (
    _backward_pass as _backward_pass,  # private, imported by a test and a benchmark
)
from lightning_probes.measures.interaction_basis.graph import (
    InteractionGraph,
    ablation_curve,
    constant_edge_share,
    data_edges,
    edge_matrix,
    edges_for_mass,
    interaction_edges,
    interaction_graph,
)
from lightning_probes.measures.interaction_basis.jacobians import (
    Gradients,
    Section,
    augment,
    check_sections,
    lib_jacobians,
    path_quadrature,
)
from lightning_probes.measures.interaction_basis.sections import SUPPORTED, ModelSections, find_sections

__all__ = [
    "SUPPORTED",
    "Basis",
    "FinalBasis",
    "Gradients",
    "InteractionBasis",
    "InteractionGraph",
    "ModelSections",
    "Section",
    "WhitenedPCA",
    "ablation_curve",
    "augment",
    "check_sections",
    "constant_edge_share",
    "data_edges",
    "edge_matrix",
    "edges_for_mass",
    "find_sections",
    "interaction_basis",
    "interaction_edges",
    "interaction_graph",
    "lib_jacobians",
    "path_quadrature",
    "pca_basis",
    "whitened_pca",
]
