"""Reading a model's weights in full under any strategy, and the (m, d) neuron matrix of a layer.

Monitors that look at weights (condensation, LIB) must never compute on a shard. Under FSDP the parameters a rank
holds are pieces: FSDP2 (``fully_shard``, Lightning's ``ModelParallelStrategy``) keeps ``DTensor`` parameters, whose
:meth:`~torch.distributed.tensor.DTensor.full_tensor` all-gathers the whole; FSDP1 (Lightning's ``FSDPStrategy``)
keeps flat shards, readable in full only under ``FullyShardedDataParallel.summon_full_params``. :func:`full_weight`
and :func:`full_parameters` hide both, so a read is shard-safe by construction; every rank must call them together
(they are collectives under FSDP). DeepSpeed partitions parameters its own way and is refused
(:func:`check_strategy`).

A *neuron layer* has one input-weight row per output unit: ``nn.Linear`` (its rows), ``nn.Conv1d/2d/3d`` (one output
channel is one neuron, its input weight the flattened kernel, bias appended by the measure), and, named explicitly,
``nn.MultiheadAttention`` (the rows of ``in_proj_weight``: the query, key and value units) or any module with a 2-D
``weight`` (rows are neurons).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeGuard

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor, nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["NEURON_LAYERS", "check_strategy", "full_parameters", "full_weight", "neuron_count", "neuron_weights"]

#: the module types ``layers="auto"`` picks up as neuron layers
NEURON_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_dtensor(t: Any) -> TypeGuard[DTensor]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed
        return False
    return isinstance(t, DTensor)


def _fsdp1_root(trainer: Any, module: nn.Module | None) -> nn.Module | None:
    """The outermost FSDP1 (``FullyShardedDataParallel``) module around ``module``'s parameters, if any."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:
        return None
    wrapped = getattr(getattr(trainer, "strategy", None), "model", None)
    for candidate in (wrapped, module):
        if isinstance(candidate, FSDP):
            return candidate
        if isinstance(candidate, nn.Module):
            inner = next((m for m in candidate.modules() if isinstance(m, FSDP)), None)
            if inner is not None:
                return wrapped if isinstance(wrapped, FSDP) else inner
    return None


_in_full = False  # inside full_parameters: nested reads need no second gather
_gathered = False  # ... and it gathered something: tensors read there are views of memory freed when it ends


@contextlib.contextmanager
def full_parameters(trainer: Any = None, module: nn.Module | None = None) -> Iterator[None]:
    """Inside this block the parameters of ``module`` (default: the trainer's model) are whole, under FSDP too.

    FSDP1: ``summon_full_params(writeback=False)`` (changes inside are discarded). FSDP2: every ``FSDPModule`` is
    ``unshard()``-ed and resharded on exit. Anything else: nothing to do. A collective under FSDP: all ranks enter.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> with full_parameters(None, lin):
        ...     tuple(lin.weight.shape)
        (2, 3)
    """
    global _in_full, _gathered
    if _in_full:
        yield
        return
    if module is None:
        module = getattr(trainer, "lightning_module", None)
    fsdp1 = _fsdp1_root(trainer, module)
    stack = contextlib.ExitStack()
    with stack:
        if fsdp1 is not None:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            stack.enter_context(FSDP.summon_full_params(fsdp1, writeback=False, recurse=True))
            _gathered = True
        elif module is not None:
            try:
                from torch.distributed.fsdp import FSDPModule
            except ImportError:  # a torch without FSDP2: nothing is sharded by it
                sharded = []
            else:
                sharded = [m for m in module.modules() if isinstance(m, FSDPModule)]
            _gathered = bool(sharded)
            for m in sharded:
                m.unshard()
                stack.callback(m.reshard)
                stack.callback(_keep_unsharded_through_forward(m))
        _in_full = True
        stack.callback(_leave_full)
        yield


def _keep_unsharded_through_forward(module: Any) -> Any:
    """FSDP2 reshards a module after each forward by default, which would turn the parameters back into shards in
    the middle of a block that calls the module (LIB's Jacobians do). Hold them whole until the block ends; returns
    the function that restores the module's own setting. (FSDP2 keeps it per parameter group, an int or a mesh;
    the public ``set_reshard_after_forward`` takes a bool only, so the groups' own value is saved and put back)."""
    state = module._get_fsdp_state()
    groups = list(getattr(state, "_fsdp_param_groups", None) or [])
    saved = [g.post_forward_mesh_info for g in groups]
    for g in groups:
        g.post_forward_mesh_info = None

    def restore() -> None:
        for g, info in zip(groups, saved):
            g.post_forward_mesh_info = info

    return restore


def _leave_full() -> None:
    global _in_full, _gathered
    _in_full = _gathered = False


def full_weight(source: nn.Module | Tensor, trainer: Any = None, name: str = "weight") -> Tensor:
    """The whole, detached tensor of a parameter (``source.<name>`` for a module), never a shard.

    A ``DTensor`` (FSDP2, tensor parallel) is all-gathered with ``full_tensor()``; a module under FSDP1 is read
    under ``summon_full_params``, an FSDP2 module unsharded (a copy is returned, valid after the block); a plain
    parameter is returned as is.

    Raises:
        ValueError: the parameter is a DeepSpeed-partitioned one (its local tensor is a placeholder).

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> full_weight(lin).shape, full_weight(lin, name="bias").shape
        (torch.Size([2, 3]), torch.Size([2]))
    """
    if isinstance(source, nn.Module):
        with full_parameters(trainer, source):
            tensor = getattr(source, name)
            if tensor is None:
                raise ValueError(f"{type(source).__name__} has no {name!r} tensor.")
            out = _whole(tensor)
            return out.clone() if _gathered else out  # a gathered view is freed when the block ends
    return _whole(source)


def _whole(tensor: Tensor) -> Tensor:
    if hasattr(tensor, "ds_id") or hasattr(tensor, "ds_shape"):
        raise ValueError("this parameter is partitioned by DeepSpeed; lightning-probes cannot read it in full.")
    tensor = tensor.detach()
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def check_strategy(trainer: Any, who: str, reads_weights: bool = False) -> None:
    """Refuse strategies whose parameters a monitor cannot read in full (DeepSpeed), at setup.

    Raises:
        ValueError: a DeepSpeed strategy, or (``reads_weights``) a strategy this module does not know to gather.
    """
    strategy = getattr(trainer, "strategy", None)
    names = [cls.__name__ for cls in type(strategy).__mro__]
    if any("DeepSpeed" in n for n in names):
        raise ValueError(
            f"{who} does not support DeepSpeed strategies ({type(strategy).__name__}): DeepSpeed partitions "
            "parameters, optimizer state and activations its own way, and the monitors can neither read its "
            "weights in full nor be sure a forward pass outside its engine sees whole parameters. Use "
            "strategy='ddp' or 'fsdp' (FSDPStrategy / ModelParallelStrategy), whose parameters are gathered."
        )
    if reads_weights and strategy is not None:
        from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

        if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy, FSDPStrategy, ModelParallelStrategy)):
            raise ValueError(
                f"{who} reads weights and cannot tell whether {type(strategy).__name__} holds them in full on each "
                "rank; it supports single-device, DDP (all flavours), FSDPStrategy and ModelParallelStrategy "
                "(FSDP2 / DTensor parameters are gathered with full_tensor())."
            )


def neuron_count(module: nn.Module) -> int:
    """How many neurons (input-weight rows) a neuron layer has, from its declared sizes (safe before sharding).

    Raises:
        TypeError: the module is not a layer of neurons (Linear, convolution, MultiheadAttention with its own
            projections).

    Example:
        >>> neuron_count(nn.Conv2d(3, 8, 3)), neuron_count(nn.MultiheadAttention(4, 2)), neuron_count(nn.Linear(2, 5))
        (8, 12, 5)
    """
    if isinstance(module, nn.Linear):
        return module.out_features
    if _is_conv(module):
        return module.out_channels  # type: ignore[return-value]
    if isinstance(module, nn.MultiheadAttention):
        _mha_check(module)
        return 3 * module.embed_dim
    weight = getattr(module, "weight", None)
    if isinstance(weight, Tensor) and weight.ndim == 2:
        return int(weight.shape[0])
    raise TypeError(_not_a_neuron_layer(module))


def neuron_weights(module: nn.Module, trainer: Any = None) -> tuple[Tensor, Tensor | None]:
    """A neuron layer's input weights as a matrix, in full: ``(W, b)`` of shapes (m, d) and (m,) (or None).

    Linear: its weight (m, d_in). Conv: weight (m, c_in/groups, *kernel) flattened to (m, c_in/groups · Πkernel)
    — one output channel is one neuron (with ``groups > 1`` each channel's row reads its own group's inputs).
    MultiheadAttention: ``in_proj_weight`` (3E, E) and ``in_proj_bias``. Any other module: its 2-D ``weight`` and 1-D
    ``bias`` if present. The rows are checked against the layer's declared size, so a shard is never measured.

    Raises:
        ValueError: a weight of an unexpected shape or one DeepSpeed partitions.
        TypeError: as :func:`neuron_count`.

    Example:
        >>> conv = nn.Conv2d(3, 8, kernel_size=(3, 5))
        >>> w, b = neuron_weights(conv)
        >>> tuple(w.shape), tuple(b.shape)
        ((8, 45), (8,))
        >>> torch.equal(w[2], conv.weight[2].flatten())
        True
    """
    m = neuron_count(module)
    if isinstance(module, nn.MultiheadAttention):
        weight_name, bias_name = "in_proj_weight", "in_proj_bias"
    else:
        weight_name, bias_name = "weight", "bias"
    with full_parameters(trainer, module):
        weight = full_weight(module, trainer, weight_name)
        bias = full_weight(module, trainer, bias_name) if getattr(module, bias_name, None) is not None else None
    if _is_conv(module):
        if weight.ndim < 3:
            raise ValueError(f"{type(module).__name__} weight has shape {tuple(weight.shape)}, not (out, in, *kernel).")
        weight = weight.reshape(weight.shape[0], -1)  # (m, c_in/groups · Πkernel)
    if weight.ndim != 2 or weight.shape[0] != m or (bias is not None and tuple(bias.shape) != (m,)):
        raise ValueError(
            f"{type(module).__name__} should hold {m} neuron rows but its weight reads as {tuple(weight.shape)}"
            + ("" if bias is None else f" (bias {tuple(bias.shape)})")
            + "; a sharded or partitioned parameter cannot be measured (see lightning_probes.weights)."
        )
    return weight, bias


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def _mha_check(module: nn.MultiheadAttention) -> None:
    if module.in_proj_weight is None:
        raise TypeError(
            "this MultiheadAttention has separate q/k/v projections (kdim or vdim differ from embed_dim), so its "
            "neurons do not share one input; name its out_proj (a Linear) instead."
        )


def _not_a_neuron_layer(module: nn.Module) -> str:
    return (
        f"a {type(module).__name__} is not a neuron layer: condensation reads nn.Linear, nn.Conv1d/2d/3d, "
        "nn.MultiheadAttention (in_proj_weight) or any module whose weight is a 2-D (neurons, inputs) matrix."
    )
