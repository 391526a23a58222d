"""What the lead partner, the insourcing partner and the sync bridge must agree on:
message contracts, the ticket core, outbox/inbox, Kafka and database plumbing."""
