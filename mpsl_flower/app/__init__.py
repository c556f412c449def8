"""Flower's entry points, run by Flower (or by a user's command): the ServerApp, the ClientApp and its
handlers, the in-process simulation helper and the centralized baseline's command line. The only part of
`mpsl_flower` that imports `strategies`."""
