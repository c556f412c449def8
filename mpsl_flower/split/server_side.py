"""What the server does in an MPSL step: one forward and one backward over all clients' tokens."""

from __future__ import annotations

from collections.abc import Hashable

import torch

from mpsl_flower.config import SERVER_PRECISIONS, RunConfig
from mpsl_flower.models.factory import new_server_model
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.optimizer import new_optimizer, set_lr


class _Staging:
    """Clients' activations on their way to the device, copied as each reply arrives while the server still
    waits for the others, so that the step itself does not wait for the copy in.

    On CUDA each client's tensors go to page-locked memory (a host copy, unless they already are there)
    and from there to the device with non-blocking copies on a side stream, whose event marks when they
    are in; the step's stream waits on that event, not the host. The caching allocator gave the device
    tensors to the side stream, so `take` records their use on the step's stream: their memory is not
    handed out again before the step has read them. (The page-locked host blocks need nothing: the
    caching host allocator reuses one only after the copy out of it is done.) Elsewhere the tensors are
    kept as they are: `ServerSide.forward` moves them as it moves unstaged ones.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._clients: dict[Hashable, tuple[dict[str, torch.Tensor], torch.cuda.Event | None]] = {}

    def put(self, key: Hashable, streams: dict[str, torch.Tensor]) -> None:
        if key in self._clients:
            raise KeyError(f"client {key!r} is already staged for this step: stage each client once per step")
        elsewhere = [name for name, tensor in streams.items() if tensor.device.type != "cpu"]
        if elsewhere:
            raise ValueError(
                f"client {key!r}: stage() takes CPU tensors, as they come off the wire; {elsewhere} are not"
            )
        if self._stream is None:
            self._clients[key] = (dict(streams), None)
            return
        with torch.cuda.stream(self._stream):
            moved = {
                name: (tensor if tensor.is_pinned() else tensor.pin_memory()).to(self.device, non_blocking=True)
                for name, tensor in streams.items()
            }
            self._clients[key] = (moved, self._stream.record_event())

    def take(self, order: list[Hashable]) -> list[dict[str, torch.Tensor]]:
        """The tensors of the clients in `order`, ready for the current stream; every staged client leaves
        the staging, so one staged and then dropped (absent from `order`) leaves nothing behind."""
        missing = [key for key in order if key not in self._clients]
        if missing:
            raise KeyError(f"clients {missing} are not staged: stage() each client of the step before forward_staged()")
        clients, self._clients = self._clients, {}
        taken = [clients[key] for key in order]
        if self._stream is not None:
            current = torch.cuda.current_stream(self.device)
            for streams, copied in taken:
                current.wait_event(copied)
                for tensor in streams.values():
                    tensor.record_stream(current)
        return [streams for streams, _ in taken]


class ServerSide:
    """The one shared server model and its Adam optimizer (its rate is set per epoch by the driver).

    `forward` concatenates every participating client's activations into one batch (float32, or
    float16/bfloat16 as they came off the wire: they are upcast on the device, after the copy);
    `stage` starts one client's copy to the device as soon as its reply is in, and `forward_staged`
    is `forward` over the staged clients, whose copies overlapped the wait for the others;
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
        self._staging = _Staging(device)
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

    def stage(self, key: Hashable, streams: dict[str, torch.Tensor]) -> None:
        """Start copying one client's activations (CPU tensors, 16-bit floats as they came) to the device;
        `forward_staged` names the client by `key`."""
        self._staging.put(key, streams)

    def forward_staged(self, order: list[Hashable]) -> list[torch.Tensor]:
        """`forward` over the staged clients that `order` names, in that order. A client staged but not in
        `order` (dropped after its reply arrived) is let go: the next step starts with none staged."""
        return self.forward(self._staging.take(order))

    def forward(self, client_streams: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Logits for each client's slice of the concatenated batch, on the CPU."""
        self.model.train()
        self._sizes = [next(iter(streams.values())).shape[0] for streams in client_streams]
        self._inputs = {  # each client's tensor to the device (no-op when staged), one concatenation, upcast there
            name: torch.cat([streams[name].to(self.device, non_blocking=True) for streams in client_streams]).float()
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
