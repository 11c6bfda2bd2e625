"""FeatureSpectrumMonitor: the eigenfunctions of the forward feature map during training (Nam et al. 2024)."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from typing_extensions import override

from lightning_probes.measures.spectrum import (
    FeatureStatistics,
    NearestMeanAgreement,
    SpectrumSummary,
    neural_collapse,
    summarise,
)
from lightning_probes.monitors._checks import check_class_labels, check_regression_targets
from lightning_probes.monitors.base import Monitor, Report
from lightning_probes.probe_set import capture, module_names, resolve_module
from lightning_probes.tensorboard import drawing, line_image, markdown_table

__all__ = ["FeatureSpectrumMonitor"]

REGIMES = {1: "MF", 0: "EF"}


class FeatureSpectrumMonitor(Monitor):
    """Diagonalise the feature map Φ (the input of the final linear layer) against the gradient-descent operator.

    Logs under ``probes/spectrum/``: ``n_features`` (eigenfunctions carrying ``power_threshold`` of the learned
    function), ``n_features_99``, ``participation_ratio``, ``gap_at_C`` (λ_C / λ_{C+1}), ``regime`` (1 = Minimal
    Feature: n_features ≤ C; 0 = Extended Feature), ``target_power_at_C``, ``learned_power_at_C``,
    ``top_eigenvalue``, ``rank`` and, for classification, ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``,
    ``nc2_angle_deviation``, ``nc3``, ``nc4``. Pictures: the relative spectrum λ_i/λ_1 and the cumulative target /
    learned-function power; a histogram of log10 λ; text: the history of regime changes.

    Statistics are streamed (memory O(p² + pC) whatever the probe size) and, under DDP, each rank probes its share
    of the probe set and the sums are reduced — the same figures as one process.

    Args:
        head: module name of the final ``nn.Linear``; Φ is its input.
        num_classes: C for classification (defaults to the head's ``out_features``; must match it).
        center: diagonalise the covariance S/N - μμᵀ instead of the uncentred S/N.
        power_threshold: ρ in n_features = min{k : Π̂(k) ≥ ρ}.
        gap: if set, MF also requires λ_C / λ_{C+1} ≥ gap.
        neural_collapse: compute NC1–NC4 (classification only).
        nc4_means: which class means NC4's nearest-class-mean classifier uses (SCIENCE.md allows both):
            ``"previous"`` — the previous probe's, so NC4 comes from the same single pass (the first probe, having no
            previous means, takes a second pass); ``"current"`` — this probe's, which always costs a second pass.
        **kwargs: the :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, probe_data, triggers, ...).

    Example:
        >>> from lightning_probes.triggers import StopOnRegime
        >>> FeatureSpectrumMonitor(head="classifier", schedule=10, triggers=[StopOnRegime("MF", patience=2)])
        FeatureSpectrumMonitor(head='classifier', schedule=every(10, start=0))
    """

    name = "spectrum"

    def __init__(
        self,
        head: str = "classifier",
        num_classes: int | None = None,
        center: bool = False,
        power_threshold: float = 0.95,
        gap: float | None = None,
        neural_collapse: bool = True,
        nc4_means: Literal["previous", "current"] = "previous",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(head, str) or not head:
            raise ValueError("head must name the final nn.Linear module, e.g. head='classifier'.")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
        if isinstance(power_threshold, bool) or not isinstance(power_threshold, (int, float)) \
                or not 0 < power_threshold <= 1:
            raise ValueError(f"power_threshold must be a number in (0, 1], got {power_threshold!r}.")
        if nc4_means not in ("previous", "current"):
            raise ValueError(f"nc4_means must be 'previous' or 'current', got {nc4_means!r}.")
        if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float)) or not gap >= 1):
            raise ValueError(f"gap is a ratio λ_C/λ_(C+1) >= 1, got {gap!r}.")  # `not >=`: NaN is refused too
        self.head = head
        self.num_classes = num_classes
        self.center = center
        self.power_threshold = power_threshold
        self.gap = gap
        self.neural_collapse = neural_collapse
        self.nc4_means = nc4_means
        self.class_means: torch.Tensor | None = None  # (C, p) of the last probe, for NC4 with "previous"
        self.classification: bool | None = None
        self._stats: FeatureStatistics | None = None
        self._agreement: NearestMeanAgreement | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head={self.head!r}, schedule={self.schedule!r})"

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"head": self.head, "center": self.center}

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/spectrum": {
                "regime and features used": ["Multiline", [f"{p}regime$", f"{p}n_features$", f"{p}n_features_99$"]],
                "power carried by the first C eigenfunctions": [
                    "Multiline", [f"{p}target_power_at_C$", f"{p}learned_power_at_C$"]
                ],
                "spectrum shape": ["Multiline", [f"{p}participation_ratio$", f"{p}gap_at_C$", f"{p}rank$"]],
                "top eigenvalue": ["Multiline", [f"{p}top_eigenvalue$"]],
                "neural collapse": ["Multiline", [f"{p}nc[0-9].*"]],
            }
        }

    def _head(self, pl_module: nn.Module) -> nn.Linear:
        return resolve_module(pl_module, self.head, nn.Linear)  # type: ignore[return-value]

    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        head = self._head(pl_module)
        if self.num_classes is not None and self.num_classes != head.out_features:
            raise ValueError(
                f"num_classes={self.num_classes} but head {self.head!r} has {head.out_features} outputs; "
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

    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Report:
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

        def accumulate() -> None:
            with capture(pl_module, {self.head: "input"}) as seen:
                for x, y in self.probe_set.batches(pl_module.device, rank, world):
                    pl_module(x)
                    phi = seen[self.head]
                    stats.update(phi, y)
                    if previous is not None:  # NC4 against the previous probe's means, in the same pass
                        agreement.update(phi, nn.functional.linear(phi, weight, bias), previous)

        self.rank_local(trainer, accumulate)
        value = stats.compute()  # summed over ranks
        summary = summarise(value, weight, bias, self.center, self.power_threshold, self.gap)
        scalars = summary.scalars()
        if collapse:
            nc = neural_collapse(value, weight)
            means = nc.pop("class_means")
            if previous is None:
                self._nearest_mean_pass(trainer, pl_module, weight, bias, means, rank, world)
            nc["nc4"] = float(agreement.compute())
            scalars.update({k: float(v) for k, v in nc.items()})
            self.class_means = means.cpu()
        report = Report(scalars=scalars, texts={"regime_history": self._regime_table(summary)})
        if self.render_images:
            self._pictures(report, summary)
        return report

    def _nearest_mean_pass(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, weight: torch.Tensor, bias: torch.Tensor | None,
        means: torch.Tensor, rank: int, world: int,
    ) -> None:
        """NC4 with this probe's class means, which are only known after the first pass: a second pass."""
        agreement = self._agreement
        agreement.reset()

        def second_pass() -> None:
            with capture(pl_module, {self.head: "input"}) as seen:
                for x, _ in self.probe_set.batches(pl_module.device, rank, world):
                    pl_module(x)
                    phi = seen[self.head]
                    agreement.update(phi, nn.functional.linear(phi, weight, bias), means)

        self.rank_local(trainer, second_pass)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_means": self.class_means}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.class_means = state_dict.get("class_means")

    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: Report, summary: SpectrumSummary) -> None:
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
            f"cumulative power, step {self.step} ({REGIMES[summary.regime]}, n_f = {summary.n_features})",
            "eigenfunctions k", "share of E‖·‖²", logx=True,
            hlines={f"ρ = {self.power_threshold}": self.power_threshold}, vlines={f"C = {c}": c},
        )
        report.histograms["log10_eigenvalues"] = torch.log10(lam)

    def _regime_table(self, summary: SpectrumSummary) -> str:
        rows, last = [], None
        for step, scalars in [*self.history, (self.step, summary.scalars())]:
            regime = REGIMES.get(int(scalars.get("regime", -1)), "?")
            if regime != last:
                rows.append([step, regime, int(scalars["n_features"]), scalars["gap_at_C"]])
                last = regime
        return markdown_table(["step", "regime", "n_features", "gap_at_C"], rows)

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        changes = ", ".join(f"{regime} from step {step}" for step, regime in self.regime_changes())
        step, last = self.history[-1]
        lines = [f"[spectrum] regime: {changes}",
                 f"[spectrum] at step {step}: n_features={int(last['n_features'])} "
                 f"(99%: {int(last['n_features_99'])}), gap_at_C={last['gap_at_C']:.3g}"
                 + (f", NC1={last['nc1']:.4g}, NC4={last['nc4']:.3f}" if "nc1" in last else "")]
        if self.stop_reason:
            lines.append(f"[spectrum] stopped: {self.stop_reason}")
        return "\n".join(lines)

    def regime_changes(self) -> list[tuple[int, str]]:
        """(step, regime) at the first probe and at every change of regime so far."""
        out, last = [], None
        for step, scalars in self.history:
            regime = REGIMES.get(int(scalars["regime"]), "?")
            if regime != last:
                out.append((step, regime))
                last = regime
        return out


def _bias(head: nn.Linear) -> torch.Tensor | None:
    return None if head.bias is None else head.bias.detach()
