"""What the server does in an MPSL step: one forward and one backward over all clients' tokens."""

from __future__ import annotations

import torch

from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.optimizer import new_optimizer, set_lr


class ServerSide:
    """The one shared server model and its Adam optimizer (its rate is set per epoch by the driver).

    `forward` concatenates every participating client's activations into one batch;
    `backward` takes each client's dL/dlogits (None for a client that dropped out after the
    forward), steps once, and returns each client its gradient at the cut layer.
    """

    def __init__(self, model: ServerModel, lr: float, device: torch.device) -> None:
        self.device = device
        self.model = model.to(device)
        self.optimizer = new_optimizer(self.model, lr)
        self._inputs: dict[str, torch.Tensor] = {}
        self._logits: torch.Tensor | None = None
        self._sizes: list[int] = []

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def forward(self, client_streams: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Logits for each client's slice of the concatenated batch, on the CPU."""
        self.model.train()
        self._sizes = [next(iter(streams.values())).shape[0] for streams in client_streams]
        self._inputs = {
            name: torch.cat([streams[name] for streams in client_streams]).to(self.device).requires_grad_(True)
            for name in client_streams[0]
        }
        self._logits = self.model(self._inputs)
        return [part.detach().cpu() for part in self._logits.split(self._sizes)]

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
            cut_grads = {name: tokens.grad.split(self._sizes) for name, tokens in self._inputs.items()}
            result = [
                {name: parts[i].cpu() for name, parts in cut_grads.items()} if logit_grads[i] is not None else None
                for i in range(len(self._sizes))
            ]
        self._inputs, self._logits, self._sizes = {}, None, []
        return result
