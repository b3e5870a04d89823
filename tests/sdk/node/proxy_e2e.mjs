// End-to-end checks of the official Node SDKs (`openai@6`, `@anthropic-ai/sdk`) pointed at
// lingua-proxy: Chat Completions, Responses and Anthropic Messages, plain and streamed, each with
// a long system prompt for the proxy to compress.
//
// Run by tests/e2e/sdk_node.rs, which starts the testkit's mock upstream and the proxy (heuristic
// scorer) on loopback. argv[2]: the proxy's OpenAI base URL (`http://HOST:PORT/v1`); argv[3]:
// its Anthropic base URL (`http://HOST:PORT`); argv[4]: the system prompt. Every request
// carries `x-request-id: e2e-<case>`. Prints one JSON object on stdout: `checks` and `sent`
// (request id -> the exact body the SDK sent). Exits non-zero on the first failed check.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const [openaiURL, anthropicURL, system] = process.argv.slice(2);
const sent = {};
// Records each request's body, keyed by its x-request-id, then sends it.
async function recordingFetch(url, init) {
  const rid = new Headers(init?.headers).get("x-request-id");
  if (rid && typeof init.body === "string") sent[rid] = init.body;
  return fetch(url, init);
}
const common = { maxRetries: 0, timeout: 30000, fetch: recordingFetch };
const oa = new OpenAI({ baseURL: openaiURL, apiKey: "sk-test", ...common });
const an = new Anthropic({ baseURL: anthropicURL, apiKey: "sk-ant-test", ...common });
const question = "Why is my parcel NW-2231-XK late, and when will it arrive?";
const user = [{ role: "user", content: question }];
let checks = 0;

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
  checks += 1;
}
const tag = (name) => ({ headers: { "x-request-id": `e2e-${name}` } });

// Chat Completions.
const messages = [{ role: "system", content: system }, ...user];
const chat = await oa.chat.completions.create({ model: "gpt-4o-mini", messages }, tag("chat"));
const chatText = chat.choices[0].message.content;
check(Boolean(chatText) && chat.usage.prompt_tokens > 0, "chat: text and usage");
let pieces = [];
let usage = null;
const chatStream = await oa.chat.completions.create(
  { model: "gpt-4o-mini", messages, stream: true, stream_options: { include_usage: true } },
  tag("chat-stream"),
);
for await (const chunk of chatStream) {
  usage = chunk.usage ?? usage;
  for (const c of chunk.choices) if (c.delta.content) pieces.push(c.delta.content);
}
check(pieces.join("") === chatText, "chat: streamed text equals plain text");
check(usage?.prompt_tokens === chat.usage.prompt_tokens, "chat: stream usage");

// Responses.
const params = { model: "gpt-4o-mini", instructions: system, input: question };
const resp = await oa.responses.create(params, tag("responses"));
check(resp.status === "completed" && Boolean(resp.output_text), "responses: text");
const deltas = [];
let completed = null;
for await (const event of await oa.responses.create({ ...params, stream: true }, tag("responses-stream"))) {
  if (event.type === "response.output_text.delta") deltas.push(event.delta);
  if (event.type === "response.completed") completed = event.response;
}
check(deltas.join("") === resp.output_text, "responses: streamed text equals plain text");
check(completed?.usage.input_tokens === resp.usage.input_tokens, "responses: stream usage");

// Anthropic Messages.
const msgParams = { model: "claude-sonnet-4-5", max_tokens: 256, system, messages: user };
const msg = await an.messages.create(msgParams, tag("messages"));
const msgText = msg.content.filter((b) => b.type === "text").map((b) => b.text).join("");
check(msg.stop_reason === "end_turn" && Boolean(msgText), "messages: text");
const stream = an.messages.stream(msgParams, tag("messages-stream"));
let streamed = "";
stream.on("text", (t) => {
  streamed += t;
});
const finalMsg = await stream.finalMessage();
check(streamed === msgText, "messages: streamed text equals plain text");
check(finalMsg.usage.input_tokens === msg.usage.input_tokens, "messages: stream usage");

console.log(JSON.stringify({ checks, sent }));
