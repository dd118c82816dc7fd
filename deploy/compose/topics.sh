#!/bin/sh
# compose.yaml's `topics` step: creates the contract's topics of deploy/topics.txt (mounted as
# /topics.txt) that do not exist yet, with Kafka's own tool in the apache/kafka image.
set -eu
BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
grep -v '^#' /topics.txt | while read -r name partitions configs; do
  [ -n "$name" ] || continue
  set -- --create --if-not-exists --bootstrap-server "$BOOTSTRAP" --topic "$name" \
    --partitions "$partitions" --replication-factor 1
  for kv in $(echo "$configs" | tr ',' ' '); do set -- "$@" --config "$kv"; done
  /opt/kafka/bin/kafka-topics.sh "$@"
done
