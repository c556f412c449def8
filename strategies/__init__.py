"""Training methods as Flower strategies, one calling convention for all.

The methods: `mpsl.MpslStrategy` (with its resume state in `mpsl_resume` and the label-attack
sample in `gradient_sample`), `fedavg.FederatedAveraging` (FedAvg, and FedCLIP over an adapter
model) and `centralized.Centralized`. What they share: the opening of a run (`opening`:
discovery, checks, run facts), the exchange of messages (`exchange`, `discovery`), the close of
each epoch (`epoch_report`), the global model's arrays and central evaluation (`global_model`),
and the base of strategies that run their own loop (`loop_strategy`).

Each is built as `Strategy(config, device, results)` and run as Flower's strategies are,
`strategy.start(grid=..., initial_arrays=..., num_rounds=..., timeout=..., evaluate_fn=...)`,
returning a `flwr.serverapp.strategy.Result`. Only `mpsl_flower.app` imports this package.
"""
