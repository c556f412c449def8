"""The message types of every method, and the ClientApp handler name of each: no torch, no numpy.

Apart from `mpsl_flower.wire` (which re-exports them with the record keys) so that the ClientApp
module can register its handlers without importing anything heavy (`mpsl_flower.client_app`).
"""

FORWARD = "train.forward"
LOSS_GRAD = "train.loss_grad"
END_EPOCH = "train.end_epoch"
FEDAVG_TRAIN = "train"  # Flower's FedAvg sends plain `train` messages
PARTITION_INFO = "query.partition_info"
PING = "query.ping"


def action(message_type: str) -> str:
    """The ClientApp handler's name for a message type: `train.forward` -> `forward`."""
    return message_type.split(".", 1)[1]
