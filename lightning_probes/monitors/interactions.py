"""InteractionMonitor: AND-OR interactions of the output and of each layer, and how they change over training.

Cheng et al., ICML 2024 (arXiv 2409.08712); every formula lives in :mod:`lightning_probes.measures.interactions`
(the figures of one probe in :mod:`~lightning_probes.measures.interactions.summary`). This file runs the model
on the 2^n masked versions of a few probe samples, fits the layer probes, and publishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_probes.batches import get_path, index, set_path
from lightning_probes.measures.interactions import (
    AndOrDecomposition,
    Players,
    SalientInteractions,
    count_by_order,
    interaction_summary,
    log_odds,
    masked_rows,
    salient_interactions,
    solver_certificate,
    sparse_and_or,
    strongest_interactions,
)
from lightning_probes.measures.linear_probes import LinearProbe, fit_linear_probe
from lightning_probes.monitors._checks import check_class_labels
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.monitors.trial import explained
from lightning_probes.probe_set import ProbeSet, Where, capture, probing, resolve_module
from lightning_probes.tensorboard import bar_image, drawing, line_image, markdown_table
from lightning_probes.validation import check_int, check_name, check_names, check_real

__all__ = ["InteractionMonitor"]

OUTPUT = "output"


class InteractionMonitor(Monitor):
    """Salient AND-OR interactions the network encodes, their orders, what emerges and what is forgotten over
    training, and how each layer's interactions compare with the output's (SCIENCE.md section 3).

    At each probe the first ``num_samples`` probe samples are masked in all 2^n ways (players outside T set to the
    baseline, by default the probe-set mean), the model is run on them, and v = log-odds of the true class is
    decomposed into sparse AND-OR interactions (γ and the noise |δ| ≤ κ·|v(N) - v(∅)| learned, one batched
    problem for all samples and layers). For each named layer a linear softmax probe is fitted on the frozen
    layer features of the whole probe set; its log-odds on the masked inputs give v^(l).

    Logs under ``probes/interactions/`` (three kinds of comparison, named by the tag):

    - the output at this probe: ``n_salient`` (salient interactions per sample, |I| > τ·max|I|, first-order OR
      counted with first-order AND), ``n_salient_order_<k>`` (k = 1..n), ``mean_order``, ``objective`` (mean
      Σ|I|), ``clamped_fraction`` (masked outputs whose |v| hit the clamp);
    - the solver: ``certified_gap_max`` / ``certified_gap_mean`` over all decomposed games (objective / dual
      bound - 1: each reported decomposition is at most (1 + gap)× the sparsest one) and ``exact_fallback_fraction``
      (games the first-order solver did not certify within ``solver_tol`` and the exact LP solved);
    - over training *time*, the output now vs the output at the previous probe: ``emerged`` / ``forgotten``
      (new / (overlap + new) and forget / (overlap + forget) of the strength-weighted terms, pooled over orders:
      the share of today's salient strength that is new and of the previous one that is gone), ``iou_previous``;
    - each layer *against the output*: ``<layer>/completeness``, ``<layer>/redundancy`` (pooled over orders,
      the paper's per-layer figure), ``<layer>/completeness_mean_over_orders`` /
      ``<layer>/redundancy_mean_over_orders`` (the mean of the per-order ratios, orders without a salient
      interaction skipped), ``<layer>/iou`` and ``<layer>/probe_accuracy``;
    - *adjacent layers* along the forward pass, in the order of ``layers`` and ending with the output (the
      paper's layerwise change): ``<layer>/emerged_from_previous_layer`` (new / (overlap + new): the share of
      this layer's salient strength absent from the previous layer) and ``<layer>/forgotten_from_previous_layer``
      (forget / (overlap + forget): the share of the previous layer's that this layer drops), for every layer
      after the first and for ``output``.

    Pictures: sorted |I| (sparsity), the order histogram, completeness and redundancy per order and layer; text:
    the strongest interactions of a few samples as player sets.

    Every rank computes the same figures (the decomposition is per sample and cheap to repeat).

    Args:
        players: the partition of one input into n players (:class:`~lightning_probes.measures.interactions.Players`,
            e.g. ``ImagePatches((4, 4), (8, 8), select=[...], flatten=True)``).
        layers: module names whose outputs get a linear probe and their own interactions, listed in forward order
            (the adjacent-layer change compares each with the one before it, the output with the last); none:
            output only.
        num_samples: probe samples whose interactions are extracted (each costs 2^n forward rows).
        tau: salience threshold as a fraction of each sample's max |I|.
        kappa: noise bound as a fraction of |v(N) - v(∅)|.
        max_players: refuse more players than this (2^n masked inputs and subsets per sample).
        baseline: masking value per input element (shape of one sample) or a scalar; default the probe-set mean.
            For token ids (integer inputs) give the baseline token, e.g. ``tokenizer.mask_token_id`` or the pad id
            (a mean over ids is never used: integer inputs without ``baseline`` or ``mask_at`` are refused). With
            ``mask_at``: the baseline vector, (d,) or (T, d); default the probe-set mean embedding.
        mask_at: mask at this module's output instead of the input, e.g. ``"bert.embeddings.word_embeddings"``:
            for masked positions its output (B, T, d) is replaced by the baseline vector; the input ids reach the
            model unchanged.
        player_key: for mapping batches, the key of the input the players partition (default ``"input_ids"``).
            Every other input (an ``attention_mask`` in particular) is carried along untouched; players that cover
            a padded position (attention_mask 0) of a decomposed sample are refused at fit start.
        solver_iterations: iteration cap of the batched AND-OR solver (games still above ``solver_tol`` then go
            to the exact LP: 0.2-8 s each at n = 10, so the cap is high; certified games stop early).
        solver_tol: certified relative gap the solver must reach: every decomposition is at most
            (1 + solver_tol)× the sparsest.
        forward_batch_size: masked inputs per forward pass (bounds memory).
        probe_l2: L2 weight of the layer probes.
        text_samples: samples shown in the strongest-interactions text.
        top_k: interactions shown per sample.
        **kwargs: the :class:`~lightning_probes.monitors.base.Monitor` arguments (schedule, probe_data,
            max_samples — the probe set the baseline and the layer probes are fitted on, ...).

    Example:
        >>> from lightning_probes.measures.interactions import ImagePatches
        >>> InteractionMonitor(ImagePatches((4, 4), (8, 8), select=[5, 6, 9, 10], flatten=True), schedule=50)
        InteractionMonitor(n=4, layers=[], schedule=every(50, start=0))
    """

    name = "interactions"
    title = "AND-OR interactions (Cheng et al. 2024)"
    probe_set: ProbeSet  # needs_probe_data is True: the base always builds one (it is None only for those without)

    def __init__(
        self,
        players: Players,
        layers: Sequence[str] | None = None,
        num_samples: int = 16,
        tau: float = 0.05,
        kappa: float = 0.04,
        max_players: int = 14,
        baseline: Tensor | float | None = None,
        solver_iterations: int = 5000,
        solver_tol: float = 0.01,
        forward_batch_size: int = 4096,
        probe_l2: float = 1e-3,
        text_samples: int = 3,
        top_k: int = 6,
        mask_at: str | None = None,
        player_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.players = players
        self.layers: list[str] = layers  # type: ignore[assignment]  # checked and made a list in _validate()
        self.num_samples = num_samples
        self.tau = tau
        self.kappa = kappa
        self.max_players = max_players
        self.baseline = baseline
        self.solver_iterations = solver_iterations
        self.solver_tol = solver_tol
        self.forward_batch_size = forward_batch_size
        self.probe_l2 = probe_l2
        self.text_samples = text_samples
        self.top_k = top_k
        self.mask_at = mask_at
        self.player_key = player_key
        self._validate()
        self._previous: dict[str, Tensor] | None = None  # the output's interactions at the previous probe
        # per layer, the per-order completeness / redundancy of the last probe, (n + 1,) each (NaN: no interaction)
        self.last_by_order: dict[str, dict[str, Tensor]] = {}

    def _validate(self) -> None:
        check_name("mask_at", self.mask_at, what="the name of the module whose output is masked (an embedding layer)",
                   optional=True)
        check_name("player_key", self.player_key, what="a key of the batch such as 'input_ids'", optional=True)
        if not isinstance(self.players, Players):
            raise TypeError(f"players must be a Players partition (e.g. ImagePatches(...), FeatureGroups(...)), got "
                            f"{type(self.players).__name__}.")
        check_int("max_players", self.max_players)
        if self.players.n > self.max_players:
            raise ValueError(
                f"{self.players.n} players exceed max_players={self.max_players}: each probe runs the model on 2^n = "
                f"{2 ** self.players.n} masked inputs per sample and solves for 2·2^n interactions. Use fewer, "
                "larger players, or raise max_players if you accept the cost."
            )
        self.layers = names = check_names("layers", self.layers or [], example="['features.1']", allow_empty=True)
        if OUTPUT in names:
            raise ValueError(f"{OUTPUT!r} is reserved for the model output; name the layer module instead.")
        check_int("num_samples", self.num_samples)
        if self.probe_set is not None and self.num_samples > self.probe_set.max_samples:
            raise ValueError(f"num_samples={self.num_samples} exceeds max_samples={self.probe_set.max_samples}.")
        check_real("tau", self.tau, "(0, 1)", what="a fraction of the largest |I| in (0, 1)")
        check_real("kappa", self.kappa, "[0, 1)", what="a fraction of |v(N) - v(∅)| in [0, 1)")
        for label in ("solver_iterations", "forward_batch_size", "top_k"):
            check_int(label, getattr(self, label))
        check_int("text_samples", self.text_samples, low=0)
        check_real("solver_tol", self.solver_tol, "(0, 1)", what="a relative gap in (0, 1)")
        check_real("probe_l2", self.probe_l2, "[0, inf)", what="a finite number ≥ 0")
        if self.baseline is not None:
            try:
                base = torch.as_tensor(self.baseline)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"baseline must be a tensor (one sample's shape), a number or None (the probe-set "
                                f"mean), got {type(self.baseline).__name__}.") from None
            if base.is_floating_point() and not bool(torch.isfinite(base).all()):
                raise ValueError("baseline holds NaN or Inf; every masked input would be NaN.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.players.n}, layers={self.layers}, schedule={self.schedule!r})"

    @override
    def state_key_fields(self) -> dict[str, Any]:
        return {"n": self.players.n, "layers": tuple(self.layers), "num_samples": self.num_samples}

    progress_bar_scalars = ("n_salient",)  # shown on the progress bar after each probe
    _samples_now: int | None = None  # samples decomposed per probe once a budget asked for cheaper probes

    @override
    def cheaper(self) -> str | None:
        """Halve the samples decomposed per probe (each costs 2^n forward rows), down to 1."""
        now = self._samples_now or self.num_samples
        if now <= 1:
            return None
        self._samples_now = now // 2
        return f"{self._samples_now} samples' interactions instead of {now}"

    @override
    def dashboard(self) -> dict[str, dict[str, list]]:
        p = self.prefix
        return {
            "probes/interactions": {
                # a count of tens beside an order of 1-3: apart
                "salient interactions": ["Multiline", [f"{p}n_salient$"]],
                "mean order of the salient interactions": ["Multiline", [f"{p}mean_order$"]],
                "emerged and forgotten": ["Multiline", [f"{p}emerged$", f"{p}forgotten$", f"{p}iou_previous$"]],
                "salient interactions by order": ["Multiline", [f"{p}n_salient_order_[0-9]+$"]],
                "completeness per layer": ["Multiline", [f"{p}.*/completeness(_mean_over_orders)?$"]],
                "redundancy per layer": ["Multiline", [f"{p}.*/redundancy(_mean_over_orders)?$"]],
                "emerged and forgotten from the previous layer": [
                    "Multiline", [f"{p}.*/(emerged|forgotten)_from_previous_layer$"]
                ],
                "per layer: IoU with the output's salient set, probe accuracy": [
                    "Multiline", [f"{p}.*/iou$", f"{p}.*/probe_accuracy$"]
                ],
                "sparse fit objective (mean Σ|I|)": ["Multiline", [f"{p}objective$"]],
                "outputs clamped by the mask": ["Multiline", [f"{p}clamped_fraction$"]],
                # a gap of ~1e-3 beside a fraction of games up to 1: apart
                "solver: certified relative gap": ["Multiline", [f"{p}certified_gap_(max|mean)$"]],
                "solver: games re-solved by the exact LP": ["Multiline", [f"{p}exact_fallback_fraction$"]],
            }
        }

    @override
    def check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name in self.layers:
            resolve_module(pl_module, name)  # lists the module names when missing
        if self.mask_at is not None:
            resolve_module(pl_module, self.mask_at)

    @override
    def min_probe_samples(self, pl_module: pl.LightningModule) -> int:
        return self.num_samples

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        probe = self.probe_set
        if probe.targets is None or probe.targets.is_floating_point() or probe.targets.ndim != 1:
            raise ValueError(
                "InteractionMonitor needs a classification head: probe_data must yield (x, y) with integer class "
                "targets y of shape (N,); v is the log-odds of the true class."
            )
        x = get_path(probe.inputs, probe.input_path(self.player_key))  # the tensor the players partition
        first = probe.split(probe.batch(slice(0, 1), pl_module.device))[0]
        try:  # v is the log-odds of the true class: it must be one of the output's classes
            with probing(pl_module):
                classes = probe.logits(pl_module, first).shape[-1]
        except Exception as err:  # the same message as the fit-start trial's: the monitor cannot run on this model
            raise explained(err, type(self).__name__)  # noqa: B904 (explained() chains the cause)
        check_class_labels(type(self).__name__, probe.targets, classes, "the model output")
        shape = tuple(self.players.groups.shape)
        if self.mask_at is None and tuple(x.shape[1 : 1 + len(shape)]) != shape:
            raise ValueError(
                f"players were built for samples of shape {shape}, but the probe inputs have shape "
                f"{tuple(x.shape[1:])}; build them for what the model takes (e.g. flatten=True)."
            )
        if self.baseline is None and self.mask_at is None and not x.is_floating_point():
            raise ValueError(f"the probe inputs are {x.dtype} (token ids?): the default baseline (the probe-set mean) "
                             "is not a token; pass the baseline token, e.g. baseline=tokenizer.mask_token_id (or "
                             "the pad id), or mask at the embedding layer, e.g. "
                             "mask_at='bert.embeddings.word_embeddings'.")
        self._check_padding(probe.inputs)
        if self.baseline is not None and self.mask_at is None:  # a baseline that does not fit fails here
            self.players.mask(x[:1], torch.ones(1, self.players.n, dtype=torch.bool), self.baseline)

    def _check_padding(self, inputs: Any) -> None:
        """Refuse players that cover padded positions (attention_mask 0) of the decomposed samples: masking a pad
        changes nothing the model attends to, so such a player's interactions would be an artefact."""
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if not isinstance(mask, Tensor):
            return
        groups = self.players.groups.to(mask.device)
        if mask.ndim != 2 or groups.ndim != 1 or mask.shape[1] != groups.shape[0]:
            raise ValueError(f"players of shape {tuple(groups.shape)} do not match the attention_mask "
                             f"{tuple(mask.shape[1:])}: token players are one position per token, Players.tokens("
                             f"positions, seq_len={mask.shape[1]}).")
        padded = mask[: self.num_samples] == 0  # (B, T)
        covered = padded[:, groups >= 0]  # padded positions that belong to a player
        if bool(covered.any()):
            samples = sorted(set(torch.nonzero(padded & (groups >= 0))[:, 0].tolist()))
            players = sorted(set(groups[(padded & (groups >= 0)).any(0)].tolist()))
            raise ValueError(
                f"players {players} cover padded positions (attention_mask 0) of probe samples {samples[:8]}: "
                "masking a pad is no masking. Choose player positions inside every decomposed sample's length "
                f"(the first num_samples={self.num_samples}), or probe data whose samples are long enough."
            )

    @override
    def trial_view(self, indices: Tensor) -> None:
        self.num_samples = min(self.num_samples, 2)  # the trial checks the path, not the figures: 2 samples suffice

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["previous"] = None if self._previous is None else {k: v.cpu() for k, v in self._previous.items()}
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._previous = state_dict.get("previous")

    # ------------------------------------------------------------------ the measurement
    @override
    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> ProbeResult:
        probe = self.probe_set
        device = pl_module.device
        inputs_all = probe.batch(device=device)
        inputs_all, y_all = probe.split(inputs_all)
        path = probe.input_path(self.player_key)
        n = self._samples_now or self.num_samples  # fewer once a budget asked for cheaper probes
        count = min(n, len(probe))
        inputs, y = index(inputs_all, slice(0, count)), y_all[:count]
        layer_probes = self._fit_layer_probes(pl_module, y_all)
        baseline = self._baseline(pl_module, get_path(inputs_all, path))
        games = self._games(pl_module, inputs, path, y, baseline, layer_probes)  # source -> v (B, 2^n)
        stacked = torch.cat(list(games.values()))  # (S·B, 2^n): one batched decomposition
        result = sparse_and_or(stacked, self.kappa, max_iter=self.solver_iterations, tol=self.solver_tol)
        per_source = _split(result, list(games), count, self.tau)
        report = ProbeResult(scalars={**self._scalars(per_source, layer_probes), **_solver_scalars(result)})
        if self.render_images:
            self._pictures(report, per_source)
        return report

    def _baseline(self, pl_module: pl.LightningModule, x_all: Tensor) -> Tensor | float:
        """The masking value: the given one, else the probe-set mean (of the inputs, or of the mask_at module's
        output over non-padded tokens)."""
        if self.baseline is not None:
            return self.baseline
        if self.mask_at is None:
            return x_all.mean(0)
        total: Tensor | None = None
        tokens = 0
        with capture(pl_module, {self.mask_at: "output"}) as seen:
            for inputs, _ in self.probe_set.batches(pl_module.device):
                self.probe_set.forward(pl_module, inputs)
                emb = seen[self.mask_at]  # (B, T, d)
                mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
                keep = (mask.bool() if isinstance(mask, Tensor) and mask.shape == emb.shape[:2]
                        else torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device))
                part = emb[keep].to(torch.float64).sum(0)  # (d,)
                total = part if total is None else total + part
                tokens += int(keep.sum())
        assert total is not None  # the probe set is never empty (checked at fit start)
        return (total / max(tokens, 1)).to(emb.dtype)

    def _fit_layer_probes(self, pl_module: pl.LightningModule, y: Tensor) -> dict[str, LinearProbe]:
        if not self.layers:
            return {}
        feats: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        width = 0
        with capture(pl_module, {name: "output" for name in self.layers}) as seen:
            for inputs, _ in self.probe_set.batches(pl_module.device):
                width = self._output_width(self.probe_set.logits(pl_module, inputs))
                for name in self.layers:
                    feats[name].append(seen[name].flatten(1))
        num_classes = max(int(y.max()) + 1, width)
        return {name: fit_linear_probe(torch.cat(f), y, num_classes, l2=self.probe_l2) for name, f in feats.items()}

    @staticmethod
    def _output_width(out: Any) -> int:
        if not isinstance(out, Tensor) or out.ndim != 2:
            raise ValueError(
                "InteractionMonitor needs a classification head: the model must return logits of shape (B, C), "
                f"got {type(out).__name__}{'' if not isinstance(out, Tensor) else tuple(out.shape)}."
            )
        return out.shape[1]

    def _games(
        self, pl_module: nn.Module, inputs: Any, path: tuple, y: Tensor, baseline: Tensor | float,
        probes: dict[str, LinearProbe],
    ) -> dict[str, Tensor]:
        x = get_path(inputs, path)  # (B, *shape): the tensor the players partition
        bsz, m = len(y), 1 << self.players.n
        watched: dict[str, Where] = {name: "output" for name in self.layers}
        pieces: list[dict[str, Tensor]] = []
        element: dict[str, Tensor] = {}  # with mask_at: which (row, position) keeps its embedding, for the hook
        with capture(pl_module, watched) as seen, _masking_at(pl_module, self.mask_at, element, baseline):
            for sample, keep in masked_rows(bsz, self.players.n, self.forward_batch_size, x.device):
                rows = index(inputs, sample)  # every input of these samples (attention_mask included), as is
                if self.mask_at is None:
                    rows = set_path(rows, path, self.players.mask(x[sample], keep, baseline))
                else:
                    element["keep"] = self.players.element_mask(keep)  # (R, T)
                out = {OUTPUT: self.probe_set.logits(pl_module, rows)}
                out.update({name: probes[name](seen[name].flatten(1)) for name in self.layers})
                pieces.append(out)
        logits = {k: torch.cat([p[k] for p in pieces]).unflatten(0, (bsz, m)) for k in pieces[0]}
        games = {}
        clamped = 0
        for source in [OUTPUT, *self.layers]:
            if logits[source].ndim != 3:
                raise ValueError("the model must return logits of shape (B, C) for InteractionMonitor.")
            v = log_odds(logits[source].to(torch.float64), y)  # bf16 logits under autocast: math in float64
            clamped += int(v.clamped.sum())
            games[source] = v.values.to(torch.float64)
        total = sum(g.numel() for g in games.values())
        self._clamped_fraction = clamped / total
        if clamped:
            self.warn_once(
                "clamped",
                f"{clamped} of {total} masked outputs have p(true class) within ~1e-7 of 0 or 1 (the network is "
                "saturated or already gets the sample wrong with certainty); their log-odds were clamped to ±16, "
                "so interactions there describe the clamp. See probes/interactions/clamped_fraction.",
            )
        return games

    def _scalars(self, per_source: dict[str, dict[str, Tensor]], probes: dict[str, LinearProbe]) -> dict[str, float]:
        previous = None if self._previous is None else _salient(self._previous)
        layers = {name: _salient(per_source[name]) for name in self.layers}
        summary = interaction_summary(_salient(per_source[OUTPUT]), layers, previous)
        scalars = {
            "n_salient": summary.n_salient,
            "mean_order": summary.mean_order,
            "objective": summary.objective,
            "clamped_fraction": float(self._clamped_fraction),
        }
        for k, count in enumerate(summary.n_salient_by_order, 1):
            scalars[f"n_salient_order_{k}"] = count
        if summary.since_previous is not None and summary.iou_previous is not None:
            scalars["emerged"], scalars["forgotten"] = summary.since_previous
            scalars["iou_previous"] = summary.iou_previous
        out = per_source[OUTPUT]
        self._previous = {k: out[k].detach().cpu() for k in ("i_and", "i_or", "mask")}
        for name, layer in summary.layers.items():
            per_source[name]["completeness"] = layer.completeness
            per_source[name]["redundancy"] = layer.redundancy
            self.last_by_order[name] = {"completeness": layer.completeness.cpu(), "redundancy": layer.redundancy.cpu()}
            scalars[f"{name}/completeness"] = layer.pooled_completeness
            scalars[f"{name}/redundancy"] = layer.pooled_redundancy
            scalars[f"{name}/completeness_mean_over_orders"] = layer.completeness_mean_over_orders
            scalars[f"{name}/redundancy_mean_over_orders"] = layer.redundancy_mean_over_orders
            scalars[f"{name}/iou"] = layer.iou
            scalars[f"{name}/probe_accuracy"] = float(probes[name].accuracy)
        for after, turnover in zip([*self.layers, OUTPUT][1:], summary.between_layers):  # previous layer -> this
            scalars[f"{after}/emerged_from_previous_layer"] = turnover.emerged
            scalars[f"{after}/forgotten_from_previous_layer"] = turnover.forgotten
        return scalars

    # ------------------------------------------------------------------ pictures and text
    @drawing()  # so a time budget knows what pictures cost apart from the measurement
    def _pictures(self, report: ProbeResult, per_source: dict[str, dict[str, Tensor]]) -> None:
        n = self.players.n
        curves = {}
        for source, parts in per_source.items():
            strength = torch.cat((parts["i_and"][:, 1:], parts["i_or"][:, 1:]), -1).abs()  # (B, 2m - 2)
            ranked = strength.sort(-1, descending=True).values
            ranked = ranked / ranked[:, :1].clamp_min(1e-12)
            rank = np.arange(1, ranked.shape[1] + 1)
            curves[source] = (rank, ranked.mean(0).clamp_min(1e-8).cpu().numpy())
        report.images["sparsity"] = line_image(
            curves, f"sorted |I| / max |I| (mean over samples), step {self.step}", "rank", "relative strength",
            logy=True, logx=True, hlines={f"τ = {self.tau}": self.tau},
        )
        orders = [str(k) for k in range(1, n + 1)]
        report.images["order_histogram"] = bar_image(
            orders, {s: count_by_order(p["mask"])[:, 1:].double().mean(0).tolist() for s, p in per_source.items()},
            f"salient interactions per sample by order, step {self.step}", "count",
        )
        if self.layers:
            for key in ("completeness", "redundancy"):
                report.images[f"{key}_per_order"] = bar_image(
                    orders, {name: torch.nan_to_num(per_source[name][key][1:]).tolist() for name in self.layers},
                    f"{key} per order vs the output, step {self.step}", key,
                )
        report.texts["strongest"] = self._strongest_text(per_source[OUTPUT])

    def _strongest_text(self, out: dict[str, Tensor]) -> str:
        rows = []
        shown = min(self.text_samples, out["i_and"].shape[0])
        tops = strongest_interactions(out["i_and"][:shown], out["i_or"][:shown], self.top_k, self.players.names)
        for sample, top in enumerate(tops):
            for kind, members, value in top:
                rows.append([sample, kind, "{" + ", ".join(members) + "}", len(members), value])
        return markdown_table(["sample", "type", "players", "order", "I(S)"], rows)

    @override
    def summary(self) -> str:
        if not self.history:
            return super().summary()
        step, last = self.history[-1]
        lines = [f"[interactions] at step {step}: {last['n_salient']:.1f} salient interactions per sample "
                 f"(mean order {last['mean_order']:.2f})"]
        for name in self.layers:
            lines.append(f"[interactions] {name}: completeness {last[f'{name}/completeness']:.3f}, "
                         f"redundancy {last[f'{name}/redundancy']:.3f}")
        return "\n".join(lines)


def _split(result: AndOrDecomposition, sources: list[str], per: int, tau: float) -> dict[str, dict[str, Tensor]]:
    """Cut the batched decomposition back into sources; merge singletons and mark salient sets per source."""
    return {source: salient_interactions(result, slice(i * per, (i + 1) * per), tau)._asdict()
            for i, source in enumerate(sources)}


def _salient(parts: Mapping[str, Tensor]) -> SalientInteractions:
    return SalientInteractions(parts["i_and"], parts["i_or"], parts["mask"], parts.get("objective"))


def _solver_scalars(result: AndOrDecomposition) -> dict[str, float]:
    """How far from the sparsest decomposition the reported ones can be, over all games of this probe."""
    certificate = solver_certificate(result)
    return {"certified_gap_max": certificate.gap_max, "certified_gap_mean": certificate.gap_mean,
            "exact_fallback_fraction": certificate.exact_fallback_fraction}




@contextlib.contextmanager
def _masking_at(model: nn.Module, name: str | None, element: dict[str, Tensor], baseline: Tensor | float) -> Any:
    """While active, the output (R, T, d) of module ``name`` keeps its value where ``element["keep"]`` (R, T) is
    True and takes the baseline vector elsewhere (masking at an embedding layer); nothing when ``name`` is None."""
    if name is None:
        yield
        return

    def hook(_module: nn.Module, _args: tuple, output: Any) -> Tensor:
        keep = element["keep"]
        if not isinstance(output, Tensor) or output.shape[: keep.ndim] != keep.shape:
            raise ValueError(f"mask_at={name!r} returned {type(output).__name__}"
                             f"{tuple(output.shape) if isinstance(output, Tensor) else ''}; masking there needs an "
                             f"output whose leading dims after the batch are the players' {tuple(keep.shape[1:])} "
                             "(e.g. (B, T, d) for token players over T positions).")
        base = torch.as_tensor(baseline, dtype=output.dtype, device=output.device)
        return torch.where(keep.view(*keep.shape, *([1] * (output.ndim - keep.ndim))), output, base)

    handle = resolve_module(model, name).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
