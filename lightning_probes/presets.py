"""Presets: the whole instrument panel in one line, at a cost that was measured before you pay it.

Each preset returns a :class:`~lightning_probes.monitors.group.MonitorGroup`: one callback for
``Trainer(callbacks=...)`` (alone or in a list beside others) that is also the sequence of its monitors. One callback
rather than one per monitor, because Lightning pays its per-step dispatch of every hook once per callback (five idle
monitors on the digits MLP: 3.2% of training time as five callbacks, 0.9% as one group). From the head's name alone
a preset builds the monitors that need nothing more (the feature spectrum, and condensation of the hidden
``nn.Linear`` layers); the others join only when given what they need: interactions with ``players``, the Local
Interaction Basis with ``lib_layers``, concept explanations with ``concept_layer`` and ``concepts``.

``economy`` and ``standard`` run every monitor on a :func:`~lightning_probes.schedules.budget` schedule: the
preset's share of training time is split evenly among its monitors, so adding a monitor does not raise the total.
A budget is kept from the second probe on: the probe at step 0 (the state at initialisation) and the probe of the
final state (``at_end=True``) are paid whatever they cost, and on a run of known length the budget's floor adds a
probe half-way (at least 3 probes a monitor), so the bound holds for runs that are long against one probe (see each
preset's figures), while a short run still shows every monitor's start, middle and end. A monitor whose probe the
budget cannot afford for long probes cheaper (fewer samples or units) rather than not at all, and says so once.
``full`` probes densely on a deterministic log-spaced schedule with every option on, and costs what it costs.

The figures in the docstrings come from ``python benchmarks/grid.py`` (README, performance table): wall time of
training the digits MLP 64-256-256-10 (batch 64, 1 thread) for 40 000, 10 000 and 1000 steps with the preset over
the same training without it (both logging to TensorBoard), measured in one process, and the share of training time
the preset's probes took by their own clocks. They were measured before the final-state probe and the budget's
floor of 3 probes were added: on runs long against one probe neither acts on the wall ratio (the floor is met by
the budget itself, the final probe comes after the loop), on a short run both add a probe.

Example:
    >>> from lightning_probes import presets
    >>> [type(m).__name__ for m in presets.economy(head="classifier")]
    ['FeatureSpectrumMonitor', 'CondensationMonitor']
    >>> [m.schedule for m in presets.standard(head="classifier")]
    [budget(0.04, min_interval=5), budget(0.04, min_interval=5)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from torch import Tensor
from typing_extensions import Unpack

from lightning_probes.datasets import ConceptProbe
from lightning_probes.measures.interactions import Players
from lightning_probes.monitors.base import Monitor
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.group import MonitorGroup
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.probe_set import Source
from lightning_probes.schedules import Schedule, budget, log_spaced
from lightning_probes.triggers import Trigger

__all__ = ["economy", "full", "standard"]


class PresetArguments(TypedDict, total=False):
    """What a preset may be given besides the head (documented in :func:`economy`)."""

    players: Players
    interaction_layers: Sequence[str]
    lib_layers: Sequence[str]
    concept_layer: str
    concepts: Tensor | ConceptProbe
    concept_names: Sequence[str]
    condensation_layers: str | Sequence[str] | None
    probe_data: Source
    max_samples: int
    triggers: Mapping[str, Sequence[Trigger]]
    monitor_args: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class _Level:
    """What distinguishes the presets: how much time they may take and how much detail they ask for."""

    fraction: float | None  # share of training time for all monitors together; None: deterministic, unbounded
    min_interval: int  # fewest steps between two probes of one monitor
    images_every: int
    interaction_samples: int  # samples decomposed per probe (each costs 2^n forward rows)
    lib_samples: int  # samples whose Jacobians build the interaction basis
    concept_search: str  # "beam" is cheap; "exact" is optimal
    concept_units: int | None  # units explained per probe (each is one search per range); None: all
    rich: bool  # NC4 against the current class means, LIB ablation, per-layer interaction probes


_ECONOMY = _Level(0.02, 10, 10, 4, 128, "beam", 16, rich=False)
_STANDARD = _Level(0.08, 5, 5, 8, 256, "exact", 32, rich=False)
_FULL = _Level(None, 1, 2, 16, 512, "exact", None, rich=True)


def economy(head: str = "classifier", **needs: Unpack[PresetArguments]) -> MonitorGroup:
    """At most 5% overhead: every monitor on ``budget`` with 2% of training time shared among them, probes at
    least 10 steps apart, pictures on every 10th probe, the cheap variant of each measurement (4 samples'
    interactions, 128 samples' LIB, beam search for the concept formulas of 16 units).

    Measured (benchmarks/grid.py, digits MLP; wall time over bare training, in brackets the probes' own share of
    training time): head only (spectrum + condensation) 1.035x (2.3%) over 10 000 steps, 1.045x (1.7%) over
    40 000; with players (8 pixel rows), LIB layers and digit concepts (all five monitors) 1.091x (5.5%) and
    1.069x (3.0%), over the bound: their one-off costs (step-0 probes 0.9 s, first pictures ~2 s) are paid back
    only after a few minutes of training. At 1000 steps (2.3 s) the one-off costs are most of it: 1.04x and 1.35x.

    Args:
        head: the module whose input is the feature map (the spectrum monitor's ``head``).
        players: the players of the interaction monitor; without them it is left out.
        interaction_layers: modules whose outputs get their own interactions (``full`` only: linear probes on
            each layer cost a fit per probe).
        lib_layers: the interaction-basis monitor's ``layers`` (module names whose inputs are the node points);
            without them it is left out.
        concept_layer, concepts, concept_names: the concept monitor's ``layer``, ``concepts`` and names; it is
            added when both ``concept_layer`` and ``concepts`` are given.
        condensation_layers: ``"auto"`` (the default: every ``nn.Linear`` but the output layer), a list of names,
            or None to leave condensation out (models without hidden Linear layers).
        probe_data, max_samples: the probe set of the monitors that read data (default ``"train"``, 512). The
            concept monitor's probe set is the samples its concepts describe: a ConceptProbe's own inputs, or with
            a concept tensor the first N samples of ``probe_data``.
        triggers: stop conditions per monitor name, e.g. ``{"spectrum": [StopOnRegime("MF", patience=3)]}``.
        monitor_args: more constructor arguments per monitor name, for models the defaults do not fit, e.g.
            ``{"interactions": {"baseline": tokenizer.mask_token_id}, "spectrum": {"pool": "first"}}``; the key
            ``"all"`` goes to every monitor that reads probe data (e.g. ``{"all": {"forward": ...}}``).

    Returns:
        One callback holding the monitors, spectrum first (iterate or index it for the monitors themselves).
    """
    return _build(_ECONOMY, head, needs)


def standard(head: str = "classifier", **needs: Unpack[PresetArguments]) -> MonitorGroup:
    """At most 15% overhead: every monitor on ``budget`` with 8% of training time shared among them, probes at
    least 5 steps apart, pictures on every 5th probe, 8 samples' interactions, 256 samples' LIB, exact concept
    search on 32 units. Arguments as in :func:`economy`.

    Measured as for :func:`economy`: head only 1.107x (7.1%) over 10 000 steps, 1.128x (8.8%) over 40 000; all
    five monitors 1.147x (10.4%) and 1.124x (8.6%). At 1000 steps: 1.27x and 2.08x, the step-0 probes (1.5 s for
    all five) being most of it on so short a run.
    """
    return _build(_STANDARD, head, needs)


def full(head: str = "classifier", **needs: Unpack[PresetArguments]) -> MonitorGroup:
    """Everything, densely: ``log_spaced(per_decade=10, max_interval=100)`` for every monitor, pictures on every
    2nd probe, NC4 against the current class means, 16 samples' interactions with a probe per
    ``interaction_layers`` entry, LIB with its ablation check, exact concept search on every unit. No time bound:
    for studying a run, not for long training. Arguments as in :func:`economy`.

    Measured (benchmarks/grid.py, digits MLP, 1000 steps): head only 5.9x wall time; all five monitors 130x
    (7.2 s a probe of all five, ~40 probes).
    """
    return _build(_FULL, head, needs)


def _build(level: _Level, head: str, needs: Mapping[str, Any]) -> MonitorGroup:
    unknown = sorted(set(needs) - set(PresetArguments.__annotations__))
    if unknown:
        raise TypeError(f"presets take head and {sorted(PresetArguments.__annotations__)}; got unknown {unknown}.")
    return _assemble(level, head, **needs)


def _assemble(
    level: _Level, head: str, *, players: Players | None = None, interaction_layers: Sequence[str] | None = None,
    lib_layers: Sequence[str] | None = None, concept_layer: str | None = None,
    concepts: Tensor | ConceptProbe | None = None, concept_names: Sequence[str] | None = None,
    condensation_layers: str | Sequence[str] | None = "auto", probe_data: Source = "train", max_samples: int = 512,
    triggers: Mapping[str, Sequence[Trigger]] | None = None,
    monitor_args: Mapping[str, Mapping[str, Any]] | None = None,
) -> MonitorGroup:
    if (concept_layer is None) != (concepts is None):
        raise ValueError("the concept monitor needs both concept_layer (the module whose units are explained) and "
                         "concepts (masks or a ConceptProbe); give both or neither.")
    if interaction_layers is not None and players is None:
        raise ValueError("interaction_layers were given without players: the interaction monitor needs players.")
    # (name, class, its own arguments) of every monitor this call has what it needs for
    wanted: list[tuple[str, type[Monitor], dict[str, Any]]] = [
        ("spectrum", FeatureSpectrumMonitor,
         {"head": head, "nc4_means": "current" if level.rich else "previous"}),
    ]
    if condensation_layers is not None:
        wanted.append(("condensation", CondensationMonitor, {"layers": condensation_layers}))
    if players is not None:
        wanted.append(("interactions", InteractionMonitor, {
            "players": players, "num_samples": level.interaction_samples,
            "layers": list(interaction_layers) if interaction_layers and level.rich else None,
        }))
    if lib_layers is not None:
        wanted.append(("lib", InteractionBasisMonitor,
                       {"layers": lib_layers, "num_samples": level.lib_samples, "ablation": level.rich}))
    if concepts is not None:
        wanted.append(("concepts", ConceptMonitor, {"layer": concept_layer, "concepts": concepts,
                                                    "concept_names": concept_names, "search": level.concept_search,
                                                    "max_units": level.concept_units,
                                                    # the paper's extra forward passes: full only (cost measured there)
                                                    "range_importance": level.rich, "label_masking": level.rich}))
    triggers = dict(triggers or {})
    unknown = sorted(set(triggers) - {name for name, _, _ in wanted})
    if unknown:
        raise ValueError(f"triggers name monitor(s) {unknown} that this preset does not build; it builds "
                         f"{[name for name, _, _ in wanted]}.")
    extra = {k: dict(v) for k, v in (monitor_args or {}).items()}
    unknown = sorted(set(extra) - {name for name, _, _ in wanted} - {"all"})
    if unknown:
        raise ValueError(f"monitor_args name monitor(s) {unknown} that this preset does not build; it builds "
                         f"{[name for name, _, _ in wanted]} (or 'all').")
    monitors: list[Monitor] = []
    for name, cls, args in wanted:
        # the final state is always probed (its cost is reported in the summary): a run's story ends at its end
        common: dict[str, Any] = {"schedule": _schedule(level, len(wanted)), "images_every": level.images_every,
                                  "at_end": True, "triggers": triggers.get(name, ())}
        if cls is ConceptMonitor:  # the probe set is the samples the concepts describe
            if isinstance(concepts, Tensor):
                common["probe_data"] = probe_data
        elif cls is InteractionBasisMonitor:  # its probe-set size is its num_samples
            common["probe_data"] = probe_data
            args["num_samples"] = min(args["num_samples"], max_samples)
        elif cls.needs_probe_data:
            common.update(probe_data=probe_data, max_samples=max_samples)
        own = {**(extra.get("all", {}) if cls.needs_probe_data else {}), **extra.get(name, {})}
        monitors.append(cls(**{**args, **common, **own}))
    return MonitorGroup(monitors)


def _schedule(level: _Level, n_monitors: int) -> Schedule:
    if level.fraction is None:
        return log_spaced(per_decade=10, max_interval=100)
    # an even split: each monitor's budget counts the others' probes as training time, so the total stays
    # within fraction * (1 + fraction / 2) of training — the bound, up to a second-order term
    return budget(round(level.fraction / n_monitors, 6), min_interval=level.min_interval)
