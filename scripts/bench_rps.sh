#!/usr/bin/env bash
# Requests per second through the proxy, beside the same load sent straight to the upstream, in
# one run: nginx answers a canned chat completion (a fast upstream), wrk sends short chat
# completions (too short to compress: the proxy parses, counts, forwards, reads the usage and
# records it) at 64 connections, then one connection for the added latency. Rounds alternate
# direct and proxied so machine noise hits both sides alike. Client, proxy and nginx share this
# machine's cores.
#
#   scripts/bench_rps.sh     (BENCH_SECONDS=10 per round, BENCH_ROUNDS=3, BENCH_CONNECTIONS=64;
#                             installs nginx-light and wrk with apt when missing)
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 scripts/bench_rps.sh   (a quick look)
#   LINGUA_BENCH_BIN=target/debug/lingua-proxy ...        (that binary, no release build: the
#                                                          CI smoke test, tests/e2e/bench_rps.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-64}
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y nginx-light wrk >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
BIN=${LINGUA_BENCH_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --locked --bin lingua-proxy >&2
  BIN=${CARGO_TARGET_DIR:-target}/release/lingua-proxy
fi
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port)
PROXY=$(free_port)
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP;
    location / {
      default_type application/json;
      return 200 '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}}';
    }
  }
}
EOF
cat > "$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-dummy"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}]}'
EOF
"$NGINX" -c "$work/nginx.conf" -e "$work/nginx.err"
LINGUA_PROXY_COMPRESSION__SCORER=heuristic RUST_LOG=warn "$BIN" serve \
  --listen "127.0.0.1:$PROXY" --upstream "http://127.0.0.1:$UP/v1" > "$work/proxy.log" 2>&1 &
proxy_pid=$!
trap 'kill $proxy_pid 2>/dev/null; kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PROXY/healthz" >/dev/null && break
  sleep 0.1
done
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }
for r in $(seq "$ROUNDS"); do
  for side in direct proxied; do
    port=$UP; [ $side = proxied ] && port=$PROXY
    echo "round $r: $side, $CONNS connections" >&2
    wrk -t2 -c"$CONNS" -d"${SECONDS_PER}s" --latency -s "$work/post.lua" "$(url $port)" \
      > "$work/$side.c$CONNS.$r"
    echo "round $r: $side, 1 connection" >&2
    wrk -t1 -c1 -d"${SECONDS_PER}s" --latency -s "$work/post.lua" "$(url $port)" > "$work/$side.c1.$r"
  done
done
curl -s "http://127.0.0.1:$PROXY/metrics" > "$work/metrics"
python3 - "$work" "$ROUNDS" "$CONNS" <<'PY'
import os, re, statistics, sys
work, rounds, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; {os.cpu_count()} cores (wrk, nginx and the proxy share them)")
def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", t).group(1))
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errors += int(non2xx.group(1)) if non2xx else 0
    def ms(p):
        m = re.search(rf"\s{p}%\s+([0-9.]+)(us|ms|s)\b", t)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    return rps, errors, ms(50), ms(99)
rows = {}
for side in ("direct", "proxied"):
    for c in (conns, "1"):
        runs = [parse(f"{work}/{side}.c{c}.{r}") for r in range(1, rounds + 1)]
        rows[(side, c)] = (statistics.median(x[0] for x in runs), sum(x[1] for x in runs),
                           statistics.median(x[2] for x in runs), statistics.median(x[3] for x in runs))
print(f"| connections | side | requests/s | errors | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|")
for c in (conns, "1"):
    for side in ("direct", "proxied"):
        rps, err, p50, p99 = rows[(side, c)]
        print(f"| {c} | {side} | {rps:,.0f} | {err} | {p50:.3f} | {p99:.3f} |")
added = rows[("proxied", "1")][2] - rows[("direct", "1")][2]
print(f"added p50 at 1 connection: {added:.3f} ms")
# What the proxy answered, by status (/metrics). Status 0 is a client that went away with its
# request in flight: wrk does that to every open connection when a run stops.
statuses = {}
for m in re.finditer(r'^lingua_requests_total\{[^}]*status="(\d+)"\} (\d+)', open(f"{work}/metrics").read(), re.M):
    statuses[m.group(1)] = statuses.get(m.group(1), 0) + int(m.group(2))
print("proxy answers by status:", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
      "(0: the client closed first, as wrk does when a run stops)")
PY
