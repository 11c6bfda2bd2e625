"""Formulas and the search for the best one: the old import path of :mod:`lightning_probes.measures.concepts`.

The formulas and their IoU bounds are in :mod:`lightning_probes.measures.concepts.formulas`, the concept table in
:mod:`~lightning_probes.measures.concepts.table`, the searches in :mod:`~lightning_probes.measures.concepts.search`.
"""

from lightning_probes.measures.concepts.formulas import Atom, Compound, Formula, Op
from lightning_probes.measures.concepts.formulas import _pair_bounds as _pair_bounds  # used by the tests
from lightning_probes.measures.concepts.formulas import _prefix as _prefix
from lightning_probes.measures.concepts.formulas import _Stats as _Stats
from lightning_probes.measures.concepts.search import SearchResult, best_formula, exhaustive_search
from lightning_probes.measures.concepts.table import ConceptTable, prepare_concepts

__all__ = ["Atom", "Compound", "ConceptTable", "Formula", "Op", "SearchResult", "best_formula", "exhaustive_search",
           "prepare_concepts"]
