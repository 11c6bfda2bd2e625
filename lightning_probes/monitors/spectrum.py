"""FeatureSpectrumMonitor: the eigenfunctions of the forward feature map during training (Nam et al. 2024)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_probes.measures.spectrum import (
    REGIME_NAMES,
    DecisionAgreement,
    Eigensolver,
    FeatureStatistics,
    NearestMeanAgreement,
    Operator,
    SpectrumSummary,
    check_eigensolver,
    check_operator,
    decision_features,
    neural_collapse,
    summarise,
    truncated_decisions,
)
from lightning_probes.monitors._checks import check_class_labels, check_regression_targets
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.probe_set import ProbeSet, capture, module_names, resolve_module
from lightning_probes.tensorboard import drawing, line_image, markdown_table
from lightning_probes.validation import check_bool, check_choice, check_int, check_name, check_real

__all__ = ["FeatureSpectrumMonitor"]

REGIMES = REGIME_NAMES  # 1: "MF", 0: "EF", -1: "below"; a probe without a "regime" scalar is undefined
POOLS = (None, "mean", "first", "last")


class FeatureSpectrumMonitor(Monitor):
    """Diagonalise the feature map Φ (the input of the final linear layer) against the gradient-descent operator.

    The operator (``operator``, SCIENCE.md §1 correction of turn 2) is by default the centred one — Σ = S/N - μμᵀ
    with the centred function f - E f and centred targets — read against T = C - 1 for classes (centred class means
    span C - 1 dimensions; T = C for regression and for the ``"augmented"`` [Φ, 1] and ``"uncentred"`` options).
    Logs under ``probes/spectrum/``: ``n_features`` (eigenfunctions carrying ``power_threshold`` of the learned
    function), ``n_features_99``, ``n_features_decisions`` (the fewest eigenfunctions whose truncated f keeps
    ``decision_threshold`` of the head's argmax decisions), ``function_rank`` (output directions along which f
    varies), ``participation_ratio``, ``gap_at_C`` (λ_T / λ_{T+1}), ``regime`` (1 = Minimal Feature: n_features ≤ T
    and f varies along at least C - 1 directions; 0 = Extended Feature: n_features > T; -1 = "below": n_features ≤ T
    but f uses fewer than C - 1 output directions, an under-using function that is not MF), ``regime_stable_since``
    (the step the current regime began at), ``target_power_at_C``, ``learned_power_at_C`` (Π at k = T),
    ``top_eigenvalue``, ``rank`` and, for classification, ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``,
    ``nc2_angle_deviation``, ``nc3``, ``nc4``. When the regime is undefined (constant features — a dead network —
    or a learned function that is zero on the probe set) the monitor warns and logs neither ``regime`` nor the
    figures that would be NaN, and no trigger fires on it. Pictures: the relative spectrum λ_i/λ_1 and the
    cumulative target / learned-function power; a histogram of log10 λ; text: the history of regime changes
    (written when it changes).

    Statistics are streamed (memory O(p² + pC) whatever the probe size) and, under DDP, each rank probes its share
    of the probe set and the sums are reduced — the same figures as one process.

    Args:
        head: module name of the final ``nn.Linear``; Φ is its input.
        num_classes: C for classification (defaults to the head's ``out_features``; must match it).
        operator: ``"centred"`` (default), ``"augmented"`` (features [Φ, 1] with the head [W, b]) or
            ``"uncentred"`` (the first definition, Σ = S/N; reads MF at initialisation, an artefact).
        center: the first API, kept: ``True`` = ``operator="centred"``, ``False`` = ``operator="uncentred"``.
        power_threshold: ρ in n_features = min{k : Π̂(k) ≥ ρ}.
        gap: if set, MF also requires λ_T / λ_{T+1} ≥ gap.
        decisions: compute ``n_features_decisions`` (keeps the probe's features of this rank for one more pass over
            them after the diagonalisation; no extra forward pass).
        decision_threshold: the share of argmax decisions the truncated function must keep.
        neural_collapse: compute NC1–NC4 (classification only).
        nc4_means: which class means NC4's nearest-class-mean classifier uses (SCIENCE.md allows both):
            ``"previous"`` — the previous probe's, so NC4 comes from the same single pass (the first probe, having no
            previous means, takes a second pass); ``"current"`` — this probe's, which always costs a second pass.
        pool: for a head that takes per-token features (B, T, p) (a token classifier, or a sequence head fed all
            positions): pool them over the token axis (dim 1) before the statistics — ``"mean"`` (all positions),
            ``"first"`` (position 0, a [CLS] token), ``"last"``. None (default): such a head is refused at fit start
            with this advice. Targets stay one per sample.
        eigensolver: ``"auto"`` (default: the top-k block Krylov route from p = 1024 features, the full float64
            ``eigh`` below), ``"full"`` or ``"topk"``. The top-k route's n_features, n_features_99, powers at C, gap
            and regime equal the full solve's (tested to 1e-9); where it cannot make sure of that it falls back to
            the full solve and says so once (a warning). ``rank`` is logged only when the whole spectrum is known.
        **kwargs: the :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, probe_data, triggers, ...).

    Example:
        >>> from lightning_probes.triggers import StopOnRegime
        >>> FeatureSpectrumMonitor(head="classifier", schedule=10, triggers=[StopOnRegime("MF", patience=2)])
        FeatureSpectrumMonitor(head='classifier', schedule=every(10, start=0))
    """

    name = "spectrum"
    title = "Feature-map spectrum (Nam et al. 2024)"
    probe_set: ProbeSet  # needs_probe_data is True: the base always builds one (it is None only for those without)

    def __init__(
        self,
        head: str = "classifier",
        num_classes: int | None = None,
        operator: Operator = "centred",
        center: bool | None = None,
        power_threshold: float = 0.95,
        gap: float | None = None,
        decisions: bool = True,
        decision_threshold: float = 0.99,
        neural_collapse: bool = True,
        nc4_means: Literal["previous", "current"] = "previous",
        pool: Literal["mean", "first", "last"] | None = None,
        eigensolver: Eigensolver = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool = pool
        self.head = head
        self.num_classes = num_classes
        self.operator = operator
        self.center = center  # validated, then derived from the operator
        self.decisions = bool(decisions)
        self.decision_threshold = decision_threshold
        self.power_threshold = power_threshold
        self.gap = gap
        self.neural_collapse = neural_collapse
        self.nc4_means = nc4_means
        self.eigensolver = eigensolver
        self._validate()
        if center is not None:
            self.operator = "centred" if center else "uncentred"
        self.center = self.operator == "centred"
        self.decision_threshold = float(decision_threshold)
        self._head_name = ""  # the Linear actually probed (inside a wrapping head), set at setup
        self.class_means: torch.Tensor | None = None  # (C, p) of the last probe, for NC4 with "previous"
        self.classification: bool | None = None
        self._stats: FeatureStatistics | None = None
        self._agreement: NearestMeanAgreement | None = None
        self._decisions: DecisionAgreement | None = None
        # the regime table, built one probe at a time: (step, regime, n_features, gap) at every change
        self.regime_rows: list[tuple[int, str, int | None, float]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head={self.head!r}, schedule={self.schedule!r})"

    def _validate(self) -> None:
        check_choice("pool", self.pool, POOLS)
        check_name("head", self.head, what="the name of the final nn.Linear module, e.g. head='classifier'")
        check_int("num_classes", self.num_classes, low=2, optional=True)
        check_real("power_threshold", self.power_threshold, "(0, 1]")
        check_choice("nc4_means", self.nc4_means, ("previous", "current"))
        check_real("gap", self.gap, "[1, inf]", what="a ratio λ_C/λ_(C+1) >= 1", optional=True)
        check_operator(self.operator)
        if self.center is not None:
            check_bool("center", self.center, what="True or False (or left out for operator=...)")
            legacy = "centred" if self.center else "uncentred"
            if self.operator not in ("centred", legacy):
                raise ValueError(f"center={self.center} means operator={legacy!r}, but operator={self.operator!r} "
                                 "was given.")
        check_real("decision_threshold", self.decision_threshold, "(0, 1]", what="a share in (0, 1]")
        check_eigensolver(self.eigensolver)

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"head": self.head, "operator": self.operator}

    progress_bar_scalars = ("regime", "n_features")  # shown on the progress bar after each probe

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/spectrum": {
                # one scale a chart: a regime code beside feature counts, or a rank of hundreds beside ratios near
                # 1, is a flat line at the bottom
                "regime (1 = MF, 0 = EF, -1 = below)": ["Multiline", [f"{p}regime$"]],
                "regime stable since": ["Multiline", [f"{p}regime_stable_since$"]],
                "features used": ["Multiline", [f"{p}n_features$", f"{p}n_features_99$", f"{p}n_features_decisions$",
                                                f"{p}function_rank$"]],
                "power carried by the first C eigenfunctions": [
                    "Multiline", [f"{p}target_power_at_C$", f"{p}learned_power_at_C$"]
                ],
                "spectrum shape: participation ratio and gap at C": [
                    "Multiline", [f"{p}participation_ratio$", f"{p}gap_at_C$"]
                ],
                "rank of the feature map": ["Multiline", [f"{p}rank$"]],
                "top eigenvalue": ["Multiline", [f"{p}top_eigenvalue$"]],
                "neural collapse NC1-NC3": ["Multiline", [f"{p}nc[1-3].*"]],
                "NC4: agreement with the nearest class mean": ["Multiline", [f"{p}nc4.*"]],
            }
        }

    def _head(self, pl_module: nn.Module) -> nn.Linear:
        return resolve_module(pl_module, self._head_name or self.head, nn.Linear)  # type: ignore[return-value]

    def _resolve_head(self, pl_module: nn.Module) -> str:
        """The head's module name: ``head`` itself when it is a Linear; for an ``nn.Sequential`` whose output is a
        Linear's output (an HF-style ``classifier = Sequential(Dropout, Linear)``: only Dropout / Identity may follow
        the Linear), that Linear, with a note; anything else gets the error listing the model's Linear modules
        (a container whose forward cannot be read off its structure names its last Linear as a suggestion)."""
        module = dict(pl_module.named_modules()).get(self.head) if self.head else None
        if module is not None and not isinstance(module, nn.Linear):
            inner = _output_linear(module)
            if inner is not None:
                resolved = f"{self.head}.{inner}"
                rank_zero_info(f"[lightning-probes/{self.name}] head {self.head!r} is a {type(module).__name__}, not "
                               f"a Linear; using the Linear that makes its output, {resolved!r} (Φ is its input).")
                return resolved
            linears = module_names(module, nn.Linear)
            if linears and not isinstance(module, nn.Sequential):
                raise TypeError(
                    f"head {self.head!r} is a {type(module).__name__}, not a Linear, and its output cannot be read off "
                    f"its structure; name the Linear whose input is Φ, e.g. head={self.head + '.' + linears[-1]!r}."
                )
        resolve_module(pl_module, self.head, nn.Linear)  # raises, listing the Linear modules
        return self.head

    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._head_name = self._resolve_head(pl_module)
        head = self._head(pl_module)
        if self.num_classes is not None and self.num_classes != head.out_features:
            raise ValueError(
                f"num_classes={self.num_classes} but head {self._head_name!r} has {head.out_features} outputs; "
                f"the head's rows are the classes (Linear modules: {', '.join(module_names(pl_module, nn.Linear))})."
            )

    @override
    def min_probe_samples(self, pl_module: pl.LightningModule) -> int:
        return self._head(pl_module).out_features if self._is_classification() else 1

    def _is_classification(self) -> bool:
        if self.classification is None:
            targets = self.probe_set.targets if self.probe_set is not None else None
            if targets is None:
                raise ValueError(
                    "FeatureSpectrumMonitor needs targets: probe_data must yield (x, y) samples or be an (x, y) pair."
                )
            self.classification = not targets.is_floating_point()
        return self.classification

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        head = self._head(pl_module)
        classification = self._is_classification()
        check = check_class_labels if classification else check_regression_targets  # once, not at every probe
        check(type(self).__name__, self.probe_set.targets, head.out_features, self.head)
        self._stats = FeatureStatistics(head.in_features, head.out_features, classification).to(pl_module.device)
        self._agreement = NearestMeanAgreement().to(pl_module.device) if classification else None
        self._decisions = DecisionAgreement(head.in_features + 1).to(pl_module.device) \
            if classification and self.decisions else None

    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        assert self._stats is not None and self.probe_set is not None
        head = self._head(pl_module)
        weight, bias = head.weight.detach(), _bias(head)
        rank, world = self.rank_share(trainer)
        stats, agreement = self._stats, self._agreement
        stats.reset()
        collapse = bool(self.classification and self.neural_collapse)
        previous = self.class_means.to(pl_module.device) if self.nc4_means == "previous" and collapse \
            and self.class_means is not None else None
        if agreement is not None:
            agreement.reset()
        kept: list[torch.Tensor] = []  # this rank's features, for the decision count after the diagonalisation

        def accumulate() -> None:
            with capture(pl_module, {self._head_name: "input"}) as seen:
                for x, y in self.probe_set.batches(pl_module.device, rank, world):
                    self.probe_set.forward(pl_module, x)
                    phi = _widened(self._features(seen[self._head_name]))
                    stats.update(phi, y)
                    if self._decisions is not None:
                        kept.append(phi.detach())
                    if previous is not None and agreement is not None:  # NC4 against the last probe's means, same pass
                        agreement.update(phi, nn.functional.linear(phi, weight, bias), previous)

        self.rank_local(trainer, accumulate)
        value = stats.compute()  # summed over ranks
        summary = self._summarise(value, weight, bias, self.eigensolver)
        if self._decisions is not None and summary.defined:
            counted = self._decision_count(trainer, summary, kept, weight, bias)
            if counted.n_features_decisions is None:  # beyond the leading pairs found: the full solve knows it
                self.warn_once("eigensolver-decisions", "the decisions need more eigenfunctions than the top-k "
                               f"eigensolver found at step {self.step}; this probe used the full eigh.")
                counted = self._decision_count(trainer, self._summarise(value, weight, bias, "full"), kept, weight,
                                               bias)
            summary = counted
        kept.clear()
        scalars = summary.scalars()
        if not summary.defined:
            self.warn_once("undefined-regime", f"the regime is undefined at step {self.step}: "
                           f"{summary.undefined_reason}; 'regime' and the figures that would be NaN are not logged, "
                           "and no trigger fires on this probe.")
        if collapse:
            nc = neural_collapse(value, weight)
            means = nc.pop("class_means")
            assert isinstance(means, torch.Tensor) and agreement is not None  # (C, p); collapse implies the metric
            if previous is None:
                self._nearest_mean_pass(trainer, pl_module, weight, bias, means, rank, world)
            nc["nc4"] = float(agreement.compute())
            # figures that are undefined (NaN: e.g. equal class means of a dead network) are left out, not logged
            scalars.update({k: float(v) for k, v in nc.items() if not math.isnan(float(v))})
            self.class_means = means.cpu()
        changed = self._note_regime(self.step, summary)
        since = self._stable_since()
        if since is not None:
            scalars["regime_stable_since"] = float(since)
        # the table goes out only when a row was added: rewriting it on every probe grows the event file without bound
        report = ProbeResult(scalars=scalars, texts={"regime_history": self._regime_table()} if changed else {})
        if self.render_images:
            self._pictures(report, summary)
        return report

    def _summarise(self, value: Any, weight: torch.Tensor, bias: torch.Tensor | None, eigensolver: Eigensolver
                   ) -> SpectrumSummary:
        summary = summarise(value, weight, bias, power_threshold=self.power_threshold, gap=self.gap,
                            operator=self.operator, eigensolver=eigensolver)
        if summary.fallback_reason:
            self.warn_once("eigensolver-fallback", f"the top-k eigensolver fell back to the full eigh at step "
                           f"{self.step}: {summary.fallback_reason}.")
        return summary

    def _decision_count(
        self, trainer: pl.Trainer, summary: SpectrumSummary, kept: list[torch.Tensor], weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> SpectrumSummary:
        """n_features_decisions from this rank's stored features and the spectrum (summed over ranks)."""
        if trainer.world_size == 1:  # one process: stop at the first block of eigenfunctions that reaches the share
            phi = torch.cat(kept) if len(kept) > 1 else kept[0]
            counts = truncated_decisions(phi, weight, bias, summary, stop_at=self.decision_threshold)
            count = decision_features(counts / len(phi), len(counts), self.decision_threshold,
                                      summary.spectrum.complete)
            return dataclasses.replace(summary, n_features_decisions=count)
        metric = self._decisions
        assert metric is not None  # set at fit start whenever decisions are counted
        metric.reset()

        def count_kept() -> None:
            for phi in kept:
                metric.update(phi, weight, bias, summary)

        self.rank_local(trainer, count_kept)
        share = metric.compute()  # (p + 1,) synchronised
        count = decision_features(share, summary.spectrum.rank, self.decision_threshold, summary.spectrum.complete)
        return dataclasses.replace(summary, n_features_decisions=count)

    def _nearest_mean_pass(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, weight: torch.Tensor, bias: torch.Tensor | None,
        means: torch.Tensor, rank: int, world: int,
    ) -> None:
        """NC4 with this probe's class means, which are only known after the first pass: a second pass."""
        agreement = self._agreement
        assert agreement is not None  # set at fit start for classification, the only case with neural collapse
        agreement.reset()

        def second_pass() -> None:
            with capture(pl_module, {self._head_name: "input"}) as seen:
                for x, _ in self.probe_set.batches(pl_module.device, rank, world):
                    self.probe_set.forward(pl_module, x)
                    phi = _widened(self._features(seen[self._head_name]))
                    agreement.update(phi, nn.functional.linear(phi, weight, bias), means)

        self.rank_local(trainer, second_pass)

    def _features(self, phi: torch.Tensor) -> torch.Tensor:
        """Φ (B, p) from the head's captured input: per-token inputs (B, T, p) pooled as ``pool`` says."""
        if phi.ndim == 2:
            return phi
        if phi.ndim == 3 and self.pool is not None:
            return {"mean": lambda: phi.mean(1), "first": lambda: phi[:, 0], "last": lambda: phi[:, -1]}[self.pool]()
        raise ValueError(
            f"head {self.head!r} takes features of shape {tuple(phi.shape)}, not (B, p)"
            + (": per-token features (B, T, p). Pass pool='first' (a [CLS] token), 'mean' or 'last' to pool them "
               "over the token axis, or name a head that takes one feature vector per sample."
               if phi.ndim == 3 else "; the feature map must be one vector per sample.")
        )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_means": self.class_means, "regime_rows": list(self.regime_rows)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.class_means = state_dict.get("class_means")
        rows = state_dict.get("regime_rows")
        self.regime_rows = [tuple(r) for r in rows] if rows is not None else self._rows_from_history()

    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: ProbeResult, summary: SpectrumSummary) -> None:
        spec = summary.spectrum
        lam = spec.nonzero.cpu()
        k = torch.arange(1, len(lam) + 1)
        c = summary.num_outputs
        report.images["eigenvalues"] = line_image(
            {"λ_i / λ_1": (k, lam / lam[0])}, f"feature spectrum, step {self.step}", "eigenfunction i",
            "relative eigenvalue", logy=True, logx=True, vlines={f"C = {c}": c},
        )
        report.images["cumulative_power"] = line_image(
            {"target Π*(k)": (k, summary.target_power.cpu()), "learned Π̂(k)": (k, summary.learned_power.cpu())},
            f"cumulative power, step {self.step} ({summary.regime_name}, n_f = {summary.n_features}, "
            f"{summary.operator})",
            "eigenfunctions k", "share of E‖·‖²", logx=True,
            hlines={f"ρ = {self.power_threshold}": self.power_threshold},
            vlines={f"T = {summary.regime_threshold}": summary.regime_threshold},
        )
        report.histograms["log10_eigenvalues"] = torch.log10(lam)

    def _note_regime(self, step: int, summary: SpectrumSummary) -> bool:
        """Add a row to the regime table when the regime changed; True when it did (O(1) per probe)."""
        regime = summary.regime_name
        if self.regime_rows and self.regime_rows[-1][1] == regime:
            return False
        self.regime_rows.append((step, regime, summary.n_features, summary.gap_at_C))
        return True

    def _stable_since(self) -> int | None:
        """The step the current regime began at (None while it is undefined)."""
        if not self.regime_rows or self.regime_rows[-1][1] == "undefined":
            return None
        return int(self.regime_rows[-1][0])

    def _rows_from_history(self) -> list[tuple[int, str, int | None, float]]:
        """The regime table rebuilt from the history (a checkpoint written before the table was kept)."""
        rows: list[tuple[int, str, int | None, float]] = []
        for step, scalars in self.history:
            regime = _regime_name(scalars)
            if not rows or rows[-1][1] != regime:
                n_f = scalars.get("n_features")
                rows.append((step, regime, None if n_f is None else int(n_f), scalars.get("gap_at_C", float("nan"))))
        return rows

    def _regime_table(self) -> str:
        rows = [[step, regime, "-" if n_f is None else n_f, gap] for step, regime, n_f, gap in self.regime_rows]
        return markdown_table(["step", "regime", "n_features", "gap_at_C"], rows)

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        changes = ", ".join(f"{regime} from step {step}" for step, regime in self.regime_changes())
        step, last = self.history[-1]
        lines = [f"[spectrum] regime: {changes}",
                 f"[spectrum] at step {step}: " + (
                     f"n_features={int(last['n_features'])} (99%: {int(last['n_features_99'])}"
                     + (f", decisions: {int(last['n_features_decisions'])}" if "n_features_decisions" in last else "")
                     + f"), gap_at_C={last.get('gap_at_C', float('nan')):.3g}"
                     if "n_features" in last else "regime undefined")
                 + (f", NC1={last['nc1']:.4g}, NC4={last['nc4']:.3f}" if "nc1" in last else "")]
        if self.stop_reason:
            lines.append(f"[spectrum] stopped: {self.stop_reason}")
        return "\n".join(lines)

    def regime_changes(self) -> list[tuple[int, str]]:
        """(step, regime) at the first probe and at every change of regime so far ("undefined" included)."""
        return [(step, regime) for step, regime, _, _ in self.regime_rows]


def _regime_name(scalars: dict[str, float]) -> str:
    value = scalars.get("regime")
    return "undefined" if value is None or value != value else REGIMES.get(int(value), "?")


def _output_linear(module: nn.Module) -> str | None:
    """The (relative) name of the Linear whose output is ``module``'s output, for a Sequential chain ending in a
    Linear, possibly followed by Dropout / Identity (no-ops in a probe's eval mode) and possibly nested; else None.

    Example:
        >>> _output_linear(nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 2))), _output_linear(nn.Sequential(
        ...     nn.Linear(4, 4), nn.ReLU()))
        ('1', None)
    """
    if isinstance(module, nn.Linear):
        return ""
    if not isinstance(module, nn.Sequential):
        return None
    for name, child in reversed(list(module.named_children())):
        if isinstance(child, (nn.Dropout, nn.Identity)):
            continue
        inner = _output_linear(child)
        return None if inner is None else (f"{name}.{inner}" if inner else name)
    return None


def _widened(phi: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 features (a probe under ``precision="bf16-mixed"``) as float32. The moments are float64 either
    way; this keeps the rank tolerance meaningful: matrix_rank's max(N, p)·eps·σ_1 with bf16's eps (7.8e-3) exceeds
    σ_1 for N ≥ 128, which would declare every feature map identically zero."""
    return phi.float() if phi.is_floating_point() and torch.finfo(phi.dtype).bits < 32 else phi


def _bias(head: nn.Linear) -> torch.Tensor | None:
    return None if head.bias is None else head.bias.detach()
