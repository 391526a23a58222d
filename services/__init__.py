"""The three deployable services: lead partner, insourcing partner, sync bridge."""
