"""The lead partner's ticket service: owns the customer's tickets and outsources them."""
