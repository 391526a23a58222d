"""The insourcing partner's ticket service: receives outsourced work and does it."""
