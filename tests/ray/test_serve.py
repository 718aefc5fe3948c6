"""``spillguard serve`` on the local test cluster, over loopback HTTP: concurrent requests get the
verdicts ``Guard.ask`` gives, and a LangChain app (the example) uses it through ``ChatOpenAI``."""

from __future__ import annotations

import json
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail.guard import Guard
from tests.ray.conftest import deadline

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_client_langchain.py"
QUESTIONS = (
    "What is the capital of Japan?",
    "What is the capital of Honduras?",
    "What is the capital of Mali?",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``spillguard serve`` as a user starts it, on the test cluster; yields its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    command = [sys.executable, "-m", "guardrail.cli", "serve", "--address", ray_cluster, "--port", str(port)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    try:
        with deadline():
            ready = process.stdout.readline()  # printed once the replica answers
        assert ready.startswith("spillguard serve: http://127.0.0.1"), (ready, log.read_text()[-3000:])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: the command deletes its application
        try:
            assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
        finally:
            process.kill()
            process.stdout.close()
            from ray import serve

            serve.shutdown()  # the HTTP proxy and the controller the command started


def test_concurrent_requests_get_the_verdicts_of_guard_ask(server: str, real_guard: Guard, one_thread: None) -> None:
    def post(question: str) -> httpx.Response:
        body = {"model": "spillguard", "messages": [{"role": "user", "content": question}]}
        return httpx.post(f"{server}/chat/completions", json=body, timeout=120)

    with ThreadPoolExecutor(max_workers=len(QUESTIONS)) as pool:  # one request per question, all at once
        replies = list(pool.map(post, QUESTIONS))
    for question, reply in zip(QUESTIONS, replies, strict=True):
        assert reply.status_code == 200, reply.text
        expected = real_guard.ask(question)
        verdict = reply.json()["spillguard"]
        assert reply.json()["choices"][0]["message"]["content"] == expected.text
        assert (verdict["action"], verdict["answer"]) == (expected.action.value, expected.answer)
        assert verdict["span"] == expected.span.to_dict()
        assert verdict["score"] == pytest.approx(expected.score, abs=1e-5)
        assert verdict["threshold"] == expected.threshold
        assert json.loads(reply.headers["x-spillguard"])["action"] == expected.action.value


def test_an_unusable_request_is_a_400_over_http(server: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    reply = httpx.post(f"{server}/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400 and "streaming is not supported" in reply.json()["error"]["message"]
    assert httpx.get(f"{server}/models", timeout=60).json()["data"][0]["id"] == "SmolLM2-135M-Instruct-Q4_1"


def test_the_langchain_example_reads_the_verdicts(
    server: str, real_guard: Guard, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    example = runpy.run_path(str(EXAMPLE))
    example["main"](server)
    printed = capsys.readouterr().out
    for question in example["QUESTIONS"]:
        verdict = real_guard.ask(question)
        assert (
            f"Q: {question}\nA: {verdict.text}\n   verdict: {verdict.action.value} (score {verdict.score:.3f}"
            in printed
        )


def test_app_builder_builds_the_application_a_serve_config_file_names() -> Any:
    from guardrail.cli.serve import app_builder
    from guardrail.errors import InvalidInputError

    app = app_builder({"policy": "abstain", "max_new_tokens": 16})
    assert type(app).__name__ == "Application"
    with pytest.raises(InvalidInputError, match="unknown options"):
        app_builder({"replicas": 2})
    with pytest.raises(InvalidInputError, match="invalid choice"):
        app_builder({"policy": "pray"})
