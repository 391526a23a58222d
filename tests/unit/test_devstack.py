"""The local stack's own small rules."""

import base64

from devstack.kafka_broker import new_cluster_id


def test_a_new_kafka_cluster_id_is_never_read_as_an_option_by_the_storage_tool():
    # One in 64 URL-safe base64 ids starts with "-"; kafka-storage then refused to format (seen in a run).
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)


def test_the_replication_report_names_each_partition_short_of_its_replicas_and_one_with_no_leader():
    from devstack.kafka_broker import replication_report

    whole = [{"topic": "psa.a.outbound", "partition": p, "leader": 1 + p % 3, "replicas": [1, 2, 3], "isr": [1, 2, 3]}
             for p in range(4)]
    assert replication_report(whole) == (True, "all 4 partitions of 1 topics in sync, on brokers 1, 2, 3")
    assert not replication_report([])[0]  # nothing visible is no answer
    behind = [*whole[:2], {**whole[2], "isr": [1, 3]}, {**whole[3], "leader": -1, "isr": []}]
    in_sync, report = replication_report(behind)
    assert not in_sync
    assert report.splitlines() == ["2 of 4 partitions not fully in sync:",
                                   "  psa.a.outbound-2: leader 3, replicas [1, 2, 3], in sync [1, 3]",
                                   "  psa.a.outbound-3: leader none, replicas [1, 2, 3], in sync []"]
