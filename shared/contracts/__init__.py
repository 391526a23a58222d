"""Contracts: the messages the three services exchange, versioned."""
