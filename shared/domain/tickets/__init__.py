"""The ticket core both partner services share: tickets and their notes, time entries, charges and attachments."""
