"""The split-learning core in plain PyTorch: no Flower here, so a GPU box without flwr runs it."""
