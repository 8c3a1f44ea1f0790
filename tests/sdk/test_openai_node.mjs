// The official `openai` Node package against keygate's unified endpoint (`<keygate>/v1`),
// Anthropic (keygate-mock) behind it: text, a stream with usage, tool calls, an error with
// keygate's code. Run by scripts/sdk-test.sh, which installs the package into
// target/node-sdk and passes its path in OPENAI_NODE_MODULE.

const { default: OpenAI } = await import(process.env.OPENAI_NODE_MODULE);

const KEYGATE = process.env.KEYGATE_URL;
const TOKEN = process.env.KEYGATE_TOKEN;
const CLAUDE = "anthropic/claude-sonnet-4-20250514";
const HI = [{ role: "user", content: "hi" }];
const TOOLS = [
  { type: "function", function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } },
  { type: "function", function: { name: "time", parameters: { type: "object", properties: { tz: { type: "string" } } } } },
];

const client = new OpenAI({ baseURL: `${KEYGATE}/v1`, apiKey: TOKEN, maxRetries: 0 });
const results = { passed: 0, failed: 0 };

function assert(condition, what) {
  if (!condition) throw new Error(typeof what === "string" ? what : JSON.stringify(what));
}

async function check(name, fn) {
  try {
    await fn();
    results.passed += 1;
    console.log(`ok   node: ${name}`);
  } catch (e) {
    results.failed += 1;
    console.log(`FAIL node: ${name}: ${e?.stack ?? e}`);
  }
}

await check("unified: text from Anthropic", async () => {
  const reply = await client.chat.completions.create({ model: CLAUDE, messages: HI });
  assert(reply.choices[0].message.content === "Hello from keygate-mock!", reply);
  assert(reply.choices[0].finish_reason === "stop", reply);
  assert(reply.usage.prompt_tokens === 11 && reply.usage.completion_tokens === 7, reply.usage);
});

await check("unified: stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model: CLAUDE,
    messages: HI,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let last;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    last = chunk;
  }
  assert(text === "Hello from keygate-mock!", text);
  assert(last.usage?.prompt_tokens === 11 && last.usage?.completion_tokens === 7, last);
});

await check("unified: tool calls, streamed and not", async () => {
  const ask = [{ role: "user", content: "weather and time?" }];
  const reply = await client.chat.completions.create({ model: CLAUDE, messages: ask, tools: TOOLS });
  const calls = reply.choices[0].message.tool_calls;
  assert(reply.choices[0].finish_reason === "tool_calls", reply);
  assert(JSON.stringify(calls.map((c) => c.function.name)) === '["weather","time"]', calls);
  assert(JSON.parse(calls[0].function.arguments).city === "mock city", calls[0]);
  // Streamed: the package's own accumulator puts each call together by its index.
  const runner = client.chat.completions.stream({ model: CLAUDE, messages: ask, tools: TOOLS });
  const final = await runner.finalChatCompletion();
  const streamed = final.choices[0].message.tool_calls;
  const shape = (cs) => JSON.stringify(cs.map((c) => [c.function.name, JSON.parse(c.function.arguments)]));
  assert(shape(streamed) === shape(calls), { streamed, calls });
});

await check("unified: errors are exceptions with keygate's code", async () => {
  try {
    await client.chat.completions.create({ model: "openrouter/openai/gpt-4o", messages: HI });
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof OpenAI.PermissionDeniedError, `${e}`);
    assert(e.status === 403 && e.code === "no_credential", { status: e.status, code: e.code });
  }
  try {
    await client.chat.completions.create({
      model: CLAUDE,
      messages: [{ role: "user", content: "my key is AKIAIOSFODNN7EXAMPLE, keep it" }],
    });
    throw new Error("no error");
  } catch (e) {
    assert(e instanceof OpenAI.UnprocessableEntityError, `${e}`);
    assert(e.status === 422 && e.code === "prompt_blocked", { status: e.status, code: e.code });
    assert(!e.message.includes("AKIAIOSFODNN7EXAMPLE"), "the value is never repeated");
  }
});

console.log(`sdk (node): ${results.passed} passed, ${results.failed} failed`);
process.exit(results.failed ? 1 : 0);
