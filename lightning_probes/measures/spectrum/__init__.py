"""Diagonalising the forward feature map (Nam, Mingard, Lee, Hayou, Louis 2024, arXiv 2410.04264).

The network is split into a feature map Φ: X → R^p (the input of the final linear layer) and the head
f(x) = W Φ(x) + b. Gradient descent on the head acts through the kernel K(x, x') = Φ(x)·Φ(x'); its
eigenfunctions on the probe distribution are the "features" the network uses, and λ_i is the speed at which
the error along e_i decays. Everything here is computed from fixed-size sufficient statistics (SCIENCE.md §1),
so memory is O(p² + pC) whatever the number of probe samples, and a DDP reduction is a plain sum.

One concept a module, the streaming accumulators apart from the formulas (as torchmetrics keeps its Metric classes
apart from its functional form):

- :mod:`.metrics`: the torchmetrics Metrics (:class:`FeatureStatistics`, :class:`NearestMeanAgreement`,
  :class:`DecisionAgreement`) and the float32 :class:`MomentAccumulator`;
- :mod:`.moments`: the summed statistics (:class:`FeatureStatisticsValue`) and each operator's moments;
- :mod:`.eigen`: the float64 eigendecomposition split at the numerical rank, participation ratio, gaps;
- :mod:`.power`: cumulative target / learned power, n_features, the learned function's rank;
- :mod:`.summary`: one probe's :class:`SpectrumSummary` and the regime;
- :mod:`.decisions`: truncated argmax decisions (n_features_decisions);
- :mod:`.collapse`: neural collapse NC1–NC4;
- :mod:`.topk`: the leading eigenpairs by block Krylov, for large p.

Every name is re-exported here, so ``from lightning_probes.measures.spectrum import ...`` works as before.

Symbols: N samples, p features, C outputs (classes, or regression outputs), r the numerical rank.
"""

from lightning_probes.measures.spectrum.collapse import nearest_class_mean, neural_collapse
from lightning_probes.measures.spectrum.decisions import decision_features, truncated_decisions
from lightning_probes.measures.spectrum.eigen import (
    Spectrum,
    diagonalise,
    kernel_diagonalise,
    participation_ratio,
    spectral_gap,
)
from lightning_probes.measures.spectrum.metrics import (
    Accumulator,
    DecisionAgreement,
    FeatureStatistics,
    MomentAccumulator,
    NearestMeanAgreement,
)
from lightning_probes.measures.spectrum.moments import (
    OPERATORS,
    REGIME_BELOW,
    REGIME_EF,
    REGIME_MF,
    REGIME_NAMES,
    FeatureStatisticsValue,
    Operator,
    OperatorMoments,
    check_operator,
    operator_moments,
)
from lightning_probes.measures.spectrum.power import (
    cumulative_learned_power,
    cumulative_target_power,
    features_needed,
    function_covariance,
    function_rank,
    learned_function_alignment,
)
from lightning_probes.measures.spectrum.summary import (
    EIGENSOLVERS,
    TOPK_FROM,
    Eigensolver,
    SpectrumSummary,
    check_eigensolver,
    summarise,
)
from lightning_probes.measures.spectrum.topk import (
    DIRECT_BELOW,
    LeadingSpectrum,
    leading_eigenpairs,
    leading_spectrum,
)

__all__ = [
    "DIRECT_BELOW",
    "EIGENSOLVERS",
    "OPERATORS",
    "REGIME_BELOW",
    "REGIME_EF",
    "REGIME_MF",
    "REGIME_NAMES",
    "Accumulator",
    "DecisionAgreement",
    "Eigensolver",
    "FeatureStatistics",
    "FeatureStatisticsValue",
    "LeadingSpectrum",
    "MomentAccumulator",
    "NearestMeanAgreement",
    "Operator",
    "OperatorMoments",
    "Spectrum",
    "SpectrumSummary",
    "TOPK_FROM",
    "check_eigensolver",
    "check_operator",
    "cumulative_learned_power",
    "cumulative_target_power",
    "decision_features",
    "diagonalise",
    "features_needed",
    "function_rank",
    "function_covariance",
    "kernel_diagonalise",
    "leading_eigenpairs",
    "leading_spectrum",
    "learned_function_alignment",
    "nearest_class_mean",
    "operator_moments",
    "neural_collapse",
    "participation_ratio",
    "spectral_gap",
    "summarise",
    "truncated_decisions",
]
