"""What one client does in an MPSL step: tokenize, compute its loss gradient, apply the cut gradient."""

from __future__ import annotations

import numpy as np
import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.models.factory import client_device, new_client_model
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.models.trainable import (
    load_optimizer_arrays,
    load_trainable,
    optimizer_arrays,
    trainable_arrays,
)
from mpsl_flower.split.optimizer import new_optimizer, set_lr
from tasks.objectives import loss_sum_and_correct

OPTIMIZER_PREFIX = "optimizer."
CPU = torch.device("cpu")


class ClientSide:
    """A client's tokenizers and its own Adam optimizer, on the client's device.

    The forward pass is recomputed when the cut-layer gradient arrives instead of keeping the
    autograd graph: under Flower the client process need not survive between two messages,
    and re-running light tokenizers costs less than any way of keeping the graph.

    Tensors go in and come out on the CPU, as messages carry them; the weights, the Adam state and
    the computation stay on `device`.
    """

    def __init__(self, model: ClientModel, lr: float, device: torch.device = CPU) -> None:
        self.device = device
        self.model = model.to(device)
        self.optimizer = new_optimizer(self.model, lr)

    def _here(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device) for name, tensor in tensors.items()}

    @torch.no_grad()
    def smashed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The activations sent to the server (one tensor per stream)."""
        return {name: stream.cpu() for name, stream in self.model(self._here(inputs)).items()}

    def head_gradient(
        self, objective: str, outputs: torch.Tensor, labels: torch.Tensor, total_batch: int, lr: float
    ) -> tuple[torch.Tensor, float, int]:
        """`label-privacy='u-shaped'`: run this client's head on the server's features, step the head, and
        return dL/dfeatures (what goes back to the server), the summed loss and the correct predictions.

        The head steps here, at once; the tokenizers step when the cut gradient arrives. Adam keeps
        per-parameter state and skips parameters without a gradient, so two partial steps equal one.
        """
        self.optimizer.zero_grad(set_to_none=True)
        outputs, labels = outputs.to(self.device), labels.to(self.device)
        grad, loss_sum, correct = loss_gradient(objective, outputs, labels, total_batch, self.model.head)
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        return grad.cpu(), loss_sum, correct

    def apply_cut_grad(self, inputs: dict[str, torch.Tensor], cut_grad: dict[str, torch.Tensor], lr: float) -> None:
        """Back-propagate the server's gradient at the cut layer and take one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        streams, cut_grad = self.model(self._here(inputs)), self._here(cut_grad)
        torch.autograd.backward([streams[name] for name in cut_grad], [cut_grad[name] for name in cut_grad])
        set_lr(self.optimizer, lr)
        self.optimizer.step()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Trainable weights and optimizer state as numpy arrays, to persist between messages."""
        optimizer = {OPTIMIZER_PREFIX + k: v for k, v in optimizer_arrays(self.optimizer).items()}
        return {**trainable_arrays(self.model), **optimizer}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state_arrays` saved."""
        weights = {k: v for k, v in arrays.items() if not k.startswith(OPTIMIZER_PREFIX)}
        optimizer = {k[len(OPTIMIZER_PREFIX) :]: v for k, v in arrays.items() if k.startswith(OPTIMIZER_PREFIX)}
        load_trainable(self.model, weights)
        load_optimizer_arrays(self.optimizer, optimizer)


def new_client_side(config: RunConfig, pretrained: bool = True, device: torch.device | None = None) -> ClientSide:
    """A client's side at the start of a run (`pretrained=False`: its weights are about to be replaced), on
    `device` (default: this process's client device, `models.factory.client_device`)."""
    return ClientSide(new_client_model(config, pretrained), config.learning_rate, device or client_device(config))


def loss_gradient(
    objective: str,
    outputs: torch.Tensor,
    labels: torch.Tensor,
    total_batch: int,
    head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, float, int]:
    """dL/doutputs of this client's share of the batch-mean loss (logits, retrieval embeddings, or the
    features its own `head` scores); the head's weight gradients are left in its parameters.

    The client's loss is weighted by m_i / sum(m), i.e. its summed loss divided by the global
    batch, so that the server's total equals the mean over the whole batch.
    Returns (gradient, summed loss, correct predictions).
    """
    outputs = outputs.detach().float().requires_grad_(True)
    loss_sum, correct = loss_sum_and_correct(objective, head(outputs) if head is not None else outputs, labels)
    (loss_sum / total_batch).backward()
    return outputs.grad, float(loss_sum.detach()), correct
