#!/usr/bin/env bash
# Peak RSS of the proxy while it handles a 4 MB system message, next to its RSS at idle.
#
#   cargo build --release && scripts/bench_rss.sh
#
# Two cases, each in a fresh proxy process with the LLMLingua-2 scorer on MODEL:
#   defaults  - the shipped size limits: the message is skipped as too_large;
#   no-limits - max_message_tokens = max_request_tokens = 0 and deadline_ms = DEADLINE_MS: the
#               4 MB message really goes through the model scheduler (batches of at most
#               max_batch_tokens) until its deadline cancels it.
# The upstream is a closed port (the proxy answers 502 after compressing): only the proxy's
# memory is measured, from /proc/<pid>/status (VmRSS at idle, VmHWM = peak).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/lingua-proxy}
MODEL=${MODEL:-$PWD/tests/models/bert-base-multilingual-cased-minilm-l6}
PORT=${PORT:-18431}
DEADLINE_MS=${DEADLINE_MS:-20000}
MB=${MB:-4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp/body.json" "$MB" <<'PY'
import json, sys
s = ("The dispatcher reviews the route plan every morning, and the drivers confirm each stop "
     "before they leave the depot at 06:30; late parcels are reported to the customer. ")
text = (s * (int(sys.argv[2]) * (1 << 20) // len(s) + 1))[: int(sys.argv[2]) << 20]
body = {"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": text},
    {"role": "user", "content": "When do the trucks leave?"}]}
open(sys.argv[1], "w").write(json.dumps(body))
PY

kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }

run_case() {
  local name=$1 extra=$2
  cat > "$tmp/proxy.toml" <<TOML
listen = "127.0.0.1:$PORT"
max_body_bytes = 67108864
[upstream]
base_url = "http://127.0.0.1:9/v1"
[log]
level = "warn"
[compression]
scorer = "llmlingua2"
model = "$MODEL"
on_model_unavailable = "fail"
$extra
TOML
  "$BIN" serve --config "$tmp/proxy.toml" 2> "$tmp/$name.log" &
  local pid=$!
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
  done
  local idle; idle=$(kb VmRSS "$pid")
  local out
  out=$(curl -s -o /dev/null -D "$tmp/headers" -w '%{http_code} %{time_total}' \
    -H 'content-type: application/json' --data-binary @"$tmp/body.json" \
    "http://127.0.0.1:$PORT/v1/chat/completions")
  local skipped; skipped=$(awk -F': ' 'tolower($1) == "x-lingua-skipped" {print $2}' "$tmp/headers" | tr -d '\r')
  sleep 2
  local peak; peak=$(kb VmHWM "$pid")
  local after; after=$(kb VmRSS "$pid")
  local cpu1; cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep 2
  local cpu2; cpu2=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2> /dev/null || true
  printf '%-9s status,time=%-14s skipped=%-9s idle=%6d MiB  peak=%6d MiB  after=%6d MiB  cpu-ticks-2s-later=%d\n' \
    "$name" "$(echo "$out" | tr ' ' ',')s" "${skipped:-none}" $((idle / 1024)) $((peak / 1024)) $((after / 1024)) $((cpu2 - cpu1))
}

echo "$MB MB system message, model $(basename "$MODEL"), $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}')"
run_case defaults ""
run_case no-limits "max_message_tokens = 0
max_request_tokens = 0
deadline_ms = $DEADLINE_MS"
