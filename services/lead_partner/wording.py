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
