"""Training methods as Flower strategies: one module per method."""
