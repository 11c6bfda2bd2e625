"""Streaming accumulators (torchmetrics Metrics, sum-reduced across batches and DDP ranks) of the spectrum
monitor; the formulas they feed live in the other modules of this package, as torchmetrics keeps its functional
form apart.

Symbols: B samples in a batch, p features, C outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_probes.measures.spectrum.collapse import nearest_class_mean
from lightning_probes.measures.spectrum.decisions import truncated_decisions
from lightning_probes.measures.spectrum.moments import FeatureStatisticsValue

if TYPE_CHECKING:
    from lightning_probes.measures.spectrum.summary import SpectrumSummary

_F64 = torch.float64

Accumulator = Literal["float64", "kahan32"]
"""How :class:`MomentAccumulator` sums its float32 batch products: in float64, or Kahan-compensated float32."""


class FeatureStatistics(Metric):
    """Streaming sufficient statistics of features Φ and targets y (sum-reduced across batches and ranks).

    One float64 state holds them all: the moment matrix Σ_n z zᵀ of z = [Φ, y, 1] (size p + C + 1), so a batch
    costs a single matrix product. Its blocks are S = Σ Φ Φᵀ (p, p), B = Σ Φ yᵀ (p, C), Σ y yᵀ (C, C),
    s = Σ Φ (p,), Σ y (C,) and N; for one-hot classes Bᵀ holds the class sums Σ_{y=c} Φ (C, p) and the diagonal
    of Σ y yᵀ the class counts n_c. ``nonfinite`` counts samples whose features hold NaN/Inf; their values still
    enter the sums so every rank sees the same (poisoned) result. Memory O((p + C)²), independent of N.

    ``product`` chooses the precision of each batch's O(B (p + C)²) product zᵀz; the sums are float64 either way.
    ``"float64"`` is exact to float64 rounding. ``"float32"`` is for accelerators, which run float32 matrix products
    at 32–64× their float64 rate: it takes the product of d = z − c in float32, c the first batch's feature mean
    (rounded to float32; zero on the target and constant coordinates), and adds it back in float64 on every batch,
    Σ z zᵀ = Σ d dᵀ + (Σ d) cᵀ + c (Σ d)ᵀ + B c cᵀ, so the float32 rounding is relative to the spread of the
    features, not to their mean (a large common mean would otherwise come back amplified by m²/σ² in the centred
    covariance), and every rank's sums stay sums of the same quantity (DDP's reduction is unchanged). ``"auto"``
    (the default) is ``"float32"`` for features on an accelerator and ``"float64"`` on the CPU.

    Args:
        num_features: p, the feature dimension.
        num_outputs: C, the number of classes (integer targets) or regression outputs (float targets).
        classification: integer class targets (one-hot y, class statistics) or real-valued targets.
        product: ``"auto"``, ``"float64"`` or ``"float32"``: the precision of each batch's product (see above).

    Raises:
        ValueError: ``num_features`` or ``num_outputs`` below 1, or an unknown ``product``.

    Example:
        >>> stats = FeatureStatistics(num_features=3, num_outputs=2)
        >>> stats.update(torch.eye(3)[:2], torch.tensor([0, 1]))
        >>> out = stats.compute()
        >>> int(out.n), out.gram.shape, out.class_counts.tolist()
        (2, torch.Size([3, 3]), [1.0, 1.0])
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None
    # the states registered by add_state (declared so the type checker sees Tensors, not Module.__getattr__'s union)
    moments: Tensor
    nonfinite: Tensor

    def __init__(self, num_features: int, num_outputs: int, classification: bool = True,
                 product: Literal["auto", "float64", "float32"] = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_features < 1 or num_outputs < 1:
            raise ValueError(f"num_features and num_outputs must be positive, got {num_features}, {num_outputs}.")
        if product not in ("auto", "float64", "float32"):
            raise ValueError(f"product must be 'auto', 'float64' or 'float32', got {product!r}.")
        self.num_features = num_features
        self.num_outputs = num_outputs
        self.classification = classification
        self.product = product
        self._centre: Tensor | None = None  # (p + C + 1,) float64 shift c of the float32 product, set by a batch
        size = num_features + num_outputs + 1
        self.add_state("moments", torch.zeros(size, size, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("nonfinite", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        # the rank tolerance depends on the precision the features were computed in (see `diagonalise`):
        # the coarsest floating dtype seen wins; integer features are exact and use float32's default
        self.feature_eps = 0.0

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch: features (B, p); targets (B,) class indices, or (B, C) / (B,) real values.

        Raises:
            ValueError: features are not (B, p); the number of targets is not B; class targets are not 1-D
                integers in [0, C); regression targets do not hold C values per sample, or hold NaN/Inf.
        """
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"features must have shape (B, {self.num_features}), got {tuple(features.shape)}.")
        batch = len(features)
        if features.is_floating_point():
            self.feature_eps = max(self.feature_eps, torch.finfo(features.dtype).eps)
        p, c = self.num_features, self.num_outputs
        z = features.new_empty((batch, p + c + 1), dtype=_F64)  # z = [Φ, y, 1]
        z[:, :p] = features.detach()
        self._write_targets(z[:, p : p + c], targets, batch)
        z[:, -1] = 1.0
        # a sample's features are non-finite iff their sum is: one (B,) reduction instead of a (B, p) mask. (Finite
        # values whose sum overflows float64 would also have overflowing squares, so the moments are lost either way.)
        self.nonfinite.add_((~torch.isfinite(z[:, :p].sum(dim=1))).sum())
        if self.product == "float32" or (self.product == "auto" and z.device.type != "cpu"):
            self._add_float32_product(z)
        else:
            self.moments.addmm_(z.T, z)

    def _add_float32_product(self, z: Tensor) -> None:
        """Add zᵀz to the moments: the (B, q)ᵀ(B, q) product in float32 around the shift c, undone in float64."""
        if self._centre is None:
            centre = torch.zeros(z.shape[1], dtype=_F64, device=z.device)
            centre[: self.num_features] = z[:, : self.num_features].mean(0).float().double()
            self._centre = torch.nan_to_num(centre, nan=0.0, posinf=0.0, neginf=0.0)  # a poisoned batch: no shift
        c = self._centre
        d = (z - c).float()  # (B, q): rounding relative to |z − c|
        self.feature_eps = max(self.feature_eps, torch.finfo(torch.float32).eps)
        s = d.double().sum(0)  # (q,) the same float32 values, summed in float64
        self.moments.add_((d.T @ d).double())
        self.moments.addr_(s, c).addr_(c, s).addr_(c, c, alpha=float(len(z)))

    def reset(self) -> None:
        """Clear the sums (torchmetrics) and the float32 product's shift: the next probe centres on its own mean."""
        super().reset()
        self._centre = None

    def _write_targets(self, out: Tensor, targets: Tensor, batch: int) -> None:
        if len(targets) != batch:
            raise ValueError(f"got {batch} feature rows but {len(targets)} targets.")
        if self.classification:
            if targets.is_floating_point() or targets.ndim != 1:
                raise ValueError("classification targets must be a 1-D tensor of class indices.")
            low, high = torch.aminmax(targets) if len(targets) else (0, 0)
            if low < 0 or high >= self.num_outputs:
                raise ValueError(f"class indices must lie in [0, {self.num_outputs}); got {int(low)}..{int(high)}.")
            out.zero_().scatter_(1, targets.long().view(-1, 1), 1.0)  # one-hot
            return
        y = targets.detach().reshape(batch, -1)
        if y.shape[1] != self.num_outputs:
            raise ValueError(f"regression targets must have {self.num_outputs} values per sample, got {y.shape[1]}.")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y).all(dim=1)).sum())
            raise ValueError(f"regression targets hold NaN or Inf in {bad} of {batch} samples; fix the probe targets.")
        out.copy_(y)

    def compute(self) -> FeatureStatisticsValue:
        """The summed statistics (synchronised across ranks by torchmetrics), as views of the moment blocks."""
        p, c, m = self.num_features, self.num_outputs, self.moments
        yy = m[p : p + c, p : p + c]  # (C, C) Σ y yᵀ
        cross = m[:p, p : p + c]  # (p, C)
        return FeatureStatisticsValue(
            n=m[-1, -1], nonfinite=self.nonfinite, feature_sum=m[:p, -1], gram=m[:p, :p], cross=cross,
            target_sum=m[p : p + c, -1], target_sq=torch.trace(yy),
            class_counts=torch.diagonal(yy) if self.classification else None,
            class_sums=cross.T if self.classification else None,
            feature_eps=self.feature_eps or torch.finfo(torch.float32).eps,
        )



class NearestMeanAgreement(Metric):
    """NC4 counts: how often the network's argmax equals the nearest-class-mean classifier (sum-reduced).

    Example:
        >>> agree = NearestMeanAgreement()
        >>> means = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> agree.update(torch.tensor([[0.1, 0.0], [0.9, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), means)
        >>> float(agree.compute())
        0.5
    """

    full_state_update = False
    agree: Tensor  # states registered by add_state
    total: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("agree", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, features: Tensor, logits: Tensor, class_means: Tensor) -> None:
        """Add a batch: features (B, p), logits (B, C), class_means (C, p) (rows of absent classes are NaN)."""
        nearest = nearest_class_mean(features, class_means)  # (B,)
        self.agree.add_((nearest == logits.argmax(-1)).sum())  # in place: no Module.__setattr__ per batch
        self.total.add_(len(features))

    def compute(self) -> Tensor:
        return self.agree / self.total.clamp_min(1)



class DecisionAgreement(Metric):
    """Counts of kept argmax decisions per truncation level k (sum-reduced across batches and ranks).

    Args:
        max_k: the largest number of eigenfunctions (p + 1 covers every operator).
    """

    full_state_update = False
    kept: Tensor  # states registered by add_state
    total: Tensor

    def __init__(self, max_k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_k = max_k
        self.add_state("kept", torch.zeros(max_k, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, features: Tensor, weight: Tensor, bias: Tensor | None, summary: SpectrumSummary) -> None:
        kept = truncated_decisions(features, weight, bias, summary)
        self.kept[: len(kept)].add_(kept)
        self.total.add_(len(features))

    def compute(self) -> Tensor:
        """(max_k,) the share of kept decisions for k = 1, 2, ...; entries past the rank are meaningless."""
        return self.kept / self.total.clamp_min(1)


class MomentAccumulator:
    """Σ x xᵀ, Σ x and N over batches, with each batch's product in float32 and the sums kept in float64.

    A GPU runs float32 matmuls at 32–64× its float64 rate; the O(B d²) per-batch product is done in float32 and
    only the O(d²) reduction is float64 (``accumulator="float64"``), or a float32 Kahan-compensated sum where float64
    is missing altogether (``"kahan32"``, e.g. Apple MPS). The float32 product's error is relative to the size of
    its entries, so with a large common mean m the moments keep ~eps32 · m² of error, which the centred covariance
    S/N − μμᵀ (entries ~σ²) would inherit amplified by m²/σ². ``shift=True`` therefore accumulates the moments of
    x − c, c the first batch's mean rounded to float32, and undoes the shift exactly in float64 at ``compute``
    (with d = x − c: Σ x xᵀ = Σ d dᵀ + (Σ d) cᵀ + c (Σ d)ᵀ + N c cᵀ); :meth:`covariance` needs no undoing at all.

    Args:
        dim: d, the feature dimension.
        shift: subtract the first batch's mean before the float32 product (recommended; exact to undo).
        accumulator: ``"float64"`` or ``"kahan32"``.
        device: where the accumulators live.

    Raises:
        ValueError: ``dim`` is not positive, or ``accumulator`` is not one of the two names.

    Example:
        >>> acc = MomentAccumulator(2)
        >>> acc.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> acc.compute()[0].tolist(), acc.compute()[1].tolist(), acc.count
        ([[10.0, 14.0], [14.0, 20.0]], [4.0, 6.0], 2)
    """

    def __init__(self, dim: int, shift: bool = True, accumulator: Accumulator = "float64",
                 device: torch.device | str | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}.")
        if accumulator not in ("float64", "kahan32"):
            raise ValueError(f"accumulator must be 'float64' or 'kahan32', got {accumulator!r}.")
        self.dim, self.shift, self.accumulator = dim, shift, accumulator
        dtype = _F64 if accumulator == "float64" else torch.float32
        self._sq = torch.zeros(dim, dim, dtype=dtype, device=device)  # Σ (x−c)(x−c)ᵀ
        self._sum = torch.zeros(dim, dtype=dtype, device=device)  # Σ (x−c)
        self._sq_c = torch.zeros_like(self._sq) if accumulator == "kahan32" else None  # Kahan compensations
        self._sum_c = torch.zeros_like(self._sum) if accumulator == "kahan32" else None
        self._centre: Tensor | None = None  # (d,) float32 c
        self.count = 0

    def update(self, x: Tensor) -> None:
        """Add a batch x (B, d) (any floating dtype; the product is taken in float32).

        Raises:
            ValueError: x is not (B, d).
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}.")
        if not len(x):
            return
        x32 = x.detach().to(device=self._sq.device, dtype=torch.float32)
        if self._centre is None:
            self._centre = x32.mean(0) if self.shift else x32.new_zeros(self.dim)
        d = x32 - self._centre  # (B, d) float32: rounding relative to |x − c|, not to |x|
        prod, s = d.T @ d, d.sum(0)  # float32 (d, d), (d,)
        if self._sq_c is not None and self._sum_c is not None:  # "kahan32": the compensations exist
            _kahan_add(self._sq, self._sq_c, prod)
            _kahan_add(self._sum, self._sum_c, s)
        else:  # "float64"
            self._sq += prod.to(_F64)
            self._sum += s.to(_F64)
        self.count += len(x)

    def compute(self) -> tuple[Tensor, Tensor]:
        """(Σ x xᵀ (d, d), Σ x (d,)) in float64, the shift undone exactly."""
        sq = self._sq.to(_F64) - (self._sq_c.to(_F64) if self._sq_c is not None else 0.0)
        s = self._sum.to(_F64) - (self._sum_c.to(_F64) if self._sum_c is not None else 0.0)
        if self._centre is None:
            return sq, s
        c = self._centre.to(_F64)
        # x = d + c: Σ x xᵀ = Σ d dᵀ + (Σ d) cᵀ + c (Σ d)ᵀ + N c cᵀ, all in float64
        sc = torch.outer(s, c)
        return sq + sc + sc.T + self.count * torch.outer(c, c), s + self.count * c

    def covariance(self) -> Tensor:
        """S/N − μμᵀ (d, d), from the shifted sums directly (no cancellation: Σ d dᵀ/N − μ_d μ_dᵀ).

        Raises:
            ValueError: no samples were added.
        """
        if not self.count:
            raise ValueError("no samples were added.")
        sq = self._sq.to(_F64) - (self._sq_c.to(_F64) if self._sq_c is not None else 0.0)
        s = self._sum.to(_F64) - (self._sum_c.to(_F64) if self._sum_c is not None else 0.0)
        mu_d = s / self.count
        return sq / self.count - torch.outer(mu_d, mu_d)


def _kahan_add(total: Tensor, comp: Tensor, value: Tensor) -> None:
    """Add value to total with Kahan compensation (in place): comp keeps the low-order part lost by each addition."""
    y = value - comp
    t = total + y
    comp.copy_((t - total) - y)
    total.copy_(t)
