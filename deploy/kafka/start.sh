#!/usr/bin/env bash
# Starts Apache Kafka with the same configuration as `make run` (deploy/kafka/server.properties): SASL/SCRAM
# users bootstrapped when the storage is first formatted, the StandardAuthorizer, no auto-created topics.
# It runs the jars in /opt/kafka/libs with `java`, as both this project's image (deploy/kafka/Dockerfile)
# and the official apache/kafka image hold them. Secrets come from the environment.
set -euo pipefail
: "${KAFKA_ADMIN_USERNAME:?}" "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_CLUSTER_ID:?}"
: "${LEAD_KAFKA_PASSWORD:?}" "${INSOURCING_KAFKA_PASSWORD:?}" "${BRIDGE_KAFKA_PASSWORD:?}"
# TLS on the client port: the broker's key and certificate from the environment, as PEM on one line
# (`python -m devstack.tls --env` prints them), the hub's CA mounted read-only as /opt/tls/ca.pem.
: "${KAFKA_TLS_KEY:?}" "${KAFKA_TLS_CERTIFICATE_CHAIN:?}"
ca=$(tr '\n' ' ' < /opt/tls/ca.pem)
data=/var/lib/kafka/data
config=/tmp/server.properties
umask 077  # the configuration holds the broker's key and the super user's password
sed -e "s|@CONTROLLER_ADDRESS@|localhost:9093|" \
    -e "s|@CLIENT_BIND@|0.0.0.0:9092|" \
    -e "s|@CONTROLLER_BIND@|localhost:9093|" \
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
"${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$config" \
    --add-scram "SCRAM-SHA-256=[name=${KAFKA_ADMIN_USERNAME},password=${KAFKA_ADMIN_PASSWORD}]" \
    --add-scram "SCRAM-SHA-256=[name=lead-partner-svc,password=${LEAD_KAFKA_PASSWORD}]" \
    --add-scram "SCRAM-SHA-256=[name=insourcing-partner-svc,password=${INSOURCING_KAFKA_PASSWORD}]" \
    --add-scram "SCRAM-SHA-256=[name=sync-bridge-svc,password=${BRIDGE_KAFKA_PASSWORD}]"
exec "${java[@]}" kafka.Kafka "$config"
