"""python -m translate.serve over real HTTP on loopback, with a small trained model.

Each server is a real ``python -m translate.serve`` process on a free port; requests go
through http.client (and LibreTranslate's own Python client), answers are checked against
``Translator.translate`` of the same input in this process.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install "
                                      "'translate[serve]')")
pytest.importorskip("uvicorn")

from translate.inference.html import translate_html  # noqa: E402
from translate.inference.translator import Translator  # noqa: E402

START_TIMEOUT = 120.0


class Server:
    """A ``python -m translate.serve`` process on a free loopback port."""

    def __init__(self, run_dir: Path, log: Path, *args: str) -> None:
        self.log_path = log
        self._log = log.open("w")
        cmd = [sys.executable, "-m", "translate.serve", "--model", str(run_dir), "--port", "0",
               "--threads", "1", "--shortlist", "off", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_port()
        self._wait_ready()

    def _wait_port(self) -> int:
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited: {self.log_path.read_text()}")
            time.sleep(0.05)
        pytest.fail(f"the server did not start: {self.log_path.read_text()}")

    def _wait_ready(self) -> None:
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            if self.request("GET", "/ready")[0] == 200:
                return
            time.sleep(0.05)
        pytest.fail(f"the server never became ready: {self.log_path.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 60.0):
        """(status, headers, parsed JSON or text) of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        ctype = response.getheader("content-type", "")
        value = json.loads(data) if "json" in ctype else data.decode("utf-8")
        return response.status, dict(response.getheaders()), value

    def post(self, path: str, payload, **kw):
        body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, body, headers, **kw)

    def metric(self, name: str) -> float:
        text = self.request("GET", "/metrics")[2]
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self._log.close()


@pytest.fixture(scope="module")
def sources(multi30k: Path) -> list[str]:
    return (multi30k / "test_2016_flickr.de").read_text("utf-8").splitlines()[:400]


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.load(trained_run, shortlist=False)


@pytest.fixture(scope="module")
def server(trained_run: Path, tmp_path_factory):
    srv = Server(trained_run, tmp_path_factory.mktemp("serve") / "server.log", "--verbose")
    yield srv
    assert srv.stop(signal.SIGINT) == 0, srv.log_path.read_text()


def texts(results) -> list[str]:
    return [r.text for r in results]


# --------------------------------------------------------------------------- the two APIs


def test_health_ready_languages(server: Server, trained_run: Path) -> None:
    assert server.request("GET", "/health")[:3:2] == (200, {"status": "ok"})
    status, _, body = server.request("GET", "/ready")
    assert (status, body) == (200, {"status": "ready", "models": {trained_run.name: "ready"}})
    status, _, langs = server.request("GET", "/languages")
    assert status == 200
    assert langs == [{"code": "de", "name": "German", "targets": ["en"], "pivoted": {}},
                     {"code": "en", "name": "English", "targets": [], "pivoted": {}}]
    status, _, spec = server.request("GET", "/openapi.json")
    assert status == 200 and {"/translate", "/v1/translate", "/languages"} <= set(spec["paths"])
    assert "application/x-www-form-urlencoded" in (
        spec["paths"]["/translate"]["post"]["requestBody"]["content"])


def test_libretranslate_json_and_form(server: Server, translator: Translator,
                                      sources: list[str]) -> None:
    a, b = sources[:2]
    want = texts(translator.translate([a, b]))
    status, _, body = server.post("/translate", {"q": a, "source": "de", "target": "en"})
    assert (status, body) == (200, {"translatedText": want[0]})
    status, _, body = server.post("/translate", {"q": [a, "", b], "source": "auto",
                                                 "target": "en", "format": "text"})
    assert (status, body["translatedText"]) == (200, [want[0], "", want[1]])
    # Detected: German, and nothing in the empty text.
    assert [(d["language"], d["confidence"] > 50) for d in body["detectedLanguage"]] == [
        ("de", True), ("de", False), ("de", True)]
    # Form fields, as LibreTranslate's own clients send them; a repeated q is a list.
    from urllib.parse import urlencode

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = server.request("POST", "/translate", urlencode(
        {"q": a, "source": "de", "target": "en", "api_key": ""}).encode(), form)
    assert (status, body) == (200, {"translatedText": want[0]})
    status, _, body = server.request("POST", "/translate", urlencode(
        [("q", a), ("q", b), ("source", "de"), ("target", "en")]).encode(), form)
    assert (status, body) == (200, {"translatedText": want})
    # Each line of a text is translated on its own, and the lines come back in place.
    status, _, body = server.post("/translate", {"q": f"{a}\n\n{b}", "source": "de",
                                                 "target": "en"})
    assert (status, body) == (200, {"translatedText": f"{want[0]}\n\n{want[1]}"})
    # alternatives: the n-best list after the best.
    best = translator.translate([a], n_best=3)[0]
    status, _, body = server.post("/translate", {"q": a, "source": "de", "target": "en",
                                                 "alternatives": 2})
    assert status == 200
    assert body == {"translatedText": best.text, "alternatives": [t for t, _ in best.nbest[1:]]}


def test_libretranslate_multipart_and_client_library(server: Server, translator: Translator,
                                                     sources: list[str]) -> None:
    a = sources[2]
    want = translator.translate([a])[0].text
    boundary = "xYzZy"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    for k, v in (("q", a), ("source", "de"), ("target", "en")))
    body = (parts + f"--{boundary}--\r\n").encode()
    status, _, answer = server.request(
        "POST", "/translate", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (status, answer) == (200, {"translatedText": want})
    libre = pytest.importorskip("libretranslatepy", reason="LibreTranslate's Python client "
                                                           "(libretranslatepy) is not installed")
    client = libre.LibreTranslateAPI(f"http://127.0.0.1:{server.port}/")
    assert client.translate(a, "de", "en") == want
    assert client.languages()[0]["code"] == "de"


def test_libretranslate_refusals(server: Server) -> None:
    status, _, body = server.post("/translate", {"q": "Hallo", "source": "fr", "target": "en"})
    assert (status, body) == (400, {"error": "source: 'fr' is not served; this service "
                                             "translates from de (see GET /languages)"})
    status, _, body = server.post("/translate", {"q": "Hallo", "source": "de", "target": "cs"})
    assert (status, body) == (400, {"error": "target: de to cs is not served; from de this "
                                             "service translates to en (see GET /languages)"})
    status, _, body = server.post("/translate", {"q": "Hallo", "source": "de", "target": "en",
                                                 "format": "rtf"})
    assert (status, body) == (400, {"error": "format: expected text or html, got 'rtf'"})
    status, _, body = server.post("/translate", {"source": "de", "target": "en"})
    assert status == 400 and body["error"].startswith("q: missing")
    status, _, body = server.post("/translate", {"q": "x", "source": "de", "target": "en",
                                                 "alternatives": 9})
    assert status == 400 and "alternatives: expected 0 to 2" in body["error"]


def test_v1_matches_infer_jsonl(server: Server, translator: Translator, sources: list[str],
                                trained_run: Path, tmp_path: Path) -> None:
    batch = [sources[3], "", "   ", sources[4]]
    status, _, body = server.post("/v1/translate", {"sentences": batch, "n_best": 2})
    assert status == 200 and body["model"] == trained_run.name
    got = body["translations"]
    # The same records `infer --format jsonl --n-best 2` writes for the same lines.
    src = tmp_path / "in.de"
    src.write_text("\n".join(batch) + "\n", "utf-8")
    out = subprocess.run([sys.executable, "-m", "translate.infer", "--model", str(trained_run),
                          "--input", str(src), "--format", "jsonl", "--n-best", "2",
                          "--shortlist", "off", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    want = [json.loads(line) for line in out.splitlines()]
    assert [set(g) for g in got] == [set(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["translation"] == w["translation"]
        assert [n["translation"] for n in g.get("nbest", [])] == [
            n["translation"] for n in w.get("nbest", [])]
        assert g["domains"].keys() == w["domains"].keys()
        if w["score"] is None:
            assert g["score"] is None
        else:
            assert g["score"] == pytest.approx(w["score"], abs=1e-4)
    assert got[1]["translation"] == got[2]["translation"] == ""
    assert set(got[0]["domain_probs"]) == {"captions", "general"}
    # Domains: this model is not domain-conditioned, so labels are refused in one line and
    # "none" (what it does anyway) is accepted.
    status, _, body = server.post("/v1/translate", {"sentences": ["Hallo"],
                                                    "domain": "captions"})
    assert status == 400 and "trained without domain conditioning" in body["error"]
    status, _, body = server.post("/v1/translate", {"sentences": [sources[3]],
                                                    "domain": "none"})
    assert status == 200 and body["translations"][0]["translation"] == got[0]["translation"]


def tagged_documents(sources: list[str]) -> list[str]:
    """Multi30k captions as HTML with inline tags around a word or two (nested in one),
    one document of two paragraphs, and an empty one."""
    docs = []
    for i, line in enumerate(sources[40:46]):
        words = line.split()
        a, b = i % (len(words) - 1), len(words) - 2 - i % 3
        words[a] = f"<b>{words[a]}</b>"
        if b > a:
            words[b] = f'<a href="https://example.com/{i}?a=1&amp;b=2">{words[b]}</a>'
        docs.append(f"<p>{' '.join(words)}</p>")
    docs[1] = docs[1].replace("<b>", "<b><i>", 1).replace("</b>", "</i></b>", 1)
    return [*docs, f"<p>{sources[50]}</p><p>Ein <em>roter</em> Hund läuft.</p>", ""]


def test_html_tags_are_placed_through_the_attention(server: Server, translator: Translator,
                                                    sources: list[str]) -> None:
    """HTML documents answer, on both APIs, what ``Translator.translate(..., format="html")``
    answers, whose tags follow the attention (placed in proportion to the words'
    positions, some would land elsewhere)."""
    docs = tagged_documents(sources)
    want = texts(translator.translate(docs, format="html"))
    proportional = texts(translate_html(translator, docs, align="proportional"))
    assert want != proportional and want[-1] == ""
    status, _, body = server.post("/translate", {"q": docs, "source": "de", "target": "en",
                                                 "format": "html"})
    assert (status, body) == (200, {"translatedText": want})
    status, _, body = server.post("/v1/translate", {"sentences": docs, "format": "html"})
    assert status == 200 and [t["translation"] for t in body["translations"]] == want


# --------------------------------------------------------------------------- batching


def test_concurrent_requests_get_their_own_answers(server: Server, translator: Translator,
                                                   sources: list[str]) -> None:
    """150 requests at once, 1-3 sentences each, both APIs: every answer is its own input's
    translation, in its order, and the worker decoded them in shared batches (many sentences
    per decoding step on average)."""
    requests = [sources[10 + 2 * i: 10 + 2 * i + 1 + i % 3] for i in range(150)]
    flat = [s for r in requests for s in r]
    want = dict(zip(flat, texts(translator.translate(flat)), strict=True))
    steps_before = server.metric("translate_batch_sentences_count")
    rows_before = server.metric("translate_batch_sentences_sum")

    def call(i: int):
        if i % 2:
            status, _, body = server.post("/v1/translate", {"sentences": requests[i]})
            return status, [t["translation"] for t in body["translations"]]
        status, _, body = server.post("/translate", {"q": requests[i], "source": "de",
                                                     "target": "en"})
        return status, body["translatedText"]

    with ThreadPoolExecutor(150) as pool:
        answers = list(pool.map(call, range(150)))
    for request, (status, got) in zip(requests, answers, strict=True):
        assert status == 200
        assert got == [want[s] for s in request]
    steps = server.metric("translate_batch_sentences_count") - steps_before
    rows = server.metric("translate_batch_sentences_sum") - rows_before
    assert rows / steps > 4  # requests shared batches instead of decoding one by one


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def test_two_workers_serve_and_one_dying_leaves_the_other(trained_run: Path, tmp_path: Path,
                                                           translator: Translator,
                                                           sources: list[str]) -> None:
    """``--workers 2``: two worker processes answer concurrent requests, each with its own
    input's translation; SIGKILL one and the service stays ready, answering from the other,
    while a replacement warms up."""
    server = Server(trained_run, tmp_path / "serve.log", "--workers", "2")
    try:
        end = time.monotonic() + START_TIMEOUT
        while server.log_path.read_text().count("warmed up") < 2:
            assert time.monotonic() < end, server.log_path.read_text()
            time.sleep(0.05)
        workers = _children(server.proc.pid)
        texts = sources[40:100]
        want = [r.text for r in translator.translate(texts)]

        def call(text: str) -> tuple[int, str]:
            status, _, body = server.post("/v1/translate", {"sentences": [text]})
            return status, body["translations"][0]["translation"]

        with ThreadPoolExecutor(30) as pool:
            assert list(pool.map(call, texts)) == [(200, t) for t in want]
        assert len(workers) >= 2
        log = server.log_path.read_text()
        assert len(set(re.findall(r"worker process (\d+) warmed up", log))) == 2

        victim = int(re.findall(r"worker process (\d+) warmed up", log)[-1])
        os.kill(victim, signal.SIGKILL)
        while "starting a new one" not in server.log_path.read_text():
            assert time.monotonic() < end + START_TIMEOUT, server.log_path.read_text()
            time.sleep(0.05)
        assert server.request("GET", "/ready")[0] == 200
        assert call(texts[0]) == (200, want[0])
        while server.log_path.read_text().count("warmed up") < 3:
            assert time.monotonic() < end + START_TIMEOUT, server.log_path.read_text()
            time.sleep(0.05)
        assert victim not in _children(server.proc.pid)
    finally:
        assert server.stop() == 0


# --------------------------------------------------------------------------- bad input


BAD_REQUESTS = [
    # (path, body bytes, content type, status, words in the error)
    ("/v1/translate", b'{"sentences": [', "application/json", 400, "malformed JSON"),
    ("/v1/translate", b"", "application/json", 400, "empty"),
    ("/v1/translate", b"[1, 2]", "application/json", 400, "expected a JSON object"),
    ("/v1/translate", b"[" * 100_000, "application/json", 400, "malformed JSON"),
    ("/v1/translate", b'{"sentences": "Hallo"}', "application/json", 400,
     "sentences: expected a list"),
    ("/v1/translate", b'{"sentences": ["a", 5]}', "application/json", 400,
     "sentences[1]: expected a string, got a number"),
    ("/v1/translate", b'{"sentences": [null]}', "application/json", 400, "got null"),
    ("/v1/translate", b'{}', "application/json", 400, "sentences: missing"),
    ("/v1/translate", b'{"sentence": ["a"]}', "application/json", 400,
     "sentence: unknown field"),
    ("/v1/translate", b'{"sentences": ["a"], "n_best": "x"}', "application/json", 400,
     "n_best: expected an integer"),
    ("/v1/translate", b'{"sentences": ["a"], "n_best": 0}', "application/json", 400,
     "n_best: expected 1 to 3"),
    ("/v1/translate", b'{"sentences": ["a"], "domain": 3}', "application/json", 400,
     "domain: expected a label"),
    ("/v1/translate", '{"sentences": ["Ein Hund"]}'.encode("utf-16"), "application/json",
     400, "not valid UTF-8"),
    ("/v1/translate", b'{"sentences": ["Ein \xff Hund"]}', "application/json", 400,
     "not valid UTF-8 (byte 20)"),
    ("/v1/translate", b'{"sentences": ["Ein \\u0000 Hund"]}', "application/json", 400,
     "sentences[0]: control character U+0000 at character 4"),
    ("/v1/translate", b'{"sentences": ["Ein\\u001bHund"]}', "application/json", 400,
     "control character U+001B"),
    ("/v1/translate", b'{"sentences": ["zwei\\nZeilen"]}', "application/json", 400,
     "line break U+000A at character 4; send one sentence per item"),
    ("/v1/translate", b'{"sentences": ["\\ud800 x"]}', "application/json", 400,
     "lone surrogate"),
    ("/v1/translate", b"sentences=a", "text/plain", 415, "'text/plain' is not accepted"),
    ("/translate", b"q=%FF&source=de&target=en", "application/x-www-form-urlencoded", 400,
     "not valid UTF-8"),
    ("/translate", b'{"q": 5, "source": "de", "target": "en"}', "application/json", 400,
     "q: expected a string, got a number"),
    ("/translate", b'{"q": ["a", ["b"]], "source": "de", "target": "en"}',
     "application/json", 400, "q[1]: expected a string, got a list"),
    ("/translate", b'{"q": "a", "source": 1, "target": "en"}', "application/json", 400,
     "source, target: expected language codes"),
    ("/translate", b"q=a\x07b&source=de&target=en", "application/x-www-form-urlencoded", 400,
     "q: control character U+0007"),
    ("/translate", b"--b\r\nbroken", "multipart/form-data; boundary=b", 400, "q: missing"),
    ("/translate", b"--b\r\nbroken", "multipart/form-data", 400,
     "malformed multipart form: Missing boundary"),
]


@pytest.mark.parametrize(("path", "body", "ctype", "status", "words"), BAD_REQUESTS,
                         ids=[f"{i}-{b[:20]!r}" for i, (_, b, *_x) in enumerate(BAD_REQUESTS)])
def test_bad_input_is_one_line_4xx(server: Server, path: str, body: bytes, ctype: str,
                                   status: int, words: str) -> None:
    got, _, answer = server.request("POST", path, body, {"Content-Type": ctype})
    assert got == status, answer
    assert set(answer) == {"error"} and words in answer["error"]
    assert "\n" not in answer["error"]


def test_no_bad_input_broke_anything(server: Server, translator: Translator,
                                     sources: list[str]) -> None:
    """After all of the above (and a client that sends half a body and one that goes away),
    the worker still translates, promptly, and no request was ever answered 500."""
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{\"sentences\": [")
    gone = socket.create_connection(("127.0.0.1", server.port))
    body = json.dumps({"sentences": sources[:64]}).encode()
    gone.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    gone.close()
    started = time.monotonic()
    status, _, answer = server.post("/v1/translate", {"sentences": [sources[5]]}, timeout=30)
    assert status == 200
    assert answer["translations"][0]["translation"] == translator.translate([sources[5]])[0].text
    assert time.monotonic() - started < 30
    slow.close()
    status, _, metrics = server.request("GET", "/metrics")
    assert 'status="500"' not in metrics
    assert server.request("GET", "/health")[0] == 200


def test_one_log_line_per_request_at_debug(server: Server) -> None:
    server.post("/v1/translate", {"sentences": ["Hallo"]})
    time.sleep(0.2)
    assert re.search(r"DEBUG POST /v1/translate 200 [\d.]+ ms", server.log_path.read_text())
    assert "INFO serving" in server.log_path.read_text()


# --------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def limited(trained_run: Path, tmp_path_factory):
    srv = Server(trained_run, tmp_path_factory.mktemp("serve") / "limited.log",
                 "--max-body-bytes", "100000", "--max-sentences", "64", "--max-chars", "1200",
                 "--max-queue", "64", "--timeout", "0.5", "--max-batch-tokens", "1")
    yield srv
    assert srv.stop() == 0, srv.log_path.read_text()


def test_limits_are_413_naming_the_flag(limited: Server) -> None:
    status, _, body = limited.post("/v1/translate", {"sentences": ["x" * 100_000]})
    assert status == 413 and "exceeds the limit of 100000 bytes (--max-body-bytes)" in (
        body["error"])
    # Without a Content-Length (chunked), the body is cut off at the limit all the same.
    conn = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=30)
    conn.request("POST", "/v1/translate", body=iter([b'{"sentences": ["', b"x" * 150_000,
                                                     b'"]}']),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and b"--max-body-bytes" in response.read()
    conn.close()
    status, _, body = limited.post("/v1/translate", {"sentences": ["a"] * 65})
    assert status == 413 and body["error"] == (
        "sentences: 65 items exceed the limit of 64 per request (--max-sentences)")
    status, _, body = limited.post("/translate", {"q": ["a"] * 65, "source": "de",
                                                  "target": "en"})
    assert status == 413 and "--max-sentences" in body["error"]
    status, _, body = limited.post("/translate", {"q": "\n" * 64, "source": "de",
                                                  "target": "en"})
    assert status == 413 and body["error"] == (
        "65 sentences (lines) exceed the queue's limit of 64 (--max-queue)")
    status, _, body = limited.post("/v1/translate", {"sentences": ["ok", "y" * 1201]})
    assert status == 413 and body["error"] == (
        "sentences[1]: 1201 characters exceed the limit of 1200 per item (--max-chars)")


def test_full_queue_is_503_and_late_requests_504(limited: Server, translator: Translator,
                                                 sources: list[str]) -> None:
    """One big request keeps the worker busy; a second fills the queue, so a third is
    refused with 503 and Retry-After; the second outlives its 0.5 s deadline while waiting
    (504) and its sentences leave the queue undecoded; the service then answers as before."""
    # Texts of ~1000 characters: beyond the model's 64 pieces, each is split into several.
    long = [" ".join(sources[(7 * i + k) % 400] for k in range(14))[:1200] for i in range(64)]
    expired_before = limited.metric("translate_expired_sentences_total")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(limited.post, "/v1/translate", {"sentences": long})
        # The second must find the first taken by the worker (on a busy machine 0.15 s
        # may not be enough): wait until the queue holds nothing.
        taken = time.monotonic() + 30
        time.sleep(0.15)
        while limited.metric("translate_queue_depth") > 0 and time.monotonic() < taken:
            time.sleep(0.05)
        second = pool.submit(limited.post, "/v1/translate", {"sentences": long})
        time.sleep(0.15)
        status, headers, body = limited.post("/v1/translate", {"sentences": ["Hallo"]})
        assert status == 503 and headers["retry-after"] == "1"
        assert "queue is full" in body["error"] and "--max-queue" in body["error"]
        status, _, body = second.result()
        assert status == 504 and body["error"] == (
            "the request outlived its deadline of 0.5 s (--timeout)")
        assert first.result()[0] in (200, 504)
    end = time.monotonic() + 30
    while limited.metric("translate_expired_sentences_total") < expired_before + 64:
        assert time.monotonic() < end, "the late request's sentences were not dropped"
        time.sleep(0.05)
    status, _, body = limited.post("/v1/translate", {"sentences": [sources[6]]})
    assert status == 200
    assert body["translations"][0]["translation"] == translator.translate([sources[6]])[0].text


# --------------------------------------------------------------------------- shutdown


def test_sigterm_finishes_requests_in_flight(trained_run: Path, translator: Translator,
                                             sources: list[str], tmp_path: Path) -> None:
    srv = Server(trained_run, tmp_path / "server.log")
    requests = [sources[20 * i:20 * i + 20] for i in range(12)]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(srv.post, "/v1/translate", {"sentences": r}) for r in requests]
        end = time.monotonic() + 30
        while srv.metric("translate_requests_in_flight") < len(requests):
            assert time.monotonic() < end
            time.sleep(0.02)
        srv.proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert srv.stop() == 0, srv.log_path.read_text()
    want = texts(translator.translate([s for r in requests for s in r]))
    got = [t["translation"] for status, _, body in answers for t in body["translations"]]
    assert [a[0] for a in answers] == [200] * len(requests)
    assert got == want
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    assert "sentences translated" in srv.log_path.read_text()


# --------------------------------------------------------------------------- the page


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.host_dependent
def test_page_in_a_headless_browser(server: Server, translator: Translator,
                                    trained_run: Path, tmp_path: Path) -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        browser.get(f"http://127.0.0.1:{server.port}/")
        assert trained_run.name in browser.find_element(By.ID, "model").text
        lines = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."]
        browser.find_element(By.ID, "source").send_keys("\n".join(lines))
        browser.find_element(By.ID, "go").click()
        output = browser.find_element(By.ID, "output")
        WebDriverWait(browser, 30).until(lambda _: output.get_attribute("data-done") == "1")
        results = translator.translate(lines)
        assert output.text.splitlines() == [r.text for r in results]
        tags = {t.text for t in browser.find_elements(By.CSS_SELECTOR, "#tags .tag")}
        assert tags == {label for r in results for label in r.domains}
        assert browser.find_element(By.ID, "error").text == ""
        # Nothing but the service itself was fetched: the page works offline.
        urls = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith(f"http://127.0.0.1:{server.port}/") for u in urls)
    finally:
        browser.quit()
