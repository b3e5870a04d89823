"""End-to-end checks with the official `anthropic` Python SDK pointed at lingua-proxy.

Run by tests/e2e/sdk_python.rs, which starts the testkit's mock upstream and the proxy (heuristic
scorer) on loopback. argv[1]: the proxy's Anthropic base URL (`http://HOST:PORT`); argv[2]: the
base URL of a second proxy with `[auth]` on, whose keys the SDK does not know.

Every request carries `x-request-id: e2e-<case>`, which the proxy keeps (in its event log) and
forwards (to the mock), so the Rust side can pair what the SDK sent, what the mock received and
what was logged. Prints one JSON object on stdout: `checks`, `sent` (request id -> the exact body
the SDK sent), `usage` (request id -> the usage the SDK parsed) and `thinking_json` (the
serialized thinking block). Exits non-zero on the first failed check.
"""

import json
import sys

import anthropic

from e2e_texts import QUESTION, SYSTEM, TOOL_RESULT

proxy_url, auth_proxy_url = sys.argv[1], sys.argv[2]
sent = {}


def record(request):
    rid = request.headers.get("x-request-id")
    if rid:
        sent[rid] = request.read().decode("utf-8")


def client(url, key="sk-ant-test"):
    http = anthropic.DefaultHttpxClient(event_hooks={"request": [record]})
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=30, http_client=http)


an = client(proxy_url)
checks = 0
usage = {}


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def case(name):
    return {"x-request-id": f"e2e-{name}"}


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def keep_usage(name, u):
    usage[f"e2e-{name}"] = {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": u.cache_creation_input_tokens or 0,
    }


user = [{"role": "user", "content": QUESTION}]
model = "claude-sonnet-4-5"

# 1. A plain message with a long system prompt.
msg = an.messages.create(model=model, max_tokens=256, system=SYSTEM, messages=user, extra_headers=case("plain"))
check(msg.type == "message" and msg.stop_reason == "end_turn" and text_of(msg), "plain: text")
check(msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, "plain: usage")
keep_usage("plain", msg.usage)

# 2. The same, with the SDK's stream helper.
with an.messages.stream(model=model, max_tokens=256, system=SYSTEM, messages=user, extra_headers=case("stream")) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
check(streamed and streamed == text_of(msg), "stream: the text arrives, as in the plain answer")
check(final.usage.output_tokens == msg.usage.output_tokens, "stream: final output usage")
check(final.usage.input_tokens == msg.usage.input_tokens, "stream: final input usage")
keep_usage("stream", final.usage)

# 3. A tool_use / tool_result round trip; the second call carries a long tool_result.
tools = [
    {
        "name": "shipment_status",
        "description": "The tracking history of a shipment.",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
]
first = an.messages.create(
    model=model, max_tokens=256, system=SYSTEM, tools=tools, messages=user, extra_headers=case("tool-use")
)
uses = [b for b in first.content if b.type == "tool_use"]
check(first.stop_reason == "tool_use" and uses and uses[0].name == "shipment_status", "tool-use: a tool_use block")
keep_usage("tool-use", first.usage)
followup = user + [
    {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": TOOL_RESULT},
            {"type": "text", "text": "Please summarise that for me."},
        ],
    },
]
second = an.messages.create(
    model=model, max_tokens=256, system=SYSTEM, tools=tools, messages=followup, extra_headers=case("tool-result")
)
check(second.stop_reason == "end_turn" and text_of(second), "tool-result: a text answer after the tool result")
keep_usage("tool-result", second.usage)

# 3b. The same turn in block form, as agents send it: system text blocks with a cache_control
# marker, and the tool_result's content as a list of text parts.
blocks = an.messages.create(
    model=model,
    max_tokens=256,
    system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
    tools=tools,
    messages=followup[:2]
    + [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": uses[0].id, "content": [{"type": "text", "text": TOOL_RESULT}]},
                {"type": "text", "text": "Please summarise that for me."},
            ],
        }
    ],
    extra_headers=case("blocks"),
)
check(blocks.stop_reason == "end_turn" and text_of(blocks), "blocks: a text answer")
keep_usage("blocks", blocks.usage)

# 4. An earlier assistant turn with a signed thinking block.
thinking = {
    "type": "thinking",
    "thinking": "The customer asks about NW-2231-XK. I should call shipment_status first, then explain.",
    "signature": "EqQBCkYIARgCIkBmb2V4YW1wbGVzaWduYXR1cmVieXRlc2FyZW9wYXF1ZQ==",
}
history = [
    {"role": "user", "content": "Hello, I have a question about a parcel."},
    {"role": "assistant", "content": [thinking, {"type": "text", "text": "Of course, which parcel is it?"}]},
    {"role": "user", "content": QUESTION},
]
think = an.messages.create(
    model=model,
    max_tokens=2048,
    system=SYSTEM,
    thinking={"type": "enabled", "budget_tokens": 1024},
    messages=history,
    extra_headers=case("thinking"),
)
check(text_of(think), "thinking: text")
keep_usage("thinking", think.usage)

# 5. Anthropic's prompt cache: a long tool definition marked `cache_control`, sent twice.
cached_tools = [
    {
        "name": "policy_lookup",
        "description": " ".join(f"Rule {i}: parcels of class {i} are handled by depot {i % 7}." for i in range(120)),
        "input_schema": {"type": "object", "properties": {"rule": {"type": "integer"}}},
        "cache_control": {"type": "ephemeral"},
    }
]
for name in ("cache-write", "cache-read"):
    m = an.messages.create(
        model=model,
        max_tokens=64,
        system=SYSTEM,
        tools=cached_tools,
        tool_choice={"type": "none"},
        messages=user,
        extra_headers=case(name),
    )
    keep_usage(name, m.usage)
check(usage["e2e-cache-write"]["cache_creation_input_tokens"] > 0, f"cache: write {usage['e2e-cache-write']}")
check(usage["e2e-cache-read"]["cache_read_input_tokens"] > 0, f"cache: read {usage['e2e-cache-read']}")

# 6. A 429 from the upstream is the SDK's RateLimitError.
try:
    an.messages.create(model=model, max_tokens=16, messages=user, extra_headers={**case("rate"), "x-mock-status": "429"})
    check(False, "429 must raise")
except anthropic.RateLimitError as e:
    check(e.status_code == 429 and e.body["error"]["type"] == "rate_limit_error", f"rate: {e.body}")

# 7. The proxy's own 401 (a key it does not know) is in Anthropic's shape: AuthenticationError.
try:
    client(auth_proxy_url, key="sk-ant-wrong").messages.create(
        model=model, max_tokens=16, messages=user, extra_headers=case("auth")
    )
    check(False, "a wrong proxy key must raise")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401 and e.body["type"] == "error", f"auth: {e.body}")
    check(e.body["error"]["type"] == "authentication_error", f"auth: {e.body}")

print(json.dumps({"checks": checks, "sent": sent, "usage": usage, "thinking_json": json.dumps(thinking, separators=(",", ":"))}))
