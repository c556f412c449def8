"""Training methods as Flower strategies: one module per method, one calling convention.

Each is built as `Strategy(config, device, results)` and run as Flower's strategies are,
`strategy.start(grid=..., initial_arrays=..., num_rounds=..., timeout=..., evaluate_fn=...)`,
returning a `flwr.serverapp.strategy.Result`.
"""
