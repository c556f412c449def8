"""What the server does in an MPSL step: one forward and one backward over all clients' tokens."""

from __future__ import annotations

import torch

from mpsl_flower.config import SERVER_PRECISIONS, RunConfig
from mpsl_flower.models.factory import new_server_model
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.optimizer import new_optimizer, set_lr


class ServerSide:
    """The one shared server model and its Adam optimizer (its rate is set per epoch by the driver).

    `forward` concatenates every participating client's activations into one batch (float32, or
    float16/bfloat16 as they came off the wire: they are upcast on the device, after the copy);
    `backward` takes each client's dL/dlogits (None for a client that dropped out after the
    forward), steps once, and returns each client its gradient at the cut layer.

    `precision="bf16"` runs the forward under bfloat16 autocast (matmuls in bf16, weights,
    Adam state and the returned tensors in fp32: the optimizer keeps fp32 master weights);
    `compile_model=True` runs it through `torch.compile`. Both are for GPUs: the original
    trains in fp32, the default.
    """

    def __init__(
        self,
        model: ServerModel,
        lr: float,
        device: torch.device,
        precision: str = "fp32",
        compile_model: bool = False,
    ) -> None:
        if precision not in SERVER_PRECISIONS:
            raise ValueError(f"server precision {precision!r} is not one of {SERVER_PRECISIONS}")
        self.device = device
        self.model = model.to(device)
        self.optimizer = new_optimizer(self.model, lr)
        self.precision = precision
        self._run = torch.compile(self.model) if compile_model else self.model
        self._inputs: dict[str, torch.Tensor] = {}
        self._logits: torch.Tensor | None = None
        self._sizes: list[int] = []

    def _to_host(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the CPU. From a GPU it is copied into page-locked memory, several times faster than
        into pageable memory for the 100s of MB of a step's cut gradients; PyTorch's caching host
        allocator hands the block out again once the tensor is freed, so no buffer is shared."""
        if tensor.device.type != "cuda":
            return tensor.cpu()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        return host.copy_(tensor)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def forward(self, client_streams: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Logits for each client's slice of the concatenated batch, on the CPU."""
        self.model.train()
        self._sizes = [next(iter(streams.values())).shape[0] for streams in client_streams]
        self._inputs = {  # each client's tensor to the device (16-bit floats upcast there), one concatenation
            name: torch.cat([streams[name].to(self.device, non_blocking=True).float() for streams in client_streams])
            for name in client_streams[0]
        }
        for tokens in self._inputs.values():
            tokens.requires_grad_(True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            self._logits = self._run(self._inputs).float()
        return list(self._to_host(self._logits.detach()).split(self._sizes))  # one copy off the device, then views

    def backward(self, logit_grads: list[torch.Tensor | None]) -> list[dict[str, torch.Tensor] | None]:
        """One backward and optimizer step; the cut-layer gradient of each client that sent one.

        Clients that dropped out contribute nothing; the others' gradients are rescaled so the
        step is still the mean over the samples that took part.
        """
        if self._logits is None:
            raise RuntimeError("backward() called without a pending forward()")
        total = sum(self._sizes)
        kept = sum(size for size, grad in zip(self._sizes, logit_grads) if grad is not None)
        result: list[dict[str, torch.Tensor] | None] = [None] * len(self._sizes)
        if kept:
            grads = [
                grad.to(self.device)
                if grad is not None
                else torch.zeros(size, *self._logits.shape[1:], device=self.device)
                for size, grad in zip(self._sizes, logit_grads)
            ]
            self.optimizer.zero_grad(set_to_none=True)
            self._logits.backward(torch.cat(grads) * (total / kept))
            self.optimizer.step()
            cut_grads = {name: self._to_host(tokens.grad).split(self._sizes) for name, tokens in self._inputs.items()}
            result = [
                {name: parts[i] for name, parts in cut_grads.items()} if logit_grads[i] is not None else None
                for i in range(len(self._sizes))
            ]
        self._inputs, self._logits, self._sizes = {}, None, []
        return result


def new_server_side(config: RunConfig, device: torch.device) -> ServerSide:
    """The run's server side on `device`, at its precision, compiled when the config asks."""
    return ServerSide(
        new_server_model(config), config.learning_rate, device, config.server_precision, config.compile_server
    )
