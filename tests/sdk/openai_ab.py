"""A/B checks with the official OpenAI Python SDK pointed at lingua-proxy in mirror mode.

Run by tests/e2e/sdk_python.rs with the proxy's base URL as argv[1] and a long system prompt in
argv[2]. Exits non-zero on the first failed check.
"""

import sys

from openai import OpenAI

base_url, system = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
messages = [
    {"role": "system", "content": system},
    {"role": "user", "content": "When will parcel NW-2231-XK arrive?"},
]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# 1. The arm is forced per request and reported back in a response header.
for arm in ("raw", "compressed"):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"x-lingua-arm": arm}
    )
    check(raw.headers.get("x-lingua-arm") == arm, f"served by the {arm} arm")
    check(raw.headers.get("x-lingua-ab-mode") == "mirror", "mirror mode reported")
    completion = raw.parse()
    check(completion.choices[0].message.content.startswith("Mock reply"), "one parsed answer")
    if arm == "raw":
        raw_prompt = completion.usage.prompt_tokens
    else:
        check(completion.usage.prompt_tokens < raw_prompt, "the compressed arm bills fewer tokens")

# 2. A stream without include_usage looks exactly like one from OpenAI without it: no usage
#    chunk, no usage field, even though the proxy asked the upstream for usage.
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=messages,
    stream=True,
    extra_headers={"x-session-id": "sdk-session"},
)
chunks = list(stream)
check(len(chunks) > 3, f"streamed in several chunks ({len(chunks)})")
check(all(c.choices for c in chunks), "no usage-only chunk reached the client")
check(all(c.usage is None for c in chunks), "no usage field reached the client")
check(
    "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Mock reply"),
    "the streamed answer assembles",
)

# 3. A stream that asks for usage gets it.
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},
)
usage = [c.usage for c in stream if c.usage is not None]
check(len(usage) == 1 and usage[0].prompt_tokens > 0, "usage chunk when asked")

print(f"{checks} passed, 0 failed")
