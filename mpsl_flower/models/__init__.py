"""The model: client-side tokenizers, the server-side encoder, fusion, readout and head, the frozen text
encoders, the factory that builds them from a run config, and the weights (official files, checkpoint
readers, the trainable set as arrays). Plain PyTorch, no Flower."""
