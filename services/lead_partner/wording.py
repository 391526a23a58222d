"""What the lead partner's system notes and e-mails say, apart from the logic that decides to
write them (services/lead_partner/outsourcing.py)."""
from decimal import Decimal


def outsourced(partner_name: str) -> tuple[str, str]:
    return "Outsourced", f"Outsourced to {partner_name}; Outsource Status Assigned."


def canceled(partner_name: str) -> tuple[str, str]:
    return "Outsourcing canceled", f"The request to {partner_name} was canceled."


def rejected(partner_name: str, reason: str) -> tuple[str, str]:
    return "Outsourced work rejected", f"Rejected the work of {partner_name}: {reason}\nSynchronization resumes."


def _finished_how(approved: bool) -> str:
    return "approved the work of" if approved else "set the outsourcing to Complete for"


def complete_note(partner_name: str, partner_ticket: str | None, approved: bool, hours: Decimal) -> tuple[str, str]:
    return "Outsourcing complete", (
        f"The lead partner {_finished_how(approved)} {partner_name} (their ticket {partner_ticket}). "
        f"The tickets are no longer synchronized. Partner hours: {hours} h.")


def complete_mail(number: str, title: str, partner_name: str, partner_ticket: str | None, approved: bool,
                  hours: Decimal) -> tuple[str, str]:
    return f"Outsourcing complete: {number} {title}", (
        f"The outsourcing of ticket {number} ({title}) to {partner_name} is Complete: "
        f"the lead partner {_finished_how(approved)} the partner's work. The tickets are no longer synchronized. "
        f"Partner ticket: {partner_ticket}. Partner hours: {hours} h.")


def partner_labor(partner_name: str, partner_ticket: str | None) -> tuple[str, str]:
    """The name and description of the charge that sums the partner's hours."""
    return f"Outsourced labor: {partner_name}", f"Time entries of {partner_name} on their ticket {partner_ticket}"


def waiting_approval_note(partner_name: str) -> tuple[str, str]:
    return "Insource Complete", (
        f"{partner_name} reports the work done and asks for approval. Synchronization is suspended.")


def waiting_approval_mail(number: str, title: str, partner_name: str, partner_ticket: str | None) -> tuple[str, str]:
    return f"Approval requested: {number} {title}", (
        f"{partner_name} has completed the work on ticket {number} ({title}) (their ticket {partner_ticket}) "
        "and asks you to approve or reject it. Synchronization is suspended until you decide.")


def accepted_too_late_and_ended(partner_name: str, partner_ticket: str) -> tuple[str, str]:
    return "Outsourcing ended", (
        f"{partner_name} accepted the ticket as {partner_ticket}. The cancel reached the partner too late and "
        "the ticket is outsourced again, so that earlier outsourcing was set to Complete.")


def accepted_note(partner_name: str, partner_ticket: str, cancel_too_late: bool) -> tuple[str, str]:
    note = f"{partner_name} accepted the ticket as {partner_ticket}."
    if cancel_too_late:
        note += " The cancel reached the partner too late; the outsourcing goes on."
    return "Outsourcing accepted", note


def accepted_mail(number: str, title: str, partner_name: str, partner_ticket: str) -> tuple[str, str]:
    return f"Outsourcing accepted: {number} {title}", (
        f"{partner_name} accepted ticket {number} ({title}) as their ticket {partner_ticket}. "
        "Notes, attachments, charges and time entries now synchronize.")


def declined_note(partner_name: str, reason: str) -> tuple[str, str]:
    return "Outsourcing declined", f"{partner_name} declined the ticket: {reason}"


def declined_mail(number: str, title: str, partner_name: str, reason: str) -> tuple[str, str]:
    return f"Outsourcing declined: {number} {title}", f"{partner_name} declined ticket {number} ({title}). Reason: {reason}"


def unknown_partner(partner_id: str, known: list[str], total: int) -> str:
    """The refusal of an outsourcing to a partner the hub's directory does not hold."""
    if total == 0:
        return (f"unknown partner {partner_id!r}: the hub has not sent any insourcing partner yet, "
                "so this lead partner may not outsource to anyone")
    more = f" and {total - len(known)} more (GET /api/partners)" if total > len(known) else ""
    return f"unknown partner {partner_id!r}; this lead partner may outsource to: {', '.join(known)}{more}"


def partner_left_note(partner_name: str, partner_id: str) -> tuple[str, str]:
    return "Insourcing partner left", (
        f"{partner_name} ({partner_id}) left the hub: this outsourcing is canceled and nothing synchronizes "
        "any more. What they wrote stays on the ticket, read-only; the ticket may be outsourced again.")


def partner_left_mail(number: str, title: str, partner_name: str, partner_id: str,
                      partner_ticket: str | None) -> tuple[str, str]:
    theirs = f" (their ticket {partner_ticket})" if partner_ticket else ""
    return f"Outsourcing canceled: {number} {title}", (
        f"{partner_name} ({partner_id}) left the hub, so the outsourcing of ticket {number} ({title}){theirs} "
        "is Canceled and nothing synchronizes any more. You may outsource the ticket again to another partner.")


def invoiced_note(partner_name: str, invoice_number: str, total: str, currency: str | None) -> tuple[str, str]:
    amount = f"{total} {currency}" if currency else total
    return "Invoiced", f"{partner_name} invoiced this work: invoice {invoice_number}, {amount}."


def statement_refused(partner_name: str, reason: str) -> tuple[str, str]:
    return "Statement refused", (
        f"The statement {partner_name} sent with its Insource Complete was not kept: {reason}. Approve waits for a"
        " statement this side can read; Complete freezes one of what has crossed.")
