"""End-to-end checks with the official `openai` Python SDK's Responses and legacy Completions
APIs pointed at lingua-proxy.

Run by tests/e2e/sdk_python.rs, which starts the testkit's mock upstream and the proxy (heuristic
scorer, `prompt` budget on) on loopback. argv[1]: the proxy's OpenAI base URL
(`http://HOST:PORT/v1`). Every request carries `x-request-id: e2e-<case>` (see
anthropic_e2e.py). Prints one JSON object on stdout: `checks`, `sent` (request id -> the exact
body the SDK sent), `usage` (request id -> `input_tokens`, `output_tokens`, `cached_tokens` as
the SDK parsed them) and `reasoning_json` (the serialized reasoning item). Exits non-zero on the
first failed check.
"""

import json
import sys

import openai

from e2e_texts import QUESTION, SYSTEM, TOOL_RESULT

sent = {}


def record(request):
    rid = request.headers.get("x-request-id")
    if rid:
        sent[rid] = request.read().decode("utf-8")


oa = openai.OpenAI(
    base_url=sys.argv[1],
    api_key="sk-test",
    max_retries=0,
    timeout=30,
    http_client=openai.DefaultHttpxClient(event_hooks={"request": [record]}),
)
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


def keep(name, input_tokens, output_tokens, cached_tokens):
    usage[f"e2e-{name}"] = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cached_tokens": cached_tokens}


def cached(u):
    details = u.prompt_tokens_details
    return details.cached_tokens if details else 0


def keep_responses(name, u):
    keep(name, u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens)


model = "gpt-4o-mini"

# 1. Responses, plain, with long instructions.
resp = oa.responses.create(model=model, instructions=SYSTEM, input=QUESTION, extra_headers=case("responses"))
check(resp.status == "completed" and resp.output_text, "responses: text")
check(resp.usage.input_tokens > 0, "responses: usage")
keep_responses("responses", resp.usage)

# 2. Responses, streamed: the events arrive, the completed response carries the usage.
kinds, deltas, completed = set(), [], None
for event in oa.responses.create(
    model=model, instructions=SYSTEM, input=QUESTION, stream=True, extra_headers=case("responses-stream")
):
    kinds.add(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type == "response.completed":
        completed = event.response
check({"response.created", "response.output_text.delta", "response.completed"} <= kinds, f"stream: {kinds}")
check("".join(deltas) == resp.output_text, "stream: the text arrives, as in the plain answer")
check(completed is not None and completed.usage.input_tokens == resp.usage.input_tokens, "stream: usage")
keep_responses("responses-stream", completed.usage)

# 3. A long function_call_output after the function call.
items = [
    {"role": "user", "content": QUESTION},
    {"type": "function_call", "call_id": "call_7", "name": "shipment_status", "arguments": "{\"id\":\"NW-2231-XK\"}"},
    {"type": "function_call_output", "call_id": "call_7", "output": TOOL_RESULT},
]
out = oa.responses.create(model=model, instructions=SYSTEM, input=items, extra_headers=case("function-output"))
check(out.output_text, "function-output: text")
keep_responses("function-output", out.usage)

# 4. A reasoning item with encrypted content, from an earlier turn.
reasoning = {
    "type": "reasoning",
    "id": "rs_e2e_1",
    "summary": [],
    "encrypted_content": "gAAAAABoE2xZ-encrypted-reasoning-state-that-only-the-provider-can-read==",
}
items = [
    {"role": "user", "content": "Hello, I have a question about a parcel."},
    reasoning,
    {"role": "assistant", "content": "Of course, which parcel is it?"},
    {"role": "user", "content": QUESTION},
]
out = oa.responses.create(
    model="o4-mini",
    instructions=SYSTEM,
    input=items,
    include=["reasoning.encrypted_content"],
    store=False,
    extra_headers=case("reasoning"),
)
check(out.output_text, "reasoning: text")
keep_responses("reasoning", out.usage)

# 5. Legacy completions with a long prompt, plain and streamed.
prompt = f"{TOOL_RESULT} Question: {QUESTION} Answer:"
comp = oa.completions.create(
    model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=32, extra_headers=case("completions")
)
check(comp.object == "text_completion" and comp.choices[0].text, "completions: text")
check(comp.usage.prompt_tokens > 0, "completions: usage")
keep("completions", comp.usage.prompt_tokens, comp.usage.completion_tokens, cached(comp.usage))
pieces, cusage = [], None
for chunk in oa.completions.create(
    model="gpt-3.5-turbo-instruct",
    prompt=prompt,
    max_tokens=32,
    stream=True,
    stream_options={"include_usage": True},
    extra_headers=case("completions-stream"),
):
    cusage = chunk.usage or cusage
    pieces += [c.text for c in chunk.choices]
check("".join(pieces) == comp.choices[0].text, "completions stream: the text arrives")
check(cusage is not None and cusage.prompt_tokens == comp.usage.prompt_tokens, "completions stream: usage")
keep("completions-stream", cusage.prompt_tokens, cusage.completion_tokens, cached(cusage))

print(json.dumps({"checks": checks, "sent": sent, "usage": usage, "reasoning_json": json.dumps(reasoning, separators=(",", ":"))}))
