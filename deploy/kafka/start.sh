#!/usr/bin/env bash
# Starts Apache Kafka with the same configuration as `make run` (deploy/kafka/server.properties): the super
# user bootstrapped when the storage is first formatted (every other user is made at run time: the hub's
# one-shot kafka-setup makes the bridge's, the bridge each partner's), the StandardAuthorizer, no
# auto-created topics. It runs the jars in /opt/kafka/libs with `java`, as both this project's image
# (deploy/kafka/Dockerfile) and the official apache/kafka image hold them. Secrets come from the environment.
#
#   start.sh          formats the storage when it is new, else checks it was made with this super user; runs the broker
#   start.sh format   only the first part (deploy/hub's one-shots kafka-N-storage: a volume of another .env stops
#                     `docker compose up` there, with the message below, instead of a broker restarting forever)
set -euo pipefail
: "${KAFKA_ADMIN_USERNAME:?}" "${KAFKA_ADMIN_PASSWORD:?}"
# TLS on the client port: the broker's key and certificate from the environment, as PEM on one line
# (`python -m devstack.tls --env` prints them), the hub's CA mounted read-only as /opt/tls/ca.pem.
: "${KAFKA_TLS_KEY:?}" "${KAFKA_TLS_CERTIFICATE_CHAIN:?}"
ca=$(tr '\n' ' ' < /opt/tls/ca.pem)
data=/var/lib/kafka/data
config=/tmp/server.properties
# What the volume remembers of the .env it was formatted with: the super user is in the cluster's metadata,
# and a broker given another one cannot even log in to itself.
admin_file="$data/admin.sha256"
admin_sha=$(printf '%s\n%s' "$KAFKA_ADMIN_USERNAME" "$KAFKA_ADMIN_PASSWORD" | sha256sum | cut -d' ' -f1)
umask 077  # the configuration holds the broker's key and the super user's password
# A node alone by default; in a cluster (deploy/hub) each node says which it is, and which are the controllers.
node_id=${KAFKA_NODE_ID:-1}
roles=${KAFKA_PROCESS_ROLES:-broker,controller}
voters=${KAFKA_CONTROLLER_QUORUM_VOTERS:-1@localhost:9093}
case "$roles" in
    *controller*) listeners="CLIENT://0.0.0.0:9092,CONTROLLER://${KAFKA_CONTROLLER_BIND:-localhost:9093}" ;;
    *) listeners="CLIENT://0.0.0.0:9092" ;;
esac
sed -e "s|@PROCESS_ROLES@|${roles}|" \
    -e "s|@NODE_ID@|${node_id}|" \
    -e "s|@CONTROLLER_QUORUM_VOTERS@|${voters}|" \
    -e "s|@LISTENERS@|${listeners}|" \
    -e "s|@REPLICATION_FACTOR@|${KAFKA_REPLICATION_FACTOR:-1}|g" \
    -e "s|@MIN_INSYNC_REPLICAS@|${KAFKA_MIN_INSYNC_REPLICAS:-1}|g" \
    -e "s|@BROKER_HEARTBEAT_INTERVAL_MS@|${KAFKA_BROKER_HEARTBEAT_INTERVAL_MS:-2000}|" \
    -e "s|@BROKER_SESSION_TIMEOUT_MS@|${KAFKA_BROKER_SESSION_TIMEOUT_MS:-9000}|" \
    -e "s|@REPLICA_LAG_TIME_MAX_MS@|${KAFKA_REPLICA_LAG_TIME_MAX_MS:-30000}|" \
    -e "s|@CLIENT_ADVERTISED@|${KAFKA_ADVERTISED_ADDRESS:-kafka:9092}|" \
    -e "s|@ADMIN_USERNAME@|${KAFKA_ADMIN_USERNAME}|g" \
    -e "s|@ADMIN_PASSWORD@|${KAFKA_ADMIN_PASSWORD}|g" \
    -e "s|@LOG_DIRS@|${data}|" \
    -e "s|@SSL_KEY@|${KAFKA_TLS_KEY}|" \
    -e "s|@SSL_CERTIFICATE_CHAIN@|${KAFKA_TLS_CERTIFICATE_CHAIN}|" \
    -e "s|@SSL_CA@|${ca}|" \
    /opt/deploy/server.properties > "$config"
# shellcheck disable=SC2206  # the heap options are several words
java=(java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m} -XX:+UseG1GC -Djava.awt.headless=true
      -Dlog4j2.configurationFile=/opt/deploy/log4j2.properties -cp "/opt/kafka/libs/*")

another_env() {
    echo "The hub's Kafka volume was formatted with another .env: $1." >&2
    echo "Put back the .env it was made with; or, to start afresh, run \`docker compose down -v\` (it deletes" >&2
    echo "the hub's volumes: every message on Kafka and the bridge's database, its links and partner directory)" >&2
    echo "and \`docker compose up -d\` again. Partners onboarded before must then be onboarded again." >&2
    exit 78
}

if [ -f "$data/meta.properties" ]; then
    formatted_id=$(sed -n 's/^cluster.id=//p' "$data/meta.properties")
    if [ -n "${KAFKA_CLUSTER_ID:-}" ] && [ "$KAFKA_CLUSTER_ID" != "$formatted_id" ]; then
        another_env "its cluster id is $formatted_id, KAFKA_CLUSTER_ID is $KAFKA_CLUSTER_ID"
    fi
    if [ -f "$admin_file" ] && [ "$(cat "$admin_file")" != "$admin_sha" ]; then
        another_env "its super user is not KAFKA_ADMIN_USERNAME with KAFKA_ADMIN_PASSWORD"
    fi
else
    # A KRaft cluster id is 16 random bytes in URL-safe base64, never starting with "-" (the storage tool
    # would read it as an option); KAFKA_CLUSTER_ID chooses one.
    cluster_id=${KAFKA_CLUSTER_ID:-}
    while [ -z "$cluster_id" ] || [ "${cluster_id#-}" != "$cluster_id" ]; do
        cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    "${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" -c "$config" \
        --add-scram "SCRAM-SHA-256=[name=${KAFKA_ADMIN_USERNAME},password=${KAFKA_ADMIN_PASSWORD}]"
    echo "$admin_sha" > "$admin_file"
fi
if [ "${1:-}" = format ]; then
    echo "the hub's Kafka storage is ready (cluster $(sed -n 's/^cluster.id=//p' "$data/meta.properties"))"
    exit 0
fi
exec "${java[@]}" kafka.Kafka "$config"
