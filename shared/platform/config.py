"""Settings every service shares. Each service subclasses this with its own env prefix;
nothing outside a Settings class reads the environment."""
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.platform.kafka import KafkaAccess, Replication
from shared.platform.signing import KeyRing


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # Tansu answers a group join after about half the session timeout: keep it short locally.
    kafka_session_timeout_ms: int = Field(10_000, validation_alias="KAFKA_SESSION_TIMEOUT_MS")
    kafka_topic_partitions: int = Field(4, validation_alias="KAFKA_TOPIC_PARTITIONS")
    # The topics this service creates (SPEC section 13): on how many brokers, and how many must hold a
    # write before it is acknowledged. Unset: the broker's defaults (make run sets them for its cluster).
    kafka_replication_factor: int | None = Field(None, ge=1, validation_alias="KAFKA_REPLICATION_FACTOR")
    kafka_min_insync_replicas: int | None = Field(None, ge=1, validation_alias="KAFKA_MIN_INSYNC_REPLICAS")
    # This service's own Kafka user (SASL/SCRAM-SHA-256), read with the service's prefix
    # (LEAD_KAFKA_USERNAME...): on Apache Kafka with ACLs each service may use only its own topics.
    kafka_username: str | None = None
    kafka_password: str | None = None
    # TLS to the broker (SASL_SSL): the hub operator's CA the broker's certificate is verified against,
    # or KAFKA_SSL=true to verify it against the system's bundle. Neither: plaintext (Tansu's only way).
    kafka_ssl_cafile: str | None = Field(None, validation_alias="KAFKA_SSL_CAFILE")
    kafka_ssl: bool = Field(False, validation_alias="KAFKA_SSL")
    kafka_ssl_cadata: str | None = None  # the CA as PEM text (a partner's onboarding bundle carries it so)
    smtp_host: str = Field("127.0.0.1", validation_alias="SMTP_HOST")
    smtp_port: int = Field(8025, validation_alias="SMTP_PORT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    # The connection budget (issue 28; docs/operations.md, "Database connections"): a replica opens at
    # most DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW + 3 (its relay's, its token watch's and, on the
    # bridge, its directory watch's own). The pool's are kept open; the overflow's are closed after each
    # use, and a new PostgreSQL connection costs the server milliseconds of CPU (issue 11: at 10 kept
    # and 20 overflowing, 16 concurrent writers made half the database's CPU per note out of
    # reconnecting), so the overflow is kept small. 10 + 2 + 3 = 15: six replicas (three services, two
    # each) and an operator fit in PostgreSQL's default max_connections of 100.
    database_pool_size: int = Field(10, ge=1, validation_alias="DATABASE_POOL_SIZE")
    database_max_overflow: int = Field(2, ge=0, validation_alias="DATABASE_MAX_OVERFLOW")
    # How often unconfirmed links are reconciled (SPEC section 9).
    reconcile_interval_s: float = Field(30.0, gt=0, validation_alias="RECONCILE_INTERVAL_S")
    # Dead-letter retention: resolved ones older than this many days, and the oldest resolved ones
    # beyond this many in all, are deleted; unresolved ones stay until an operator acts.
    dead_letter_max_count: int = Field(10_000, ge=1, validation_alias="DEAD_LETTER_MAX_COUNT")
    dead_letter_max_age_days: float = Field(30.0, gt=0, validation_alias="DEAD_LETTER_MAX_AGE_DAYS")
    host: str = "127.0.0.1"
    # What this process runs (issue 30, "workers beside the API"; the command line sets it): "all", the
    # HTTP API with the relay, the consumer and the background jobs (`serve`); "api", the HTTP API alone
    # (`serve --api-only`), whose writes a worker publishes; "worker", the relay, the consumer and the
    # jobs (`worker`), answering only /healthz, /readyz and /metrics, on <PREFIX>_WORKER_PORT (default the
    # port + 100).
    process: Literal["all", "api", "worker"] = "all"
    worker_port: int | None = None
    # What a client may hold of this service (shared/platform/http_server.py): a request head must be
    # whole within this many seconds (at most 30: a stranger's half request holds a connection that long),
    # a request body may pause at most this long, and at most this many connections get an answer.
    http_head_timeout_s: float = Field(20.0, gt=0, le=30, validation_alias="HTTP_HEAD_TIMEOUT_S")
    http_body_idle_s: float = Field(30.0, gt=0, validation_alias="HTTP_BODY_IDLE_S")
    http_max_connections: int = Field(1000, ge=1, validation_alias="HTTP_MAX_CONNECTIONS")
    # Signs the web UI's session cookies (e.g. LEAD_UI_SECRET); replicas must share it. Unset: a
    # random one per process, so a restart signs everyone out.
    ui_secret: str | None = None

    def key_ring(self, text: str | None, field: str) -> KeyRing:
        """A message signing key ring from this service's settings, or a clear refusal to start."""
        variable = f"{self.model_config.get('env_prefix', '')}{field}".upper()
        if not text:
            raise SystemExit(f"{variable} is not set: messages to and from the bridge are signed with it "
                             "(make run generates one; see docs/configuration.md)")
        try:
            return KeyRing.parse(text)
        except ValueError as exc:
            raise SystemExit(f"{variable}: {exc}") from None

    def replication(self) -> Replication:
        factor, insync = self.kafka_replication_factor, self.kafka_min_insync_replicas
        if factor and insync and insync > factor:
            # Every acks=all write would be refused (NOT_ENOUGH_REPLICAS), for ever.
            raise SystemExit(f"KAFKA_MIN_INSYNC_REPLICAS={insync} is more than KAFKA_REPLICATION_FACTOR={factor}:"
                             " no write could ever be acknowledged")
        return Replication(factor, insync)

    def kafka_access(self) -> KafkaAccess:
        return KafkaAccess(self.kafka_bootstrap_servers, self.kafka_username, self.kafka_password,
                           tls=bool(self.kafka_ssl or self.kafka_ssl_cafile or self.kafka_ssl_cadata),
                           ssl_cafile=self.kafka_ssl_cafile, ssl_cadata=self.kafka_ssl_cadata)
