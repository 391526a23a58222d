"""Domain: the ticket core, the outsourcing workflow and the partners' mirroring rules."""
