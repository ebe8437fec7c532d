#!/usr/bin/env bash
# Kafka users, topics and ACLs of MKR (docker-compose.yml, service `kafka-init`; runs once per `up`,
# idempotent). Each service authenticates with SASL/SCRAM-SHA-512 as `mkr-<service>` and may:
#   - write (and read back, for the outbox relay's loss check) only its own topic mkr.<service>.events,
#   - read the topics it consumes, in consumer groups named mkr-<service>.*,
#   - describe every mkr.* topic (it checks they exist; the topics are created here, not by the services).
# The broker denies everything else (allow.everyone.if.no.acl.found=false); only `admin` is a super user.
set -euo pipefail

bin=/opt/kafka/bin
bootstrap="${KAFKA_INIT_BOOTSTRAP:-kafka:9094}"
partitions="${KAFKA_INIT_PARTITIONS:-3}"
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
cat > "$config" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD is not set}";
PROPERTIES
common=(--bootstrap-server "$bootstrap" --command-config "$config")

# Who consumes what (services/*/events.py CONSUMED_TOPICS; shelter also reads referral's member.saved).
declare -A consumes=(
  [intake]="referral"
  [referral]="intake shelter"
  [shelter]="intake referral"
  [notifications]="intake referral shelter notifications"
)

for service in intake referral shelter notifications; do
  "$bin/kafka-topics.sh" "${common[@]}" --create --if-not-exists --topic "mkr.${service}.events" \
    --partitions "$partitions" --replication-factor 1
done

for service in intake referral shelter notifications; do
  variable="KAFKA_PASSWORD_${service^^}"
  password="${!variable:?$variable is not set}"
  user="mkr-${service}"
  "$bin/kafka-configs.sh" "${common[@]}" --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${password}]"
  acl=("$bin/kafka-acls.sh" "${common[@]}" --add --force --allow-principal "User:${user}")
  "${acl[@]}" --operation Write --operation Read --operation Describe --topic "mkr.${service}.events"
  for source in ${consumes[$service]}; do
    [ "$source" = "$service" ] || "${acl[@]}" --operation Read --operation Describe --topic "mkr.${source}.events"
  done
  "${acl[@]}" --operation Describe --topic mkr. --resource-pattern-type prefixed
  "${acl[@]}" --operation Read --operation Describe --group "mkr-${service}." --resource-pattern-type prefixed
done
echo "kafka-init: users, topics and ACLs in place"
