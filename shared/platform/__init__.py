"""Platform: database, Kafka, outbox, inbox, signatures, the web shell, tokens; it imports no domain module."""
