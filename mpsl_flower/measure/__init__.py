"""Measurement of a method, without Flower: client and server compute and bytes on the wire (accounting), and
what a curious server can learn of the labels (label attacks). Used by strategies, tools and notebooks."""
