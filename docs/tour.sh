#!/usr/bin/env bash
# The outsourcing workflow through the API, start to finish, as the README tells it: run it as is after
# `make run` (bash docs/tour.sh). It waits for each state it needs, as a client of two companies must:
# what one partner does reaches the other through Kafka and the bridge, a moment later, never at once.
#
# Tokens come from var/tokens.env (written by `make run`), URLs are make run's; the environment overrides
# any of them: LEAD_URL, INSOURCING_URL, BRIDGE_URL, LEAD_API_TOKEN, INSOURCING_API_TOKEN, BRIDGE_API_TOKEN,
# TOKENS_FILE, INSOURCING_PARTNER_ID (the partner to outsource to), TOUR_TIMEOUT (seconds to wait for
# each state, 30 unless told).
# Needs only bash, curl and python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOKENS_FILE="${TOKENS_FILE:-${DEVSTACK_VAR:-$ROOT/var}/tokens.env}"
from_tokens_file() { if [ -f "$TOKENS_FILE" ]; then sed -n "s/^$1=//p" "$TOKENS_FILE" | head -n 1; fi; }

LEAD_URL="${LEAD_URL:-http://127.0.0.1:${LEAD_PORT:-8001}}"
INSOURCING_URL="${INSOURCING_URL:-http://127.0.0.1:${INSOURCING_PORT:-8002}}"
BRIDGE_URL="${BRIDGE_URL:-http://127.0.0.1:${BRIDGE_PORT:-8003}}"
LP="${LEAD_API_TOKEN:-$(from_tokens_file LEAD_API_TOKEN)}"
IP="${INSOURCING_API_TOKEN:-$(from_tokens_file INSOURCING_API_TOKEN)}"
SB="${BRIDGE_API_TOKEN:-$(from_tokens_file BRIDGE_API_TOKEN)}"
PARTNER="${INSOURCING_PARTNER_ID:-insourcing-partner}"
TIMEOUT="${TOUR_TIMEOUT:-30}"

say() { printf '%s\n' "$*"; }
fail() { printf 'tour: %s\n' "$*" >&2; exit 1; }

[ -n "$LP" ] && [ -n "$IP" ] || fail "no LEAD_API_TOKEN or INSOURCING_API_TOKEN: start \`make run\` first (it writes $TOKENS_FILE), or set them"
command -v curl >/dev/null || fail "curl is needed"
command -v python3 >/dev/null || fail "python3 is needed"

ANSWER="$(mktemp)"
trap 'rm -f "$ANSWER"' EXIT

# api METHOD URL TOKEN [JSON]: prints the answer's body; anything but a 2xx ends the tour, saying what.
api() {
  local method=$1 url=$2 token=$3 body=${4-} code
  local args=(-sS -X "$method" -H "Authorization: Bearer $token" -o "$ANSWER" -w '%{http_code}')
  [ -z "$body" ] || args+=(-H 'Content-Type: application/json' -d "$body")
  code=$(curl "${args[@]}" "$url") || fail "cannot reach $url (is \`make run\` running?)"
  case $code in
    2??) cat "$ANSWER" ;;
    *) fail "$method $url answered $code: $(head -c 500 "$ANSWER")" ;;
  esac
}

# json EXPRESSION: reads a JSON answer on stdin as `d` and prints the expression (nothing for None).
json() {
  python3 -c 'import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1], {"d": d, "items": d["items"] if isinstance(d, dict) and "items" in d else d})
print("" if v is None else v)' "$1"
}

# wait_for WHAT CHECK [ARGS...]: runs CHECK until it succeeds, every 0.25 s for TIMEOUT seconds. A
# check sets SEEN to what it found, for the message when the wait times out.
SEEN=""
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  SEEN=""
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "waited ${TIMEOUT}s for $what; last seen: ${SEEN:-nothing}"
    sleep 0.25
  done
}

# get URL TOKEN EXPRESSION: one value of a JSON answer. In a check, `|| exit 1` ends the tour on a failed
# call (a check runs as an `until` condition, where `set -e` does not apply).
get() { local body; body=$(api GET "$1" "$2") || exit 1; json "$3" <<<"$body"; }

ready() {
  SEEN=$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz" || true)
  [ "$SEEN" != 000 ] || SEEN="no answer (is \`make run\` running?)"
  [ "$SEEN" = 200 ]
}
lead_lists_partner() {
  SEEN=$(get "$LEAD_URL/api/partners" "$LP" '" ".join(p["id"] for p in items)') || exit 1
  [[ " $SEEN " == *" $PARTNER "* ]]
}
outsource_status() {  # the lead ticket's Outsource Status is $1
  SEEN=$(get "$LEAD_URL/api/tickets/$TICKET" "$LP" 'd["outsource"] and d["outsource"]["status"]') || exit 1
  [ "$SEEN" = "$1" ]
}
insource_status() {  # the insourced ticket's Insource Status is $1
  SEEN=$(get "$INSOURCING_URL/api/tickets/$INSOURCED" "$IP" 'd["insource"] and d["insource"]["status"]') || exit 1
  [ "$SEEN" = "$1" ]
}
received_status() {  # the link is in the insourcing partner's Received Work, in status $1 (every page read)
  local cursor="" page
  while :; do
    page=$(api GET "$INSOURCING_URL/api/received-work?limit=500${cursor:+&cursor=$cursor}" "$IP") || exit 1
    SEEN=$(json "next((w['insource_status'] for w in items if w['link_id'] == '$LINK'), '')" <<<"$page") || exit 1
    [ -z "$SEEN" ] || break
    cursor=$(json 'd.get("next_cursor") if isinstance(d, dict) else None' <<<"$page") || exit 1
    [ -n "$cursor" ] || { SEEN="not in Received Work yet"; break; }
  done
  [ "$SEEN" = "$1" ]
}
delivered() {  # delivered URL TOKEN TICKET ITEM [KIND]: the creator's item (a note) has its receipt from the other side
  SEEN=$(get "$1/api/tickets/$3/${5:-notes}?limit=500" "$2" "next(((n['delivery'] or {}).get('status', 'none') + ' '
    + ((n['delivery'] or {}).get('reason') or '') for n in items if n['id'] == '$4'), 'missing')") || exit 1
  SEEN=${SEEN% }
  case $SEEN in refused*) fail "the ${5:-note} was refused: ${SEEN#refused }" ;; esac
  [ "$SEEN" = delivered ]
}
has_note() {  # has_note URL TOKEN TICKET BODY: the ticket shows a note with this body
  SEEN=$(get "$1/api/tickets/$3/notes?limit=500" "$2" "sum(1 for n in items if n['body'] == '$4')") || exit 1
  [ "$SEEN" -ge 1 ]
}
invoiced() {  # the lead's statement of the ticket carries invoice $1
  SEEN=$(get "$LEAD_URL/api/tickets/$TICKET/statement" "$LP" 'd["invoice_number"]') || exit 1
  [ "$SEEN" = "$1" ]
}
link_state() {  # the bridge's link is in state $1
  SEEN=$(get "$BRIDGE_URL/api/links/$LINK" "$SB" 'd["state"]') || exit 1
  [ "$SEEN" = "$1" ]
}

wait_for "the lead partner at $LEAD_URL" ready "$LEAD_URL"
wait_for "the insourcing partner at $INSOURCING_URL" ready "$INSOURCING_URL"
wait_for "the lead to list $PARTNER among its insourcing partners" lead_lists_partner
say "ready: lead $LEAD_URL, insourcing partner $INSOURCING_URL"

answer=$(api POST "$LEAD_URL/api/tickets" "$LP" '{"title":"Printer offline","description":"The 3rd floor printer shows error E-204"}')
TICKET=$(json 'd["id"]' <<<"$answer")
say "lead: created ticket $(json 'd["number"]' <<<"$answer") \"Printer offline\""

answer=$(api POST "$LEAD_URL/api/tickets/$TICKET/outsource" "$LP" \
  "{\"partner_id\":\"$PARTNER\",\"instructions\":\"On site Monday\",\"terms\":{\"rate_type\":\"hourly\",\"rate\":\"95.00\",\"currency\":\"USD\",\"authorized_hours\":\"6\"}}")
LINK=$(json 'd["link_id"]' <<<"$answer")
say "lead: outsourced it to $PARTNER (Outsource Status $(json 'd["status"]' <<<"$answer"))"

wait_for "the work to reach the insourcing partner as Pending" received_status Pending
say "insourcing: sees it in Received Work as Pending"

answer=$(api POST "$INSOURCING_URL/api/received-work/$LINK/accept" "$IP")
INSOURCED=$(json 'd["ticket_id"]' <<<"$answer")
number=$(get "$INSOURCING_URL/api/tickets/$INSOURCED" "$IP" 'd["number"]')
say "insourcing: accepted it; its own ticket is $number"

wait_for "the lead to see In Progress" outsource_status "In Progress"
say "lead: Outsource Status In Progress"

answer=$(api POST "$LEAD_URL/api/tickets/$TICKET/notes" "$LP" '{"body":"Toner ordered, arrives Monday"}')
note=$(json 'd["id"]' <<<"$answer")
wait_for "the lead's note to reach the insourcing partner" delivered "$LEAD_URL" "$LP" "$TICKET" "$note"
wait_for "the lead's note on the insourced ticket" has_note "$INSOURCING_URL" "$IP" "$INSOURCED" "Toner ordered, arrives Monday"
say "lead -> insourcing: note delivered"

answer=$(api POST "$INSOURCING_URL/api/tickets/$INSOURCED/notes" "$IP" '{"body":"Fuser replaced, test page prints"}')
note=$(json 'd["id"]' <<<"$answer")
wait_for "the insourcing partner's note to reach the lead" delivered "$INSOURCING_URL" "$IP" "$INSOURCED" "$note"
wait_for "the insourcing partner's note on the lead's ticket" has_note "$LEAD_URL" "$LP" "$TICKET" "Fuser replaced, test page prints"
say "insourcing -> lead: note delivered"

answer=$(api POST "$INSOURCING_URL/api/tickets/$INSOURCED/time-entries" "$IP" \
  '{"resource":"Ana","date_worked":"2026-12-07","hours":"1.50","summary":"Replaced the fuser"}')
entry=$(json 'd["id"]' <<<"$answer")
wait_for "the insourcing partner's time entry to reach the lead" delivered "$INSOURCING_URL" "$IP" "$INSOURCED" "$entry" time-entries
say "insourcing: logged 1.50 h, delivered to the lead (the statement bills only what the lead has)"

api POST "$INSOURCING_URL/api/tickets/$INSOURCED/insource/complete" "$IP" >/dev/null
say "insourcing: Notify Lead Partner > Insource Complete"
wait_for "the lead to see Waiting Approval" outsource_status "Waiting Approval"
say "lead: Outsource Status Waiting Approval"

api POST "$LEAD_URL/api/tickets/$TICKET/outsource/reject" "$LP" '{"reason":"The printer still jams on duplex"}' >/dev/null
say "lead: rejected it (\"The printer still jams on duplex\")"
wait_for "the insourcing partner to see In Progress again" insource_status "In Progress"
say "insourcing: Insource Status In Progress again"

api POST "$INSOURCING_URL/api/tickets/$INSOURCED/insource/complete" "$IP" >/dev/null
say "insourcing: Insource Complete again"
wait_for "the lead to see Waiting Approval again" outsource_status "Waiting Approval"
say "lead: Outsource Status Waiting Approval"

STATEMENT=$(api GET "$LEAD_URL/api/tickets/$TICKET/statement" "$LP")
SHA=$(json 'd["sha256"]' <<<"$STATEMENT")
say "lead: statement version $(json 'd["version"]' <<<"$STATEMENT"), total $(json 'd["statement"]["totals"]["total"] + " " + d["statement"]["currency"]' <<<"$STATEMENT") (SHA-256 ${SHA:0:12})"
api POST "$LEAD_URL/api/tickets/$TICKET/outsource/approve" "$LP" "{\"statement_sha256\": \"$SHA\"}" >/dev/null
say "lead: approved it, and that statement"
wait_for "the lead to see Complete" outsource_status Complete
wait_for "the insourcing partner to see Complete" insource_status Complete

INVOICE="INV-$(date +%Y%m%d%H%M%S)"
api POST "$INSOURCING_URL/api/received-work/$LINK/invoice" "$IP" "{\"invoice_number\": \"$INVOICE\"}" >/dev/null
say "insourcing: invoiced that statement as $INVOICE"
wait_for "the lead to see invoice $INVOICE" invoiced "$INVOICE"
say "lead: sees invoice $INVOICE"
if [ -n "$SB" ]; then
  wait_for "the bridge's link to end" link_state terminated
  say "done: Complete on both sides, the bridge's link terminated"
else
  say "done: Complete on both sides"
fi
say "see it: $LEAD_URL/tickets/$TICKET (lead), $INSOURCING_URL/tickets/$INSOURCED (insourcing partner)"
