"""What a client node (a SuperNode, or a virtual client in simulation) keeps between messages: its progress
record, its client state in a node-local store, and its training data. Run inside the ClientApp."""
