// Smoke checks of the official Node SDKs (`openai@6`, `@anthropic-ai/sdk`) on every API surface:
// Chat Completions, Responses, legacy Completions and Anthropic Messages, plain and streamed.
//
// Run by tests/e2e/sdk_node.rs against the testkit's mock upstream directly; point it at the proxy by
// passing the proxy's URLs instead. argv[2]: the OpenAI base URL (`http://HOST:PORT/v1`);
// argv[3]: the Anthropic base URL (`http://HOST:PORT`). Exits non-zero on the first failed check.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const [openaiURL, anthropicURL] = process.argv.slice(2);
const oa = new OpenAI({ baseURL: openaiURL, apiKey: "sk-test", maxRetries: 0, timeout: 30000 });
const an = new Anthropic({ baseURL: anthropicURL, apiKey: "sk-ant-test", maxRetries: 0, timeout: 30000 });
const question = "Which services were restarted during the night shift?";
const user = [{ role: "user", content: question }];
let checks = 0;

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
  checks += 1;
}

// Chat Completions.
const chat = await oa.chat.completions.create({ model: "gpt-4o-mini", messages: user });
const chatText = chat.choices[0].message.content;
check(Boolean(chatText) && chat.usage.prompt_tokens > 0, "chat: text and usage");
let pieces = [];
let usage = null;
for await (const chunk of await oa.chat.completions.create({
  model: "gpt-4o-mini",
  messages: user,
  stream: true,
  stream_options: { include_usage: true },
})) {
  usage = chunk.usage ?? usage;
  for (const c of chunk.choices) if (c.delta.content) pieces.push(c.delta.content);
}
check(pieces.join("") === chatText, "chat: streamed text equals plain text");
check(usage?.prompt_tokens === chat.usage.prompt_tokens, "chat: stream usage");

// Responses.
const resp = await oa.responses.create({ model: "gpt-4o-mini", instructions: "Be brief.", input: question });
check(resp.object === "response" && resp.status === "completed", "responses: object");
check(Boolean(resp.output_text) && resp.usage.input_tokens > 0, "responses: output_text and usage");
const deltas = [];
let completed = null;
for await (const event of await oa.responses.create({
  model: "gpt-4o-mini",
  instructions: "Be brief.",
  input: question,
  stream: true,
})) {
  if (event.type === "response.output_text.delta") deltas.push(event.delta);
  if (event.type === "response.completed") completed = event.response;
}
check(deltas.join("") === resp.output_text, "responses: streamed text equals plain text");
check(completed?.usage.input_tokens === resp.usage.input_tokens, "responses: stream usage");
const helper = oa.responses.stream({ model: "gpt-4o-mini", instructions: "Be brief.", input: question });
const final = await helper.finalResponse();
check(final.output_text === resp.output_text, "responses: the SDK's stream helper assembles the text");

// Legacy Completions.
const comp = await oa.completions.create({ model: "gpt-3.5-turbo-instruct", prompt: question, max_tokens: 32 });
check(comp.object === "text_completion" && Boolean(comp.choices[0].text), "completions: text");
pieces = [];
usage = null;
for await (const chunk of await oa.completions.create({
  model: "gpt-3.5-turbo-instruct",
  prompt: question,
  max_tokens: 32,
  stream: true,
  stream_options: { include_usage: true },
})) {
  usage = chunk.usage ?? usage;
  for (const c of chunk.choices) pieces.push(c.text);
}
check(pieces.join("") === comp.choices[0].text, "completions: streamed text equals plain text");
check(usage?.prompt_tokens === comp.usage.prompt_tokens, "completions: stream usage");

// Anthropic Messages.
const params = { model: "claude-sonnet-4-5", max_tokens: 256, system: "Be brief.", messages: user };
const msg = await an.messages.create(params);
const msgText = msg.content.filter((b) => b.type === "text").map((b) => b.text).join("");
check(msg.type === "message" && msg.stop_reason === "end_turn" && Boolean(msgText), "messages: text");
check(msg.usage.input_tokens > 0 && msg.usage.cache_read_input_tokens === 0, "messages: usage");
const stream = an.messages.stream(params);
let streamed = "";
stream.on("text", (t) => {
  streamed += t;
});
const finalMsg = await stream.finalMessage();
check(streamed === msgText, "messages: streamed text equals plain text");
check(finalMsg.usage.output_tokens === msg.usage.output_tokens, "messages: stream usage");
let raw = "";
for await (const event of await an.messages.create({ ...params, stream: true })) {
  if (event.type === "content_block_delta" && event.delta.type === "text_delta") raw += event.delta.text;
}
check(raw === msgText, "messages: raw stream events");
try {
  await an.messages.create({ ...params, model: "mock-error-429" });
  check(false, "429 must raise");
} catch (e) {
  check(e instanceof Anthropic.RateLimitError && e.status === 429, `messages: RateLimitError (${e})`);
}

console.log(`${checks} passed, 0 failed`);
