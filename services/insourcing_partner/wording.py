"""What the insourcing partner's system notes and e-mails say, apart from the logic that decides to
write them (services/insourcing_partner/received_work.py)."""


def accepted(lead_partner_name: str, lead_ticket: str, instructions: str) -> tuple[str, str]:
    details = f"Insourced from {lead_partner_name}, their ticket {lead_ticket}."
    if instructions:
        details += f"\nInstructions: {instructions}"
    return "Received work accepted", details


def insource_complete(lead_partner_name: str) -> tuple[str, str]:
    return "Insource Complete", (
        f"Asked {lead_partner_name} to approve the work. Synchronization is suspended; "
        "items added from now on stay on this ticket.")


def requested_mail(lead_partner_name: str, lead_ticket: str, title: str, instructions: str) -> tuple[str, str]:
    return f"New work from {lead_partner_name}: {lead_ticket} {title}", (
        f"{lead_partner_name} asks you to take their ticket {lead_ticket} "
        f"({title}). Instructions: {instructions or '(none)'}. "
        "Accept or decline it under Received Work: Pending.")


def canceled_note(lead_partner_name: str) -> tuple[str, str]:
    return "Outsourcing canceled", f"{lead_partner_name} canceled the request; nothing synchronizes any more."


def canceled_mail(lead_partner_name: str, lead_ticket: str, title: str) -> tuple[str, str]:
    return f"Work canceled by {lead_partner_name}: {lead_ticket} {title}", (
        f"{lead_partner_name} canceled their request for ticket {lead_ticket} ({title}).")


def rejected_note(lead_partner_name: str, reason: str) -> tuple[str, str]:
    return "Rejected by the lead partner", (
        f"{lead_partner_name} rejected the work: {reason}\nSynchronization resumes; "
        "address the concerns and submit Insource Complete again.")


def rejected_mail(lead_partner_name: str, number: str, title: str, lead_ticket: str, reason: str) -> tuple[str, str]:
    return f"Work rejected by {lead_partner_name}: {number} {title}", (
        f"{lead_partner_name} rejected the work on your ticket {number} ({title}), "
        f"their ticket {lead_ticket}. Reason: {reason}\n"
        "The Insource Status is In Progress again and synchronization resumes.")


def _how(approved: bool) -> str:
    return "approved your work" if approved else "set the outsourcing to Complete"


def complete_note(lead_partner_name: str, approved: bool) -> tuple[str, str]:
    return ("Insource Complete: approved" if approved else "Insource Status Complete"), (
        f"{lead_partner_name} {_how(approved)}. The tickets are no longer synchronized; everything added "
        "before now is read-only. Bill the lead partner as your procedures say.")


def complete_mail(lead_partner_name: str, number: str, title: str, lead_ticket: str, approved: bool) -> tuple[str, str]:
    return f"Insource Complete: {number} {title}", (
        f"{lead_partner_name} {_how(approved)} on your ticket {number} ({title}), their ticket "
        f"{lead_ticket}. The Insource Status is Complete and the tickets are no longer "
        "synchronized. The ticket status itself is unchanged.")


def partner_left_note(lead_partner_name: str, lead_partner_id: str) -> tuple[str, str]:
    return "Lead partner left", (
        f"{lead_partner_name} ({lead_partner_id}) left the hub: this work is canceled and nothing synchronizes "
        "any more. Everything added before now is read-only.")


def partner_left_mail(lead_partner_name: str, lead_partner_id: str, lead_ticket: str, title: str) -> tuple[str, str]:
    return f"Work canceled ({lead_partner_name} left the hub): {lead_ticket} {title}", (
        f"{lead_partner_name} ({lead_partner_id}) left the hub, so their request for ticket {lead_ticket} "
        f"({title}) is Canceled and nothing synchronizes any more. The ticket status itself is unchanged.")


def invoiced_note(lead_partner_name: str, invoice_number: str, total: str, currency: str | None) -> tuple[str, str]:
    amount = f"{total} {currency}" if currency else total
    return "Invoiced", f"Invoice {invoice_number} sent to {lead_partner_name} for this work: {amount}."


def statements_differ(lead_partner_name: str, what: str) -> tuple[str, str]:
    return "Statements differ", (
        f"The work with {lead_partner_name} ended, but the two sides do not hold the same statement: {what}."
        " Settle the difference with the lead partner before invoicing.")
