"""The test suite's own testcontainers path (tests/harness.py), run on the images this project builds:
where a Docker engine answers with them, the suite's PostgreSQL and Kafka come from containers."""
import asyncio

import pytest

from devstack import containers, infra
from shared.platform.kafka import list_topics, outbound_topic
from tests.harness import resolve_infrastructure

pytestmark = pytest.mark.containers


def test_the_suites_infrastructure_comes_from_the_project_images_when_docker_answers(engine, monkeypatch):
    for given in ("TEST_POSTGRES_URL", "KAFKA_BOOTSTRAP_SERVERS", "TEST_BROKER"):
        monkeypatch.delenv(given, raising=False)
    resolved = resolve_infrastructure()
    try:
        assert resolved.postgres_source == f"testcontainers ({containers.POSTGRES_IMAGE})"
        assert resolved.kafka_source.startswith(f"testcontainers ({containers.KAFKA_IMAGE}")
        infra.create_databases(resolved.postgres_admin_url, ["harness_check"])  # connects and creates, or raises
        env = resolved.kafka_service_env
        lead = resolved.kafka_admin.as_user(env["LEAD_KAFKA_USERNAME"], env["LEAD_KAFKA_PASSWORD"])
        visible = asyncio.run(list_topics(lead))
        # The lead's own Kafka user sees its topics and, by the ACLs, not the insourcing partner's.
        assert outbound_topic("lead-partner") in visible
        assert outbound_topic("insourcing-partner") not in visible
    finally:
        resolved.close()
