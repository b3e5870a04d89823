"""End-to-end checks with the official OpenAI Python SDK pointed at lingua-proxy.

Run by tests/e2e/sdk_python.rs, which starts the mock upstream and the proxy on loopback and passes
the proxy's base URL as argv[1]. Exits non-zero on the first failed check.
"""

import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me about the proxy in one line."},
]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# 1. A plain completion, with the raw response's headers.
raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
check(raw.headers.get("x-request-id") == "req_mock", "x-request-id passes through")
completion = raw.parse()
text = completion.choices[0].message.content
check(text.startswith("Mock reply"), f"plain completion text: {text!r}")
check(completion.usage.prompt_tokens > 0, "usage.prompt_tokens present")
check(completion.choices[0].finish_reason == "stop", "finish_reason stop")

# 2. A streamed completion assembles to the same text, with the usage chunk when asked.
stream = client.chat.completions.create(
    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
)
pieces, usage, chunks = [], None, 0
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
check(chunks > 3, f"stream arrived in several chunks ({chunks})")
check("".join(pieces) == text, "streamed text equals the non-streamed text")
check(usage is not None and usage.prompt_tokens == completion.usage.prompt_tokens, "stream usage chunk")

# 3. A tool call, then the tool's answer.
tools = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
msg = first.choices[0].message
check(first.choices[0].finish_reason == "tool_calls", "finish_reason tool_calls")
check(msg.tool_calls and msg.tool_calls[0].function.name == "lookup", "tool call names the tool")
followup = messages + [
    {"role": "assistant", "content": None, "tool_calls": [tc.model_dump() for tc in msg.tool_calls]},
    {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "{\"answer\": 42}"},
]
second = client.chat.completions.create(model="gpt-4o-mini", messages=followup, tools=tools)
check(second.choices[0].message.content.startswith("Mock reply"), "answer after the tool result")

# 4. An upstream 429 surfaces as the SDK's RateLimitError.
try:
    client.chat.completions.create(model="mock-error-429", messages=messages)
    check(False, "429 must raise")
except openai.RateLimitError as e:
    check(e.status_code == 429, "RateLimitError status")
    check(e.body is not None and e.body.get("code") == "rate_limit_exceeded", f"error body {e.body!r}")

# 5. Models list through the proxy.
models = client.models.list()
check(any(m.id == "gpt-4o-mini" for m in models.data), "models list")

print(f"{checks} passed, 0 failed")
