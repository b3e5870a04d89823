"""Smoke checks of the official `openai` and `anthropic` Python SDKs on every API surface:
Chat Completions, Responses, legacy Completions and Anthropic Messages, each plain and streamed.

Run by tests/sdk_smoke.rs against the testkit's mock upstream directly; point it at the proxy by
passing the proxy's URLs instead. argv[1]: the OpenAI base URL (`http://HOST:PORT/v1`); argv[2]:
the Anthropic base URL (`http://HOST:PORT`, the SDK appends `/v1/messages`). Exits non-zero on
the first failed check.
"""

import sys

import anthropic
import openai

openai_url, anthropic_url = sys.argv[1], sys.argv[2]
oa = openai.OpenAI(base_url=openai_url, api_key="sk-test", max_retries=0, timeout=30)
an = anthropic.Anthropic(base_url=anthropic_url, api_key="sk-ant-test", max_retries=0, timeout=30)
question = "Which services were restarted during the night shift?"
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


# Chat Completions.
chat = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
chat_text = chat.choices[0].message.content
check(bool(chat_text), "chat: text")
check(chat.usage.prompt_tokens > 0, "chat: usage")
pieces, usage = [], None
for chunk in oa.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": question}],
    stream=True,
    stream_options={"include_usage": True},
):
    usage = chunk.usage or usage
    pieces += [c.delta.content for c in chunk.choices if c.delta.content]
check("".join(pieces) == chat_text, "chat: streamed text equals plain text")
check(usage is not None and usage.prompt_tokens == chat.usage.prompt_tokens, "chat: stream usage")

# Responses.
resp = oa.responses.create(model="gpt-4o-mini", instructions="Be brief.", input=question)
check(resp.object == "response" and resp.status == "completed", "responses: object")
check(bool(resp.output_text), "responses: output_text")
check(resp.usage.input_tokens > 0 and resp.usage.input_tokens_details.cached_tokens == 0, "responses: usage")
deltas, completed, kinds = [], None, set()
for event in oa.responses.create(model="gpt-4o-mini", instructions="Be brief.", input=question, stream=True):
    kinds.add(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    elif event.type == "response.completed":
        completed = event.response
check({"response.created", "response.output_text.delta", "response.completed"} <= kinds, f"responses: events {kinds}")
check("".join(deltas) == resp.output_text, "responses: streamed text equals plain text")
check(completed is not None and completed.output_text == resp.output_text, "responses: completed response")
check(completed.usage.input_tokens == resp.usage.input_tokens, "responses: stream usage")
with oa.responses.stream(model="gpt-4o-mini", instructions="Be brief.", input=question) as stream:
    final = stream.get_final_response()
check(final.output_text == resp.output_text, "responses: the SDK's stream helper assembles the text")

# Legacy Completions.
comp = oa.completions.create(model="gpt-3.5-turbo-instruct", prompt=question, max_tokens=32)
check(comp.object == "text_completion" and bool(comp.choices[0].text), "completions: text")
check(comp.usage.prompt_tokens > 0, "completions: usage")
pieces, usage = [], None
for chunk in oa.completions.create(
    model="gpt-3.5-turbo-instruct",
    prompt=question,
    max_tokens=32,
    stream=True,
    stream_options={"include_usage": True},
):
    usage = chunk.usage or usage
    pieces += [c.text for c in chunk.choices]
check("".join(pieces) == comp.choices[0].text, "completions: streamed text equals plain text")
check(usage is not None and usage.prompt_tokens == comp.usage.prompt_tokens, "completions: stream usage")

# Anthropic Messages.
msg = an.messages.create(
    model="claude-sonnet-4-5", max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": question}]
)
msg_text = "".join(b.text for b in msg.content if b.type == "text")
check(msg.type == "message" and msg.stop_reason == "end_turn" and bool(msg_text), "messages: text")
check(msg.usage.input_tokens > 0 and msg.usage.cache_read_input_tokens == 0, "messages: usage")
with an.messages.stream(
    model="claude-sonnet-4-5", max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": question}]
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
check(streamed == msg_text, "messages: streamed text equals plain text")
check(final.usage.output_tokens == msg.usage.output_tokens, "messages: stream usage")
check(final.usage.input_tokens == msg.usage.input_tokens, "messages: stream input usage")
count = an.messages.count_tokens(model="claude-sonnet-4-5", system="Be brief.", messages=[{"role": "user", "content": question}])
check(count.input_tokens == msg.usage.input_tokens, "messages: count_tokens")
try:
    an.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=16,
        messages=[{"role": "user", "content": question}],
        extra_headers={"x-mock-status": "429"},
    )
    check(False, "429 must raise")
except anthropic.RateLimitError as e:
    check(e.status_code == 429, "messages: RateLimitError")

print(f"{checks} passed, 0 failed")
