"""The split-learning core in plain PyTorch: what a client and the server do in an MPSL step, the baselines'
local epoch, the batch schedule, averaging, evaluation and the model inputs. No Flower here, so a GPU box
without flwr runs it (`runner.InProcessRunner` drives N clients in one process)."""
