"""The sections of a model between its node points: runs of modules that feed each other straight (SCIENCE.md §4).

LIB needs, for every node layer l, the function F_l that maps its activations to the next node's. For a model whose
computation is a chain of modules (children of ``nn.Sequential`` containers or of the model itself, each feeding its
output straight into the next) those functions are runs of that chain, found by one recorded forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["SUPPORTED", "ModelSections", "find_sections"]

SUPPORTED = (
    "supported models: the computation from each node point to the next is a chain of modules — children of "
    "nn.Sequential containers or of the model itself, each feeding its output straight into the next (e.g. "
    "MLPClassifier's 'features.0', 'features.2', 'classifier') — or pass sections=[...]: one module (or module "
    "names run in order) per layer, mapping that layer's input to the next layer's input (the last one to the "
    "output)"
)


class ModelSections(NamedTuple):
    """The sections found in a model, and the chain they were cut from.

    Attributes:
        sections: one module per layer: ``sections[i]`` maps the input of ``layers[i]`` to the input of
            ``layers[i+1]`` (the last one: to the model's output); a run of several modules is an ``nn.Sequential``.
        chain: the names of the chain's modules in call order (children, with ``nn.Sequential`` opened).
        starts: for every layer, the index in ``chain`` of its first module.
    """

    sections: list[nn.Module]
    chain: list[str]
    starts: list[int]


def _chain_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """The model's children, with nn.Sequential containers opened up (recursively): the possible chain steps."""
    steps: dict[str, nn.Module] = {}

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if isinstance(child, nn.Sequential):
                walk(full + ".", child)
            else:
                steps[full] = child

    walk("", model)
    return steps


def find_sections(
    model: nn.Module, layers: Sequence[str], x: Any, logits: Callable[[nn.Module, Any], Tensor] | None = None
) -> ModelSections:
    """The sections between consecutive node points (inputs of ``layers``) and the output, found by running ``x``.

    One forward pass records the order in which the chain candidates (children, with ``nn.Sequential`` opened)
    are called and checks that each feeds its output straight into the next and the last one makes the model's
    output; ``sections[i]`` is then the run of modules from ``layers[i]`` to just before ``layers[i+1]``.

    Args:
        model: the network (in the mode it is probed in; the pass runs under ``torch.no_grad``).
        layers: module names whose inputs are the node points, in forward order.
        x: model inputs for one forward pass (two samples are enough).
        logits: ``(model, x) -> output tensor`` when the model is not called as ``model(x)`` or its output is not
            the logits tensor itself (default: ``model(x)``).

    Returns:
        :class:`ModelSections`.

    Raises:
        ValueError: a layer is not a chain step, layers are out of forward order, or the chain is broken (a
            residual connection, a functional op between modules, an output that is not the last module's).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> found = find_sections(net, ["0", "2"], torch.zeros(2, 4))
        >>> found.chain, found.starts, [len(s) for s in found.sections]
        (['0', '1', '2', '3', '4'], [0, 2], [2, 3])
    """
    candidates = _chain_candidates(model)
    calls: list[tuple[str, Tensor | None, Any]] = []
    handles = []

    def hook(module: nn.Module, args: tuple, output: Any, name: str) -> None:
        calls.append((name, args[0] if args and isinstance(args[0], Tensor) else None, output))

    for name, module in candidates.items():
        handles.append(module.register_forward_hook(lambda m, a, o, n=name: hook(m, a, o, n)))
    try:
        with torch.no_grad():
            output = model(x) if logits is None else logits(model, x)
    finally:
        for h in handles:
            h.remove()
    order = [name for name, _, _ in calls]
    if len(set(order)) != len(order):
        twice = sorted({n for n in order if order.count(n) > 1})
        raise ValueError(f"modules {twice} are called more than once per forward pass, so the model is not a "
                         f"chain of modules; {SUPPORTED}.")
    starts = [_first_step(layer, order, candidates) for layer in layers]
    for (a, i), (b, j) in zip(zip(layers, starts), zip(layers[1:], starts[1:])):
        if j <= i:
            raise ValueError(f"layers must be consecutive node points in forward order: {b!r} runs before (or with) "
                             f"{a!r}. Forward order of the chain: {', '.join(map(repr, order))}.")
    for k in range(starts[0], len(calls) - 1):
        name, _, out = calls[k]
        nxt, nxt_in, _ = calls[k + 1]
        if not _same(out, nxt_in):
            raise ValueError(f"the output of {name!r} is not the input of {nxt!r} (something happens between them "
                             f"in forward: a residual connection, a functional op, a reshape), so the node points "
                             f"are not joined by a chain of modules; {SUPPORTED}.")
    if not _same(calls[-1][2], output):
        raise ValueError(f"the model's output is not the output of its last module {calls[-1][0]!r}; {SUPPORTED}.")
    modules = [candidates[name] for name in order]
    bounds = [*starts, len(order)]
    return ModelSections([_as_section(modules[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], order, starts)


def _first_step(layer: str, order: list[str], candidates: dict[str, nn.Module]) -> int:
    """Index in the call order of the first chain step inside ``layer`` (the layer itself, or its first child)."""
    for i, name in enumerate(order):
        if name == layer or name.startswith(layer + "."):
            return i
    inside = [n for n in candidates if layer.startswith(n + ".")]
    where = (f"it is inside {inside[0]!r} ({type(candidates[inside[0]]).__name__}), whose forward cannot be "
             "split" if inside else "it is not called in the forward pass")
    raise ValueError(f"layer {layer!r} is not a step of the model's module chain: {where}. Chain steps, in "
                     f"call order: {', '.join(map(repr, order))}; {SUPPORTED}.")


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, Tensor) and isinstance(b, Tensor) and (a is b or (a.shape == b.shape and torch.equal(a, b)))


def _as_section(modules: list[nn.Module]) -> nn.Module:
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)
