#!/bin/sh
# Loom's gateway overhead benchmark: mock upstream measured directly, then through the
# gateway (PostgreSQL traces, encrypted) and through the gateway with LOOM_TRACING=off.
# Flags (see bench/overhead/main.go): -duration 10s -warmup 2s -concurrency 1,16,64
# -modes nonstream,stream -direct-only -no-reverseproxy -slow-streams N -slow-streams-only
# -pg URL -chunks 16 -chunk-bytes 8 -latency D -chunk-delay D -out FILE -keep
set -e
cd "$(dirname "$0")/.."
exec go run ./bench/overhead "$@"
