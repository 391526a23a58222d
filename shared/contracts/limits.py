"""The limits of SPEC section 5, in one place: the partners' API, the bridge and the message contracts
all check against these numbers, so whatever one side accepts the others accept too."""

MAX_TITLE = 255  # titles, names, resources, file names, content types
MAX_TEXT = 32_000  # note bodies, summaries, descriptions
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_HOURS = 24  # per time entry
# Quantities, prices and rates: exact decimals of at most 14 digits, 4 of them after the point.
AMOUNT_DIGITS, AMOUNT_DECIMALS = 14, 4
MAX_AMOUNT = 10 ** (AMOUNT_DIGITS - AMOUNT_DECIMALS)
