"""The local stack's own small rules."""

import base64

from devstack.kafka_broker import new_cluster_id


def test_a_new_kafka_cluster_id_is_never_read_as_an_option_by_the_storage_tool():
    # One in 64 URL-safe base64 ids starts with "-"; kafka-storage then refused to format (seen in a run).
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)
