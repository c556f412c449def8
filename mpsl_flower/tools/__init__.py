"""Command-line tools a user runs by hand (`python -m mpsl_flower.tools.<name>`): the overhead and scaling
studies, and the deployment helper that writes certificates and keys and prints the commands."""
