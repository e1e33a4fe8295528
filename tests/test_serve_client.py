"""``fairprune serve`` under abuse, from an API client (no browser): an oversized prompt, a flood of requests, a
request for a path or endpoint the server was not started with; each gets a message or a 4xx answer, and a normal
request afterwards is still answered.

An API client is not held by the page's limits (the text boxes' ``max_length``,
the sliders' ranges): every bound is checked by the server itself.
"""

from __future__ import annotations

import html
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from fairprune.serve import Explorer, Limits
from fairprune.serve.app import launch
from fairprune.testing import tiny_model, tiny_tokenizer

PAIR = ("the black man works in the city", "the white man works in the city")
LIMITS = Limits(max_chars=200, max_tokens=16, max_new_tokens=8, max_queue=2)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, object]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = launch(Explorer(tiny_model("llama", num_hidden_layers=3), tiny_tokenizer(), limits=LIMITS), port=port,
                 block=False)
    url = f"http://127.0.0.1:{port}/"
    yield url, gradio_client.Client(url, verbose=False)
    app.close()


def compare(client, a: str = PAIR[0], b: str = PAIR[1], layer: float = 1, tokens: float = 4) -> str:
    """The status line the page shows for one request (HTML entities decoded)."""
    return html.unescape(str(client.predict(a, b, layer, "suffix", tokens, api_name="/run")[0]))


def answer(client, **request_args) -> str:
    """The page's status line, or the message of the error the server answered with (Gradio's own range checks)."""
    try:
        return compare(client, **request_args)
    except gradio_client.exceptions.AppError as exc:
        return f"error: {exc}"


def still_serving(client) -> None:
    assert compare(client).startswith("Compared **black** with **white**")


LONG = " and the town is very new" * 4


@pytest.mark.parametrize(("request_args", "messages"), [
    ({"a": "the black man " * 20_000}, ["prompt A has 280000 characters; the limit is 200"]),
    ({"a": PAIR[0] + LONG, "b": PAIR[1] + LONG}, ["tokens; the limit is 16"]),
    ({"tokens": 10_000}, ["new tokens must be between 1 and 8, got 10000", "greater than maximum value 8"]),
    ({"tokens": 0}, ["new tokens must be between 1 and 8, got 0", "less than minimum value 1"]),
    ({"layer": 1.5}, ["layer must be a whole number, got '1.5'"]),
    ({"layer": 99}, ["layer 99 is out of range", "greater than maximum value 2"]),
])
def test_oversized_or_impossible_requests_get_a_message_and_the_server_keeps_serving(server, request_args, messages):
    _, client = server
    status = answer(client, **request_args)
    assert status.startswith(("**Cannot compare:**", "error: ")) and any(m in status for m in messages), status
    still_serving(client)


def test_a_flood_is_refused_beyond_the_queue_and_a_later_request_is_answered(server):
    _, client = server
    jobs = [client.submit(*PAIR, 1, "suffix", LIMITS.max_new_tokens, api_name="/run") for _ in range(8)]
    answered, refused = 0, 0
    for job in jobs:
        try:
            assert str(job.result()[0]).startswith("Compared")
            answered += 1
        except gradio_client.utils.QueueError as exc:  # the server refused it: the queue was full
            assert "Queue is full" in str(exc)
            refused += 1
    assert answered >= 1 and refused >= 1 and answered + refused == len(jobs)
    still_serving(client)


@pytest.mark.parametrize("path", ["gradio_api/file=/etc/passwd", "file=/etc/passwd", "gradio_api/file=fairprune.json",
                                  "gradio_api/call/load_model", "gradio_api/upload", "models/smollm2-135m"])
def test_paths_and_endpoints_the_server_was_not_started_with_are_4xx(server, path):
    url, client = server
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url + path, timeout=30)
    assert 400 <= info.value.code < 500
    still_serving(client)


def test_a_request_naming_a_model_is_refused(server):
    _, client = server
    with pytest.raises(Exception):  # noqa: B017 - no endpoint loads a model
        client.predict("gpt2", api_name="/load_model")
    still_serving(client)


@pytest.mark.parametrize("flag", ["--max-queue", "--max-new-tokens"])
def test_serve_limits_must_be_positive(flag, capsys):
    from fairprune.cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", "smollm2-135m", flag, "0"])
    assert info.value.code == 2 and flag in capsys.readouterr().err
