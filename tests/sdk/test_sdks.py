"""The official OpenAI and Anthropic Python SDKs, pointed at keygate by base_url and
api_key only, against keygate-mock. Run by scripts/sdk-test.sh, which starts both."""

import json
import os
import sys
import urllib.request

from anthropic import Anthropic
import openai as openai_sdk
from openai import OpenAI

KEYGATE = os.environ["KEYGATE_URL"]
MOCK = os.environ["MOCK_URL"]
TOKEN = os.environ["KEYGATE_TOKEN"]
OPENAI_KEY = os.environ["OPENAI_KEY"]
ANTHROPIC_KEY = os.environ["ANTHROPIC_KEY"]
# A second user with no key of their own: served by the operator's shared (demo) key.
DEMO_TOKEN = os.environ["DEMO_TOKEN"]
GEMINI_KEY = os.environ["GEMINI_KEY"]
VOYAGE_KEY = os.environ["VOYAGE_KEY"]

results = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        results["passed"] += 1
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        results["failed"] += 1
        print(f"FAIL {name}: {e!r}")


def get_json(url, token=None):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def mock_requests():
    return get_json(f"{MOCK}/__mock/requests")


def send_json(method, url, token, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


openai = OpenAI(base_url=f"{KEYGATE}/proxy/openai/v1", api_key=TOKEN, max_retries=0)
claude = Anthropic(base_url=f"{KEYGATE}/proxy/anthropic", api_key=TOKEN, max_retries=0)
# The unified endpoint: the OpenAI SDK, any provider behind it.
unified = OpenAI(base_url=f"{KEYGATE}/v1", api_key=TOKEN, max_retries=0)
CLAUDE = "anthropic/claude-sonnet-4-20250514"
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]


def openai_plain():
    reply = openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    assert reply.usage.prompt_tokens == 11


def openai_stream():
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in openai.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        if chunk.choices
    )
    assert text == "Hello from keygate-mock!", text


def openai_models():
    ids = [m.id for m in openai.models.list()]
    assert "gpt-4o" in ids, ids


def anthropic_plain():
    reply = claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].text == "Hello from keygate-mock!", reply
    assert reply.usage.output_tokens == 7


def anthropic_stream():
    with claude.messages.stream(model="claude-sonnet-4-20250514", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from keygate-mock!", text
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 7, final.usage


def provider_saw_the_users_keys_never_the_token():
    seen = mock_requests()
    assert seen, "the mock saw no request"
    for request in seen:
        blob = json.dumps(request)
        assert TOKEN not in blob, "the keygate token reached the provider"
        assert request["credential"] in (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY), request["credential"]
    assert any(r["credential_via"] == "x-api-key" for r in seen)
    assert any(r["credential_via"] == "authorization" for r in seen)


def usage_is_recorded():
    import time

    deadline = time.time() + 10
    while True:
        report = get_json(f"{KEYGATE}/api/v1/usage?group_by=provider", TOKEN)
        rows = {row["key"]: row for row in report["rows"]}
        if rows.get("openai", {}).get("requests", 0) >= 3 and rows.get("anthropic", {}).get("requests", 0) >= 2:
            break
        assert time.time() < deadline, report
        time.sleep(0.2)
    # Every chat call reports 11 in / 7 out; the models list reports none.
    assert rows["openai"]["input_tokens"] == 22 and rows["openai"]["output_tokens"] == 14, rows["openai"]
    assert rows["anthropic"]["input_tokens"] == 22 and rows["anthropic"]["output_tokens"] == 14, rows["anthropic"]
    assert rows["openai"]["cost_usd"] > 0


def unified_text():
    reply = unified.chat.completions.create(
        model=CLAUDE, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    assert reply.choices[0].finish_reason == "stop", reply
    assert reply.usage.prompt_tokens == 11 and reply.usage.completion_tokens == 7, reply.usage


def unified_stream_with_usage():
    chunks = list(
        unified.chat.completions.create(
            model=CLAUDE, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from keygate-mock!", text
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 7, chunks[-1]


def unified_tool_calls():
    ask = [{"role": "user", "content": "weather and time?"}]
    reply = unified.chat.completions.create(model=CLAUDE, messages=ask, tools=TOOLS)
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["weather", "time"], reply
    assert json.loads(calls[0].function.arguments) == {"city": "mock city"}, calls[0]
    # Streamed: the SDK's own accumulator puts each call together by its index.
    with unified.beta.chat.completions.stream(model=CLAUDE, messages=ask, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed] == [
        (c.function.name, json.loads(c.function.arguments)) for c in calls
    ], streamed
    # The results go back and the model answers.
    results = [{"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls]
    answer = unified.chat.completions.create(model=CLAUDE, messages=ask + [reply.choices[0].message.model_dump(exclude_none=True)] + results, tools=TOOLS)
    assert answer.choices[0].message.content == "Hello from keygate-mock!", answer


def unified_errors_are_sdk_exceptions():
    try:
        unified.chat.completions.create(model="openrouter/openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error")
    except openai_sdk.PermissionDeniedError as e:
        assert e.status_code == 403 and e.code == "no_credential", (e.status_code, e.code)
    try:
        unified.chat.completions.create(model=CLAUDE, n=2, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error")
    except openai_sdk.BadRequestError as e:
        assert e.code == "invalid_request" and "`n` must be 1" in e.message, e


GEMINI = "gemini/gemini-2.0-flash"


def unified_gemini_text():
    reply = unified.chat.completions.create(
        model=GEMINI, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    assert reply.choices[0].finish_reason == "stop", reply
    assert reply.usage.prompt_tokens == 11 and reply.usage.completion_tokens == 7, reply.usage
    seen = mock_requests()[-1]
    assert seen["path"] == "/v1beta/models/gemini-2.0-flash:generateContent", seen["path"]
    assert seen["credential"] == GEMINI_KEY and seen["credential_via"] == "x-goog-api-key", seen


def unified_gemini_stream_with_usage():
    chunks = list(
        unified.chat.completions.create(
            model=GEMINI, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from keygate-mock!", text
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 7, chunks[-1]


def unified_gemini_tool_calls():
    ask = [{"role": "user", "content": "weather and time?"}]
    reply = unified.chat.completions.create(model=GEMINI, messages=ask, tools=TOOLS)
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["weather", "time"], reply
    assert json.loads(calls[0].function.arguments) == {"city": "mock city"}, calls[0]
    with unified.beta.chat.completions.stream(model=GEMINI, messages=ask, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in streamed] == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in calls
    ], streamed
    results = [{"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls]
    answer = unified.chat.completions.create(model=GEMINI, messages=ask + [reply.choices[0].message.model_dump(exclude_none=True)] + results, tools=TOOLS)
    assert answer.choices[0].message.content == "Hello from keygate-mock!", answer


BEDROCK = "bedrock/anthropic.claude-3-haiku-20240307-v1:0"
AWS_KEY_ID = os.environ["AWS_KEY_ID"]


def unified_bedrock_text():
    reply = unified.chat.completions.create(
        model=BEDROCK, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    assert reply.choices[0].finish_reason == "stop", reply
    assert reply.usage.prompt_tokens == 11 and reply.usage.completion_tokens == 7, reply.usage
    seen = mock_requests()[-1]
    assert seen["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", seen["path"]
    assert seen["credential"] == AWS_KEY_ID and seen["credential_via"] == "sigv4", seen
    assert json.loads(seen["body"])["system"] == [{"text": "Be brief."}], seen["body"]


def unified_bedrock_stream_with_usage():
    chunks = list(
        unified.chat.completions.create(
            model=BEDROCK, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "hi"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from keygate-mock!", text
    assert chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 7, chunks[-1]
    assert mock_requests()[-1]["path"].endswith("/converse-stream")


def unified_bedrock_tool_calls():
    ask = [{"role": "user", "content": "weather and time?"}]
    reply = unified.chat.completions.create(model=BEDROCK, messages=ask, tools=TOOLS)
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and [c.function.name for c in calls] == ["weather", "time"], reply
    assert json.loads(calls[0].function.arguments) == {"city": "mock city"}, calls[0]
    # Streamed (ConverseStream's event-stream frames): the SDK's accumulator puts each
    # call together by its index.
    with unified.beta.chat.completions.stream(model=BEDROCK, messages=ask, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in streamed] == [
        (c.function.name, json.loads(c.function.arguments)) for c in calls
    ], streamed
    results = [{"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in calls]
    answer = unified.chat.completions.create(model=BEDROCK, messages=ask + [reply.choices[0].message.model_dump(exclude_none=True)] + results, tools=TOOLS)
    assert answer.choices[0].message.content == "Hello from keygate-mock!", answer


def unified_prompt_blocked():
    try:
        unified.chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "deploy with AKIAIOSFODNN7EXAMPLE please"}]
        )
        raise AssertionError("no error")
    except openai_sdk.UnprocessableEntityError as e:
        assert e.status_code == 422 and e.code == "prompt_blocked", (e.status_code, e.code)
        assert "aws_access_key" in e.message and "AKIAIOSFODNN7EXAMPLE" not in e.message, e.message


def unified_quota_exhausted():
    unified_demo = OpenAI(base_url=f"{KEYGATE}/v1", api_key=DEMO_TOKEN, max_retries=0)
    reply = unified_demo.chat.completions.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    # The operator shrinks the demo allowance below what a call needs.
    settings = get_json(f"{KEYGATE}/api/v1/admin/settings", TOKEN)
    tiny = json.loads(json.dumps(settings))
    tiny["demo"]["tokens_per_day"] = 5
    send_json("PUT", f"{KEYGATE}/api/v1/admin/settings", TOKEN, tiny)
    try:
        unified_demo.chat.completions.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error")
    except openai_sdk.RateLimitError as e:
        assert e.status_code == 429 and e.code == "quota_exhausted", (e.status_code, e.code)
        assert e.response.headers.get("retry-after"), e.response.headers
    finally:
        send_json("PUT", f"{KEYGATE}/api/v1/admin/settings", TOKEN, settings)


# A 1x1 PNG, sent as a data: URL.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def unified_images():
    reply = unified.chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]}],
    )
    assert reply.choices[0].message.content == "Hello from keygate-mock!", reply
    seen = mock_requests()[-1]
    assert seen["path"] == "/v1/messages" and seen["credential"] == ANTHROPIC_KEY, seen["path"]
    blocks = json.loads(seen["body"])["messages"][0]["content"]
    assert blocks[0] == {"type": "text", "text": "What is in this image?"}, blocks
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}, blocks


def unified_embeddings_openai():
    # The SDK asks for base64 unless told otherwise, and decodes it.
    reply = unified.embeddings.create(model="openai/text-embedding-3-small", input=["first", "second"], dimensions=64)
    assert [d.index for d in reply.data] == [0, 1], reply
    assert all(len(d.embedding) == 64 for d in reply.data), [len(d.embedding) for d in reply.data]
    assert reply.usage.prompt_tokens == 11 and reply.usage.total_tokens == 11, reply.usage
    seen = mock_requests()[-1]
    assert seen["path"] == "/v1/embeddings" and seen["credential"] == OPENAI_KEY, seen
    assert json.loads(seen["body"])["model"] == "text-embedding-3-small", seen["body"]


def unified_embeddings_voyage():
    reply = unified.embeddings.create(model="voyage/voyage-3.5", input=["first", "second", "third"], encoding_format="float")
    assert len(reply.data) == 3, reply
    assert len({len(d.embedding) for d in reply.data}) == 1 and len(reply.data[0].embedding) == 1024, reply.data[0]
    assert reply.usage.prompt_tokens == 11, reply.usage
    seen = mock_requests()[-1]
    assert seen["credential"] == VOYAGE_KEY and seen["credential_via"] == "authorization", seen
    assert json.loads(seen["body"])["model"] == "voyage-3.5", seen["body"]


def unified_embeddings_gemini():
    model = "gemini/gemini-embedding-001"
    encoded = unified.embeddings.create(model=model, input=["first", "second"], dimensions=128)
    assert [d.index for d in encoded.data] == [0, 1], encoded
    assert all(len(d.embedding) == 128 for d in encoded.data), [len(d.embedding) for d in encoded.data]
    # Gemini reports no counts: keygate's estimate (11 bytes of text, three a token).
    assert encoded.usage.prompt_tokens == 4 and encoded.usage.total_tokens == 4, encoded.usage
    seen = mock_requests()[-1]
    assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents", seen["path"]
    sent = json.loads(seen["body"])["requests"]
    assert [r["content"]["parts"][0]["text"] for r in sent] == ["first", "second"], sent
    assert all(r["outputDimensionality"] == 128 and r["model"] == "models/gemini-embedding-001" for r in sent), sent
    # As floats: the same vectors (base64 carried them as f32).
    floats = unified.embeddings.create(model=model, input=["first", "second"], dimensions=128, encoding_format="float")
    for a, b in zip(encoded.data, floats.data):
        assert all(abs(x - y) < 1e-6 for x, y in zip(a.embedding, b.embedding)), (a.embedding[:4], b.embedding[:4])
    try:
        unified.embeddings.create(model=model, input=[[1, 2, 3]])
        raise AssertionError("no error")
    except openai_sdk.BadRequestError as e:
        assert e.code == "invalid_request" and "token arrays" in e.message, e


def unified_models():
    ids = [m.id for m in unified.models.list()]
    assert CLAUDE in ids and "openai/gpt-4o" in ids, ids


for name, fn in [
    ("openai chat", openai_plain),
    ("openai chat, streamed", openai_stream),
    ("openai models", openai_models),
    ("anthropic messages", anthropic_plain),
    ("anthropic messages, streamed", anthropic_stream),
    ("the provider saw the user's keys, never the keygate token", provider_saw_the_users_keys_never_the_token),
    ("usage recorded with tokens and cost", usage_is_recorded),
    ("unified: text from Anthropic", unified_text),
    ("unified: stream with usage", unified_stream_with_usage),
    ("unified: tool calls, streamed and not, and their results", unified_tool_calls),
    ("unified: errors are SDK exceptions with keygate's code", unified_errors_are_sdk_exceptions),
    ("unified: models", unified_models),
    ("unified: prompt_blocked is an SDK exception with its code", unified_prompt_blocked),
    ("unified: quota_exhausted is an SDK exception with its code", unified_quota_exhausted),
    ("unified: text from Bedrock (Converse)", unified_bedrock_text),
    ("unified: Bedrock stream with usage", unified_bedrock_stream_with_usage),
    ("unified: Bedrock tool calls, streamed and not, and their results", unified_bedrock_tool_calls),
    ("unified: text from Gemini", unified_gemini_text),
    ("unified: Gemini stream with usage", unified_gemini_stream_with_usage),
    ("unified: Gemini tool calls, streamed and not, and their results", unified_gemini_tool_calls),
    ("unified: a data: URL image reaches Anthropic as a base64 block", unified_images),
    ("unified: OpenAI embeddings (base64, dimensions)", unified_embeddings_openai),
    ("unified: Voyage embeddings", unified_embeddings_voyage),
    ("unified: Gemini embeddings (base64 and float, dimensions, estimated usage)", unified_embeddings_gemini),
]:
    check(name, fn)

# scripts/sdk-test.sh adds these to the Node package's and prints the `sdk:` summary.
print(f"sdk (python): {results['passed']} passed, {results['failed']} failed")
sys.exit(1 if results["failed"] else 0)
