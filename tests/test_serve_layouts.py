"""The message layouts real clients send, through `starchat serve` with the real clients.

One server on the demo model (its format is ChatML) for the module. Each accepted layout is
checked on the exact prompt bytes: greedy, a chat reply equals the raw ``/v1/completions``
continuation of the prompt text the format renders for that layout (formats.py), so the
server built exactly that prompt. Refusals are 400s naming the message.

Both sides of such a comparison start from an empty KV cache (:func:`fresh`; no prompt cache on
disk): llama.cpp's logits depend on how a reused prefix was computed (with flash attention on an
AVX2 CPU even batches of 64+ tokens differ by split), which would make the oracle flip at a
near-tie for reasons that have nothing to do with the prompt.
"""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from starchat_cli.engine.prompting.formats import ChatMLFormat, Message
from tests.helpers.servers import start_server, stop_server

pytestmark = pytest.mark.e2e

MAX = 12
QUESTION = "Write a Python function that adds two numbers."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("layouts-home"))
    env = {"STARCHAT_HOME": home, "STARCHAT_PROMPT_CACHE": "0"}
    proc, base = start_server("--ctx", "2048", "--draft", "off", env=env)
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def fresh(client: openai.OpenAI) -> None:
    """Leave the worker's KV cache holding a prompt no test shares a first token with: the next
    request evaluates all of its prompt from position 0, as on a freshly loaded model."""
    client.completions.create(model="demo", prompt="Zebra", max_tokens=1, temperature=0)


def raw(client: openai.OpenAI, prompt: str | list[int], max_tokens: int = MAX) -> str:
    """The greedy continuation of ``prompt`` with no chat template (from an empty KV cache)."""
    fresh(client)
    res = client.completions.create(model="demo", prompt=prompt, max_tokens=max_tokens, temperature=0)
    return res.choices[0].text


def chat(client: openai.OpenAI, messages: list[dict]) -> str:
    fresh(client)
    res = client.chat.completions.create(model="demo", messages=messages, max_tokens=MAX, temperature=0)  # type: ignore[arg-type]
    return res.choices[0].message.content or ""


def test_an_assistant_prefill_is_continued_and_only_the_continuation_returned(client):
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "```python\n"},
    ]
    reply = chat(client, messages)
    prompt = ChatMLFormat().prompt(
        [Message("system", "S"), Message("user", QUESTION), Message("assistant", "```python\n")]
    )
    assert prompt.endswith("<|im_start|>assistant\n```python\n")  # no <|im_end|> after the prefill
    assert reply == raw(client, prompt) and reply and not reply.startswith("```")
    fresh(client)
    stream = client.chat.completions.create(
        model="demo",
        messages=messages,
        max_tokens=MAX,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply


def aider_body() -> dict:
    """A request shaped as aider's (system prompt, example turns, the files, the request, then a
    trailing system reminder), streamed, the model set to the served one."""
    return {
        "model": "demo",
        "messages": [
            {"role": "system", "content": "Act as an expert software developer.\nAlways use best practices."},
            {"role": "user", "content": "Change get_factorial() to use math.factorial"},
            {"role": "assistant", "content": "To make this change we need to modify `mathweb/flask/app.py`."},
            {
                "role": "user",
                "content": "I switched to a new code base. Please don't consider the above files.",
            },
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": QUESTION},
            {"role": "system", "content": "# Reply in English.\nUse SEARCH/REPLACE blocks."},
        ],
        "temperature": 0,
        "max_tokens": MAX,
        "stream": True,
    }


def test_aiders_trailing_system_reminder_is_a_system_turn_in_place(server, client):
    body = aider_body()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer unused"}
    fresh(client)
    res = httpx.post(
        f"{server}/v1/chat/completions", content=json.dumps(body).encode(), headers=headers, timeout=120
    )
    assert res.status_code == 200, res.text
    events = [json.loads(line[6:]) for line in res.text.splitlines() if line.startswith("data: {")]
    reply = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    msgs = [Message(m["role"], m["content"]) for m in body["messages"]]
    prompt = ChatMLFormat().prompt(msgs)
    assert prompt.endswith(
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>system\n# Reply in English.\nUse SEARCH/REPLACE blocks.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert reply == raw(client, prompt)


def test_null_content_text_parts_and_developer_read_as_plain_messages(client):
    messages = [
        {"role": "developer", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]},
        {"role": "assistant", "content": None},  # an earlier turn that only called a tool: empty
        {"role": "user", "content": QUESTION},
    ]
    prompt = ChatMLFormat().prompt(
        [
            Message("system", "S"),
            Message("user", "Say hi."),
            Message("assistant", ""),
            Message("user", QUESTION),
        ]
    )
    assert "<|im_start|>assistant\n<|im_end|>\n" in prompt
    assert chat(client, messages) == raw(client, prompt)


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"role": "tool", "tool_call_id": "c1", "content": "42"}, "messages[1].role 'tool' is not supported"),
        ({"role": "function", "name": "f", "content": "42"}, "messages[1].role 'function' is not supported"),
        (
            {
                "role": "user",
                "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "u"}}],
            },
            "messages[1].content[1].type 'image_url' is not supported",
        ),
    ],
)
def test_tool_results_and_images_are_400s_naming_the_message(client, extra, words):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, [{"role": "user", "content": "hi"}, extra])
    assert words in err.value.message
    if extra["role"] in ("tool", "function"):
        assert "StarChat models" in err.value.message and "must be a string" not in err.value.message


def test_a_list_of_prompts_gets_one_choice_each_with_usage_summed(client, server):
    prompts = ["def add(a, b):\n", "1, 2, 3,"]
    singles = [
        client.completions.create(model="demo", prompt=p, max_tokens=6, temperature=0) for p in prompts
    ]
    both = client.completions.create(model="demo", prompt=prompts, max_tokens=6, temperature=0)
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == [s.choices[0].text for s in singles]
    assert both.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert both.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    stream = client.completions.create(
        model="demo",
        prompt=prompts,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, finishes, usage = ["", ""], [None, None], None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.text
            finishes[c.index] = c.finish_reason or finishes[c.index]
        usage = chunk.usage or usage
    assert texts == [c.text for c in both.choices] and None not in finishes
    assert usage is not None and usage.total_tokens == both.usage.total_tokens


def test_a_list_of_prompts_with_n_gives_n_choices_per_prompt_in_order(client, server):
    prompts = ["def add(a, b):\n", "1, 2, 3,"]
    kw = dict(model="demo", max_tokens=6, temperature=0.9, seed=7)
    singles = [client.completions.create(prompt=p, n=2, **kw) for p in prompts]  # type: ignore[call-overload]
    both = client.completions.create(prompt=prompts, n=2, echo=True, **kw)  # type: ignore[call-overload]
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    expected = [prompts[i // 2] + singles[i // 2].choices[i % 2].text for i in range(4)]
    assert [c.text for c in both.choices] == expected  # prompt p's choices: seeds seed, seed+1
    assert both.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)  # each prompt once
    assert both.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    stream = client.completions.create(prompt=prompts, n=2, echo=True, stream=True, **kw)  # type: ignore[call-overload]
    texts = ["", "", "", ""]
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.text
    assert texts == expected
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(prompt=[[1, 2]], echo=True, **kw)  # type: ignore[call-overload]
    assert err.value.body["param"] == "echo"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(prompt=["a"] * 9, n=8, **kw)  # type: ignore[call-overload]
    assert "72 choices" not in err.value.message and "more than 64 choices" in err.value.message


def test_token_id_prompts_are_evaluated_as_given(client, demo_backend):
    text = "def add(a, b):\n"
    ids = demo_backend.tokenize(text)
    assert not demo_backend.add_bos  # so the text prompt is these ids exactly
    by_text = raw(client, text)
    assert raw(client, ids) == by_text
    many = client.completions.create(model="demo", prompt=[ids, ids[:3]], max_tokens=MAX, temperature=0)
    assert many.choices[0].text == by_text and len(many.choices) == 2
    mixed = client.completions.create(model="demo", prompt=[ids, text], max_tokens=MAX, temperature=0)  # type: ignore[arg-type]
    assert [c.text for c in mixed.choices] == [by_text, by_text]  # as llama-server takes a mixed list
    with pytest.raises(openai.BadRequestError) as err:
        raw(client, [ids[0], demo_backend.n_vocab + 5])
    assert "outside the vocabulary" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        raw(client, [1, -2])
    assert "token ids" in err.value.message


def test_completions_without_max_tokens_stop_at_openais_16(client):
    res = client.completions.create(model="demo", prompt="1, 2, 3, 4, 5, 6, 7,", temperature=0)
    assert res.usage.completion_tokens == 16 and res.choices[0].finish_reason == "length"


def test_ollama_chat_takes_the_same_layouts(server, client):
    ol = ollama.Client(host=server)
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": QUESTION},
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "```python\n"},
    ]
    fresh(client)
    reply = ol.chat(
        model="demo", messages=messages, stream=False, options={"temperature": 0, "num_predict": MAX}
    )
    prompt = ChatMLFormat().prompt([Message(m["role"], m["content"]) for m in messages])
    assert prompt.endswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\n```python\n")
    assert reply.message.content == raw(client, prompt)
    with pytest.raises(ollama.ResponseError) as err:
        ol.chat(model="demo", messages=[{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}])
    assert err.value.status_code == 400 and "messages[1].role 'tool'" in err.value.error
