"""A partner service started from its onboarding bundle (SPEC section 10): the bundle alone says where
Kafka is, who the partner is there, the CA and the signing key; a bundle that is not one, or another
role's, stops the service with the problem named."""
import json

import pytest

from services.insourcing_partner.settings import InsourcingSettings
from services.lead_partner.settings import LeadSettings

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def bundle(**changes) -> dict:
    return {"partner_id": "globex", "role": "insourcing", "bootstrap_servers": "hub.example:9093", "ca_pem": CA,
            "username": "globex-svc", "password": "pw-0123456789", "signing_key_id": "k7",
            "signing_key": "s" * 32, "outbound_topic": "psa.globex.outbound", "inbound_topic": "psa.globex.inbound",
            **changes}


@pytest.fixture
def bundle_file(tmp_path, monkeypatch):
    def given(content) -> str:
        path = tmp_path / "bundle.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        monkeypatch.setenv("PARTNER_BUNDLE_FILE", str(path))
        return str(path)
    return given


def test_the_bundle_alone_configures_kafka_and_the_signing_key_over_anything_else_set(bundle_file, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    monkeypatch.setenv("INSOURCING_KAFKA_PASSWORD", "not-this-one")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", "/not/this/ca.pem")
    bundle_file(bundle(added_by_a_newer_hub="ignored"))
    settings = InsourcingSettings()
    access = settings.kafka_access()
    assert (settings.partner_id, settings.signing_keys) == ("globex", "k7:" + "s" * 32)
    assert (access.bootstrap, access.username, access.password) == ("hub.example:9093", "globex-svc", "pw-0123456789")
    assert access.tls and access.ssl_cadata == CA and access.ssl_cafile is None


def test_a_bundle_without_a_ca_is_a_plaintext_broker_without_users(bundle_file):
    bundle_file(bundle(ca_pem=None, username=None, password=None))
    access = InsourcingSettings().kafka_access()
    assert not access.tls and access.options() == {"bootstrap_servers": "hub.example:9093"}


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON"),
    (bundle(role="lead"), "this bundle has role 'lead'; this service needs role 'insourcing'"),
    (bundle(inbound_topic="psa.initech.inbound"), "the topics must be the partner's own"),
    ({k: v for k, v in bundle().items() if k != "password"}, "password: Field required"),
    (bundle(role="admin"), "role: Input should be 'lead' or 'insourcing'"),
])
def test_a_bundle_that_is_not_one_for_this_service_stops_it_with_the_problem_named(bundle_file, content, problem):
    path = bundle_file(content)
    with pytest.raises(SystemExit) as stopped:
        InsourcingSettings()
    assert str(stopped.value).startswith(f"PARTNER_BUNDLE_FILE={path}: ") and problem in str(stopped.value)


def test_a_missing_bundle_file_stops_the_service(monkeypatch, tmp_path):
    monkeypatch.setenv("PARTNER_BUNDLE_FILE", str(tmp_path / "nowhere.json"))
    with pytest.raises(SystemExit, match="cannot be read"):
        LeadSettings()
