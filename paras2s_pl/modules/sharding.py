"""FSDP2 (``fully_shard``) for the training modules, under Lightning's ``ModelParallelStrategy``.

Why FSDP2 and not Lightning's ``FSDPStrategy`` (FSDP1, ``FullyShardedDataParallel``): PyTorch
recommends FSDP2 for new code and keeps FSDP1 only for existing users (the ``fully_shard``
docs, torch 2.13); FSDP2 shards each parameter on dim 0 as a ``DTensor`` (no flat
parameters), so frozen and trainable tensors may share a unit (LoRA), the state dicts are
sharded without all-gathers, the optimizer works on the sharded parameters directly, and
``torch.nn.utils.clip_grad_norm_`` computes the global norm over ``DTensor`` gradients (no
special root call). Lightning drives it through ``ModelParallelStrategy`` (here its subclass
:class:`FSDP2Strategy`, all ranks data-parallel) with automatic optimisation, distributed
(per-rank) checkpoints and ``--ckpt_path`` resume; the module applies the parallelism itself
in ``configure_model`` (this file). The same strategy runs
on CPU with gloo, which is how ``tests/test_multiprocess.py`` proves 2-rank training here.

Layout: one FSDP unit per decoder layer (every instance of a class named in
``layer_classes``: the policy's trunk and MIMO layers are ``Qwen2DecoderLayer``), then the
root (embeddings, norms, heads). FULL_SHARD (``reshard_after_forward=True``: ZeRO-3).
A frozen model (GRPO's reference) is sharded the same way; it has no gradients or
optimizer state, and each forward gathers its layers one at a time.

Every rank must call a sharded model's forward the same number of times (each call gathers
shards collectively); :func:`paras2s_pl.models.sampling.generate` keeps a finished rank
stepping until every rank is done for that reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from paras2s_pl.errors import UsageError

#: Decoder-layer classes of the backends (by name: no import of every model family here).
LAYER_CLASSES = (
    "Qwen2DecoderLayer",  # the dual-stream policy (trunk + MIMO branch), the tokens reward model
    "Qwen2_5OmniDecoderLayer",  # the Omni reward model's thinker
    "Qwen2_5OmniAudioEncoderLayer",
)


def uses_fsdp2(strategy: Any) -> bool:
    """Whether ``strategy`` is FSDP2 (``ModelParallelStrategy`` or :class:`FSDP2Strategy`)."""
    return isinstance(strategy, ModelParallelStrategy)


def refuse_fsdp1(strategy: Any) -> None:
    """Stop at start-up under Lightning's ``FSDPStrategy`` (FSDP1), naming the fix."""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(strategy, FSDPStrategy):
        raise UsageError(
            "trainer.strategy FSDPStrategy (FSDP1) is not supported: use class_path "
            "paras2s_pl.modules.sharding.FSDP2Strategy (FSDP2, as configs/sft.yaml)"
        )


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` with every rank data-parallel (the default here).

    ``ModelParallelStrategy``'s "auto" mesh is (nodes, devices per node) as (data-parallel,
    tensor-parallel), so its distributed samplers would give every device of a node the same
    batches. This package uses no tensor parallelism: here the data-parallel size is all
    ranks (devices x nodes) and the tensor-parallel size 1, so each rank reads its own
    samples and the modules shard over all ranks (FULL_SHARD).
    """

    def setup_environment(self) -> None:  # noqa: D102
        if self._tensor_parallel_size == "auto":
            self._tensor_parallel_size = 1
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def data_parallel_mesh(mesh: Any) -> Any:
    """The data-parallel part of the strategy's mesh; refuses tensor parallelism."""
    names = getattr(mesh, "mesh_dim_names", None) or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() != 1:
        raise UsageError(
            f"trainer.strategy: a tensor-parallel size of {mesh['tensor_parallel'].size()} "
            "(ModelParallelStrategy's default is the devices per node); this package shards "
            "data-parallel only: use class_path paras2s_pl.modules.sharding.FSDP2Strategy"
        )
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def mixed_precision(precision: Any) -> Any:
    """FSDP2's policy for the trainer's ``precision``.

    ``bf16-mixed``: shards (master weights, optimizer state) stay as loaded (float32), each
    unit is gathered and computes in bfloat16 and gradients are reduced in float32 (half the
    gather memory and traffic of float32; Lightning's autocast then finds bf16 already).
    Anything else: no casting.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if str(precision) == "bf16-mixed":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_layers(
    model: nn.Module,
    mesh: Any,
    layer_classes: Iterable[str] = LAYER_CLASSES,
    precision: Any = None,
) -> int:
    """``fully_shard`` every decoder layer of ``model``, then ``model`` itself.

    ``precision``: the trainer's (:func:`mixed_precision`). Returns the number of layer
    units; raises ``ValueError`` when ``model`` has none (the root alone would gather the
    whole model at once, which defeats sharding).
    """
    from torch.distributed.fsdp import fully_shard

    kwargs = {"mesh": data_parallel_mesh(mesh), "mp_policy": mixed_precision(precision)}
    wanted = set(layer_classes)
    layers = [m for m in model.modules() if type(m).__name__ in wanted]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no decoder layer of the classes {sorted(wanted)} to "
            "shard; name its layer class in paras2s_pl.modules.sharding.LAYER_CLASSES"
        )
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return len(layers)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of a ``fully_shard``-ed model, on CPU (a collective call)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def reshard_all(model: nn.Module) -> None:
    """Put every FSDP2 unit of ``model`` back to its sharded parameters (no communication).

    FSDP2 leaves the root unit gathered after a forward without backward (validation), so
    its ``named_parameters()`` are then full plain tensors that the next reshard drops:
    call this before reading or writing sharded parameters outside a training step.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a (replicated or partial) ``DTensor`` result, e.g. a grad norm."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor
