"""One poll, applied in turns (issue 11: one hot link must not stall the others): the first record
of every link goes in the first transaction, the rest take turns, and each link keeps its order.
Within a transaction, receipts that follow each other are applied together (issue 30), never past
another message; and a relay lets receipts alone wait a moment."""
from aiokafka import ConsumerRecord, TopicPartition

from shared.contracts.envelope import contracts, waits_a_moment
from shared.contracts.messages import ItemDelivered, MirrorUpsert
from shared.platform.inbox import APPLY_TOGETHER, in_turns, runs


def record(topic: str, partition: int, offset: int, link: str) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=partition, offset=offset, timestamp=0, timestamp_type=0,
                          key=link.encode(), value=b"{}", checksum=None, serialized_key_size=len(link),
                          serialized_value_size=2, headers=())


def links_of(records: list[ConsumerRecord]) -> list[str]:
    return [r.key.decode() for r in records]


def test_a_quiet_links_record_is_in_the_first_transaction_however_much_a_busy_link_had_before_it():
    hot = [record("psa.lead.outbound", 0, n, "hot") for n in range(200)]
    quiet = record("psa.lead.outbound", 0, 200, "quiet")
    other_partition = [record("psa.lead.outbound", 1, 7, "elsewhere")]

    transactions = in_turns({TopicPartition("psa.lead.outbound", 0): [*hot, quiet],
                             TopicPartition("psa.lead.outbound", 1): other_partition})

    assert links_of(transactions[0]) == ["hot", "quiet", "elsewhere"]
    assert all(len(t) <= APPLY_TOGETHER for t in transactions)
    assert sum(len(t) for t in transactions) == 202  # nothing dropped, nothing twice


def test_each_link_keeps_its_order_and_the_busy_ones_take_turns():
    a = [record("t", 0, n, "a") for n in (0, 2, 4, 6)]
    b = [record("t", 0, n, "b") for n in (1, 3, 5)]
    c = [record("u", 0, 0, "a")]  # the same link on another topic is another stream
    applied = [r for t in in_turns({TopicPartition("t", 0): sorted(a + b, key=lambda r: r.offset),
                                    TopicPartition("u", 0): c}) for r in t]

    assert [(r.topic, r.key.decode()) for r in applied[:3]] == [("t", "a"), ("t", "b"), ("u", "a")]
    assert [r.offset for r in applied if r.topic == "t" and r.key == b"a"] == [0, 2, 4, 6]
    assert [r.offset for r in applied if r.key == b"b"] == [1, 3, 5]
    assert links_of(applied[3:]) == ["a", "b", "a", "b", "a"]


def test_many_quiet_links_fill_the_first_transactions_before_any_second_record():
    batch = [record("t", 0, n, f"link-{n}") for n in range(APPLY_TOGETHER + 5)]
    batch.append(record("t", 0, 99, "link-0"))
    transactions = in_turns({TopicPartition("t", 0): batch})

    assert [len(t) for t in transactions] == [APPLY_TOGETHER, 5, 1]
    assert transactions[-1][0].offset == 99


def test_only_receipts_that_follow_each_other_are_applied_together():
    def entry(payload):
        return (None, None, payload)

    upsert = MirrorUpsert(link_id="a", mirror_id="m", kind="note", fields={"title": "", "body": "x"})
    r = [ItemDelivered(link_id="a", item_id=str(n), version=1) for n in range(4)]
    batch = [entry(r[0]), entry(r[1]), entry(upsert), entry(r[2]), entry(r[3])]
    grouped = runs(batch, {ItemDelivered: None})
    assert [[e[2] for e in group] for group in grouped] == [[r[0], r[1]], [upsert], [r[2], r[3]]]
    assert [len(group) for group in runs(batch, {})] == [1, 1, 1, 1, 1]



def test_within_a_turn_records_are_ordered_by_their_type_so_receipts_follow_each_other():
    def typed(link: str, offset: int, type_: bytes) -> ConsumerRecord:
        made = record("psa.lead.outbound", 0, offset, link)
        made.headers = (("type", type_), ("x", None))
        return made

    poll = [typed("a", 0, b"mirror.applied"), typed("b", 1, b"item.created"), typed("c", 2, b"mirror.applied"),
            typed("a", 3, b"item.created"), typed("b", 4, b"mirror.applied"), typed("c", 5, b"item.created")]
    [first, rest] = in_turns({TopicPartition("psa.lead.outbound", 0): poll})
    assert [(r.key, dict(r.headers)["type"]) for r in first] == [
        (b"b", b"item.created"), (b"a", b"mirror.applied"), (b"c", b"mirror.applied")]
    assert [(r.key, dict(r.headers)["type"]) for r in rest] == [
        (b"a", b"item.created"), (b"c", b"item.created"), (b"b", b"mirror.applied")]


def test_only_the_two_delivery_receipts_may_wait_for_their_relay():
    assert {c.type for c in contracts() if waits_a_moment(c.type)} == {"mirror.applied", "item.delivered"}
    assert not waits_a_moment("no.such.type")
