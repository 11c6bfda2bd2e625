"""lightning-probes: PyTorch Lightning callbacks that watch how a network learns.

Example:
    >>> from lightning_probes import FeatureSpectrumMonitor, StopOnRegime, log_spaced
    >>> monitor = FeatureSpectrumMonitor(head="classifier", schedule=log_spaced(), triggers=[StopOnRegime("MF")])
"""

from lightning_probes import presets
from lightning_probes.measures.interactions import FeatureGroups, ImagePatches, Players, TokenPositions
from lightning_probes.monitors.base import Monitor, ProbeResult, Report  # Report: ProbeResult's old name
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.group import MonitorGroup
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.probe_set import ProbeSet
from lightning_probes.schedules import Schedule, budget, every, log_spaced
from lightning_probes.triggers import StopOnRegime, StopWhen, Trigger

__version__ = "0.1.0"

__all__ = [
    "ConceptMonitor",
    "CondensationMonitor",
    "FeatureSpectrumMonitor",
    "FeatureGroups",
    "ImagePatches",
    "InteractionBasisMonitor",
    "InteractionMonitor",
    "Monitor",
    "MonitorGroup",
    "Players",
    "ProbeResult",
    "ProbeSet",
    "Report",
    "Schedule",
    "StopOnRegime",
    "StopWhen",
    "TokenPositions",
    "Trigger",
    "budget",
    "every",
    "log_spaced",
    "presets",
]
