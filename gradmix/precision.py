"""How a training step runs on its device: mixed precision, memory format and compilation.

The three speed switches of the ``train`` section (docs/speed.md has what each costs, measured):

* ``train.precision``: ``fp32`` (default) | ``bf16`` | ``fp16``. The forward passes of a step run
  under :func:`torch.autocast` (device type from the tensors: ``cuda`` or ``cpu``; bf16 autocast
  works on the CPU too), the training forward and the attribution / saliency passes alike (they run
  inside the step's loss). Parameters, optimiser state and gradients stay float32. What is
  numerically delicate runs in float32 whatever the switch: the losses (:mod:`gradmix.losses`, the
  contrastive losses) and the attribution maps (:func:`gradmix.attribution.cam` and everything after
  it: reduction over channels, normalisation, upsampling, the arg-max). ``fp16`` adds torch's
  :class:`torch.amp.GradScaler` (dynamic loss scaling; its state is part of a run's checkpoint) and
  fused optimisers (:func:`fused_optimizer`), whose step reads the scaler's overflow flag on the
  device: torch's scaler with an unfused optimiser reads it on the host, a synchronisation per step.
* ``train.channels_last``: the model's weights and every batch in channels-last memory format
  (NHWC), which cuDNN's tensor-core convolutions prefer; mostly slower on a CPU.
* ``train.compile``: :func:`torch.compile` of each named stage of the model (:func:`prepare_model`),
  not of the whole model: the attribution passes hook the stages' outputs, and module hooks added to
  an already compiled module are not seen by the compiled code. Hooks on a stage run outside its
  compiled forward, so maps stay correct. Compilation happens during the first steps of each new
  shape and module mode (train, attribution, eval); the start-up cost is in docs/speed.md. Compiling
  turns off AOTAutograd's donated buffers (``torch._functorch.config.donated_buffer``, a memory
  saving), which forbid a second backward through a compiled graph: the shared attribution pass
  takes a partial backward with ``retain_graph`` before the clean loss's backward.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The numeric side of a training step on ``device`` with ``precision`` (module docstring).

    ``autocast(x)``: the context of a forward pass on x's device; ``backward(loss)``: loss.backward()
    (scaled for fp16); ``step(opt)``: the optimiser step (through the scaler for fp16);
    ``batch(x)``: a batch in the model's memory format; ``state_dict()`` / ``load_state_dict()``: the
    scaler's state (None without one), for checkpoints.
    """

    def __init__(self, precision: str = "fp32", device: torch.device | str = "cpu", channels_last: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision: unknown value {precision!r}; valid: {list(PRECISIONS)}")
        self.name = precision
        self.dtype = DTYPES.get(precision)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    @classmethod
    def from_config(cls, t, device) -> "Precision":
        """From a ``train`` section (gradmix.config.TrainConfig)."""
        return cls(t.precision, device, t.channels_last)

    def autocast(self, x: torch.Tensor | None = None):
        """Autocast to the switch's dtype on the device of ``x`` (default: the run's); a no-op for fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        kind = (x.device if x is not None else self.device).type
        return torch.autocast(device_type=kind, dtype=self.dtype)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) in the model's memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Accumulate the gradient of ``loss`` into the parameters' ``.grad`` (scaled with fp16)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(retain_graph=retain_graph)

    def loss_scale(self, like: torch.Tensor) -> torch.Tensor | float:
        """The factor :meth:`backward` multiplies a loss by: a device tensor with fp16 (read without a
        host synchronisation), else 1.0."""
        if self.scaler is None:
            return 1.0
        return self.scaler.scale(torch.ones((), device=like.device))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step: with fp16 through the scaler (a step with inf/NaN gradients is skipped and
        the scale lowered), then the scale update."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if (state is None) != (self.scaler is None):
            raise KeyError(f"gradient scaler state {'missing' if state is None else 'present'} for precision {self.name}")
        if state is not None:
            self.scaler.load_state_dict(state)


def fused_optimizer(precision: str) -> bool:
    """Whether optimisers are built fused: with fp16, so that the scaler's step needs no host sync."""
    return precision == "fp16"


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False,
                  classifier: nn.Module | None = None) -> nn.Module:
    """``model`` (in place, returned) in channels-last format and/or with each stage of ``classifier``
    (default ``model``; a :class:`gradmix.models.Classifier`, e.g. a contrastive net's encoder)
    compiled by :func:`torch.compile`. The state dict's keys do not change (run files and checkpoints
    read the same)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False     # the shared pass backwards twice through one graph
        import torch._dynamo.config as dynamo_config

        net = classifier if classifier is not None else model
        # dynamo keeps its compiled variants per code object, and stages of one type (nn.Sequential)
        # share theirs: each stage, mode (train, eval, no_grad) and batch shape is a variant, and past
        # recompile_limit (8) dynamo silently runs the stage uncompiled. Allow 8 per stage.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 8 * len(net.stages))
        for name in net.stages:
            stage = net.stage(name)
            stage.forward = torch.compile(stage.forward)
    return model
