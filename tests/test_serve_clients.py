"""One service, several models, and the LibreTranslate clients people run, over real HTTP.

Three small models trained here on Multi30k (de→en, shared with the other tests; en→de and
en→fr, smaller) behind one ``python -m translate.serve`` process: both directions of one
pair, and de→fr served through English. Each integration's requests are replayed in the
shape its own code sends them (the file is named in each test), and every answer is checked
against ``Translator.translate`` of the same input in this process.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install "
                                      "'translate[serve]')")

from test_serve import CHROMEDRIVER, CHROMIUM, Server  # noqa: E402

from conftest import tiny_config  # noqa: E402
from translate.inference.translator import Translator  # noqa: E402
from translate.serve.ratelimit import INVALID_KEY, MISSING_KEY  # noqa: E402

DE = ["Ein Mann fährt mit dem Fahrrad durch die Stadt.",
      "Zwei Hunde spielen im Schnee auf einer großen Wiese."]
EN = ["A man is riding his bicycle through the city.",
      "Two dogs are playing in the snow on a large meadow."]
FR = "Une femme lit un livre dans le jardin pendant que les enfants jouent au ballon."


def small_run(multi30k: Path, multidomain: Path, root: Path, src: str, tgt: str) -> Path:
    """A smaller real model for ``src``→``tgt`` on Multi30k's captions alone."""
    from translate import config
    from translate.training.trainer import Trainer

    run = root / f"{src}-{tgt}"
    raw = tiny_config(multi30k, multidomain, run, root / "cache", max_steps=150,
                      valid_every=150)
    raw["data"].update(src_lang=src, tgt_lang=tgt)
    for part in ("train", "valid", "test"):
        raw["data"][part] = [s for s in raw["data"][part] if "multi30k" in s["prefix"]]
    Trainer(config.from_dict(raw)).fit()
    return run


@pytest.fixture(scope="module")
def en_de(multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    return small_run(multi30k, multidomain, tmp_path_factory.mktemp("en-de"), "en", "de")


@pytest.fixture(scope="module")
def en_fr(multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    return small_run(multi30k, multidomain, tmp_path_factory.mktemp("en-fr"), "en", "fr")


@pytest.fixture(scope="module")
def models(trained_run: Path, en_de: Path, en_fr: Path) -> dict[str, Translator]:
    return {name: Translator.load(run, shortlist=False)
            for name, run in (("de-en", trained_run), ("en-de", en_de), ("en-fr", en_fr))}


@pytest.fixture(scope="module")
def many(trained_run: Path, en_de: Path, en_fr: Path, tmp_path_factory):
    """de→en, en→de and en→fr, each loaded at its first use."""
    srv = Server(trained_run, tmp_path_factory.mktemp("many") / "server.log", "--model",
                 str(en_de), "--model", str(en_fr), "--verbose")
    yield srv
    assert srv.stop() == 0, srv.log_path.read_text()


def text(translator: Translator, sentences: list[str]) -> list[str]:
    return [r.text for r in translator.translate(sentences)]


def form(server: Server, path: str, fields, query: str = ""):
    """A form-encoded POST, as Discourse, Weblate (``data=``) and libretranslatepy send."""
    return server.request("POST", path + query, urlencode(fields).encode(),
                          {"Content-Type": "application/x-www-form-urlencoded"})


def multipart(server: Server, path: str, fields: dict, files: dict | None = None):
    """A multipart/form-data POST, as PHP's curl sends an array of fields (Nextcloud)."""
    boundary = "----phpcurlboundary7d3f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    for name, (filename, data) in (files or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return server.request("POST", path, body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})


# --------------------------------------------------------------------------- many pairs


def test_languages_list_every_pair_and_the_pivots(many: Server, trained_run: Path) -> None:
    status, _, langs = many.request("GET", "/languages")
    assert status == 200
    assert langs == [
        {"code": "de", "name": "German", "targets": ["en", "fr"], "pivoted": {"fr": "en"}},
        {"code": "en", "name": "English", "targets": ["de", "fr"], "pivoted": {}},
        {"code": "fr", "name": "French", "targets": [], "pivoted": {}}]
    status, _, body = many.request("GET", "/v1/models")
    assert status == 200
    assert [(m["name"], m["source"], m["target"], m["state"]) for m in body["models"]] == [
        (trained_run.name, "de", "en", "unloaded"), ("en-de", "en", "de", "unloaded"),
        ("en-fr", "en", "fr", "unloaded")]
    assert body["pivots"] == [{"source": "de", "target": "fr", "pivot": "en",
                               "model": f"{trained_run.name}+en-fr"}]


def test_each_pair_goes_to_its_model_and_de_fr_through_english(
        many: Server, models: dict[str, Translator]) -> None:
    for source, target, sentences, want in (
            ("de", "en", DE, text(models["de-en"], DE)),
            ("en", "de", EN, text(models["en-de"], EN)),
            ("en", "fr", EN, text(models["en-fr"], EN)),
            ("de", "fr", DE, text(models["en-fr"], text(models["de-en"], DE)))):
        status, _, body = many.post("/translate", {"q": sentences, "source": source,
                                                   "target": target})
        assert (status, body) == (200, {"translatedText": want}), (source, target)
    # /v1 names the route: a model, or two through the pivot language.
    status, _, body = many.post("/v1/translate", {"sentences": DE[:1], "source": "de",
                                                  "target": "fr", "n_best": 2})
    assert status == 200 and body["pivot"] == "en" and body["model"].endswith("+en-fr")
    assert body["translations"][0]["translation"] == text(
        models["en-fr"], text(models["de-en"], DE[:1]))[0]
    assert len(body["translations"][0]["nbest"]) == 2
    status, _, direct = many.post("/v1/translate", {"sentences": EN[:1], "source": "en",
                                                    "target": "de"})
    assert status == 200 and direct["pivot"] is None
    # A model by name gives the same as its pair.
    status, _, named = many.post("/v1/translate", {"sentences": EN[:1],
                                                   "model": direct["model"]})
    assert status == 200 and named["translations"] == direct["translations"]
    # The same language on both sides: the text comes back as it was.
    status, _, body = many.post("/translate", {"q": EN[0], "source": "en", "target": "en"})
    assert (status, body) == (200, {"translatedText": EN[0]})


def test_refusals_name_what_is_served(many: Server) -> None:
    for payload, error in (
            ({"q": "x", "source": "fr", "target": "en"},
             "source: 'fr' is not served; this service translates from de, en "
             "(see GET /languages)"),
            ({"q": "x", "source": "en", "target": "cs"},
             "target: en to cs is not served; from en this service translates to de, fr "
             "(see GET /languages)")):
        status, _, body = many.post("/translate", payload)
        assert (status, body) == (400, {"error": error})
    status, _, body = many.post("/v1/translate", {"sentences": ["x"]})
    assert status == 400 and body["error"].startswith("source, target: missing; this "
                                                      "service serves several pairs")
    status, _, body = many.post("/v1/translate", {"sentences": ["x"], "model": "nope"})
    assert status == 400 and body["error"].startswith("model: 'nope' is not served")
    status, _, body = many.post("/v1/translate", {"sentences": ["x"], "source": "de"})
    assert (status, body) == (400, {"error": "target: missing (source and target go "
                                             "together)"})


def test_models_load_on_first_use_and_the_least_recent_is_unloaded(
        trained_run: Path, en_de: Path, models: dict[str, Translator], tmp_path: Path) -> None:
    """--max-loaded 1 with both directions: requests for both pairs at once each get their
    own model's answer (a model is never unloaded under a request), and /metrics counts the
    loads and unloads by model."""
    srv = Server(trained_run, tmp_path / "server.log", "--model", str(en_de),
                 "--max-loaded", "1")
    try:
        states = {m["state"] for m in srv.request("GET", "/v1/models")[2]["models"]}
        assert states == {"unloaded"}
        jobs = [("de", "en", DE), ("en", "de", EN)] * 3
        want = {("de", "en"): text(models["de-en"], DE), ("en", "de"): text(models["en-de"], EN)}
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda j: srv.post("/translate", {
                "q": j[2], "source": j[0], "target": j[1]}), jobs))
        for (source, target, _), (status, _, body) in zip(jobs, answers, strict=True):
            assert (status, body["translatedText"]) == (200, want[(source, target)])
        states = [m["state"] for m in srv.request("GET", "/v1/models")[2]["models"]]
        assert sorted(states) == ["ready", "unloaded"]
        loads = srv.metric("translate_model_loads_total")
        assert loads >= 2 and srv.metric("translate_model_unloads_total") == loads - 1
        metrics = srv.request("GET", "/metrics")[2]
        assert re.search(r'translate_sentences_total\{model="en-de"\} [1-9]', metrics)
    finally:
        assert srv.stop() == 0, srv.log_path.read_text()


# --------------------------------------------------------------------------- detection


def test_detect_in_every_shape_and_auto_routes_each_text(
        many: Server, models: dict[str, Translator]) -> None:
    # JSON, form fields and the query string alike; best first, confidences 0-100.
    for status, _, body in (many.post("/detect", {"q": DE[0]}),
                            form(many, "/detect", {"q": DE[0]}),
                            many.request("POST", "/detect?" + urlencode({"q": DE[0]}))):
        assert status == 200 and body[0]["language"] == "de"
        assert set(body[0]) == {"confidence", "language"}
        assert 50 < body[0]["confidence"] <= 100
        assert [d["confidence"] for d in body] == sorted((d["confidence"] for d in body),
                                                         reverse=True)
    # source auto: each text detected and routed; detectedLanguage a dict for a string q,
    # a list for a list q.
    status, _, body = many.post("/translate", {"q": DE[0], "source": "auto", "target": "en"})
    assert status == 200 and body["translatedText"] == text(models["de-en"], DE[:1])[0]
    assert body["detectedLanguage"]["language"] == "de"
    status, _, body = many.post("/translate", {"q": [DE[1], EN[1], ""], "source": "auto",
                                               "target": "de"})
    assert status == 200
    # German to German stays as it is; English goes through en→de; empty stays empty.
    assert body["translatedText"] == [DE[1], text(models["en-de"], EN[1:])[0], ""]
    assert [d["language"] for d in body["detectedLanguage"][:2]] == ["de", "en"]
    assert body["detectedLanguage"][2]["confidence"] == 0
    # /v1: per sentence what was detected and which route it took.
    status, _, body = many.post("/v1/translate", {"sentences": [DE[0], EN[0]],
                                                  "source": "auto", "target": "fr"})
    assert status == 200 and body["model"] is None
    first, second = body["translations"]
    assert (first["detected"]["language"], first["pivot"]) == ("de", "en")
    assert (second["detected"]["language"], second["pivot"]) == ("en", None)
    assert second["translation"] == text(models["en-fr"], EN[:1])[0]


def test_a_language_no_model_serves_is_named(many: Server) -> None:
    status, _, body = many.post("/translate", {"q": ["Ein Hund.", FR], "source": "auto",
                                               "target": "en"})
    assert status == 400
    assert body["error"] == ("q[1]: detected language 'fr' (French), which is not served; "
                             "this service translates from de, en (see GET /languages)")
    status, _, body = many.post("/detect", {"q": ["a", "list"]})
    assert (status, body) == (400, {"error": "q: expected a string, got a list"})
    status, _, body = many.post("/detect", {})
    assert status == 400 and body["error"].startswith("q: missing")


# --------------------------------------------------------------------------- the clients

TOOT = ('<p>Ein Mann fährt mit dem Fahrrad durch die Stadt.</p><p>Zwei Hunde spielen im '
        'Schnee. <a href="https://social.example/tags/hunde" class="mention hashtag" '
        'rel="tag">#<span>Hunde</span></a></p>')


def tags(html: str) -> list[str]:
    return re.findall(r"<[^>]+>", html)


def test_mastodon(many: Server, models: dict[str, Translator]) -> None:
    """mastodon/mastodon app/lib/translation_service/libre_translate.rb: a JSON POST of
    {q, source: the post's language or "auto", target, format: "html", api_key} with
    Content-Type application/json; reads translatedText of a 2xx, maps 429 and 403."""
    for source in ("de", "auto"):
        status, _, body = many.post("/translate", {"q": TOOT, "source": source,
                                                   "target": "en", "format": "html",
                                                   "api_key": ""})
        assert status == 200 and isinstance(body["translatedText"], str)
        assert tags(body["translatedText"]) == tags(TOOT)
        first = re.match(r"<p>(.*?)</p>", body["translatedText"]).group(1)
        assert first == text(models["de-en"], DE[:1])[0]


def test_discourse(many: Server, models: dict[str, Translator]) -> None:
    """discourse/discourse-translator app/services/discourse_translator/provider/
    libre_translate.rb: form-encoded POSTs (URI.encode_www_form) with api_key; /detect with
    the post's text stripped of tags, reading [0]["language"]; GET /languages to check both
    codes; /translate with format html, reading translatedText."""
    status, _, detected = form(many, "/detect", {"q": "Ein Mann fährt mit dem Fahrrad.",
                                                 "api_key": ""})
    assert status == 200 and detected[0]["language"] == "de"
    codes = [entry["code"] for entry in many.request("GET", "/languages")[2]]
    assert "de" in codes and "en" in codes
    status, _, body = form(many, "/translate", {"q": TOOT, "source": detected[0]["language"],
                                                "target": "en", "format": "html",
                                                "api_key": ""})
    assert status == 200 and tags(body["translatedText"]) == tags(TOOT)


def test_nextcloud(many: Server, models: dict[str, Translator], tmp_path: Path) -> None:
    """nextcloud integration_libretranslate lib/LibretranslateProvider.php, through its PHP
    client jefs42/libretranslate src/LibreTranslate.php: POST / (a connection test whose
    answer is ignored), GET /frontend/settings, GET /languages, POST /detect?q=...&api_key=
    with an empty body, POST /translate as multipart fields {q, format: html, source,
    target}; translateFiles posts the file to /translate_file and fetches
    translatedFileUrl."""
    assert many.request("POST", "/", b"")[0] == 405  # answered, not a hang or a 500
    status, _, settings = many.request("GET", "/frontend/settings")
    assert status == 200 and settings["language"]["source"]["code"] == "de"
    assert {entry["code"]: entry["name"] for entry in many.request("GET", "/languages")[2]
            }["de"] == "German"
    query = "?" + urlencode({"q": DE[1], "api_key": ""})
    status, _, body = many.request("POST", "/detect" + query, b"")
    assert status == 200 and body[0]["language"] == "de"
    status, _, body = multipart(many, "/detect" + query, {})
    assert status == 200 and body[0]["language"] == "de"
    status, _, body = multipart(many, "/translate", {"q": DE[1], "format": "html",
                                                     "source": "de", "target": "en"})
    assert (status, body) == (200, {"translatedText": text(models["de-en"], DE[1:])[0]})
    status, _, body = multipart(many, "/translate_file", {"format": "html", "source": "de",
                                                          "target": "en"},
                                {"file": ("notes.txt", "\n".join(DE).encode())})
    assert status == 200
    url = body["translatedFileUrl"]
    assert url.startswith(f"http://127.0.0.1:{many.port}/download_file/")
    status, headers, data = many.request("GET", url.split(str(many.port), 1)[1])
    assert status == 200 and data.splitlines() == text(models["de-en"], DE)
    assert 'filename="notes.txt"' in headers["content-disposition"]


def test_weblate(many: Server, models: dict[str, Translator]) -> None:
    """WeblateOrg/weblate weblate/machinery/libretranslate.py: GET /languages (the codes);
    POST /translate as JSON {api_key, q: [the units' texts], source, target}, reading
    translatedText[index] (older Weblate: the same fields form-encoded, one text)."""
    assert {"de", "en"} <= {x["code"] for x in many.request("GET", "/languages")[2]}
    status, _, body = many.post("/translate", {"api_key": "", "q": EN, "source": "en",
                                               "target": "de"})
    assert (status, body) == (200, {"translatedText": text(models["en-de"], EN)})
    status, _, body = form(many, "/translate", {"api_key": "", "q": EN[0], "source": "en",
                                                "target": "de"})
    assert (status, body) == (200, {"translatedText": text(models["en-de"], EN[:1])[0]})


def test_libretranslatepy(many: Server, models: dict[str, Translator]) -> None:
    """libretranslatepy's own translate, detect and languages (form-encoded POSTs, a GET)."""
    libre = pytest.importorskip("libretranslatepy")
    client = libre.LibreTranslateAPI(f"http://127.0.0.1:{many.port}")
    assert client.translate(EN[0], "en", "fr") == text(models["en-fr"], EN[:1])[0]
    assert client.translate(DE[0], "de", "fr") == text(models["en-fr"],
                                                       text(models["de-en"], DE[:1]))[0]
    assert client.detect(EN[1])[0]["language"] == "en"
    assert [x["code"] for x in client.languages()] == ["de", "en", "fr"]


def test_frontend_settings_and_query_string_fields(many: Server,
                                                   models: dict[str, Translator]) -> None:
    status, _, settings = many.request("GET", "/frontend/settings")
    assert (status, settings) == (200, {
        "charLimit": 5000, "frontendTimeout": 500, "apiKeys": False, "keyRequired": False,
        "suggestions": False, "filesTranslation": True,
        "supportedFilesFormat": [".txt", ".html"],
        "language": {"source": {"code": "de", "name": "German"},
                     "target": {"code": "en", "name": "English"}}})
    query = urlencode({"q": EN[0], "source": "en", "target": "de"})
    status, _, body = many.request("POST", f"/translate?{query}")
    assert (status, body) == (200, {"translatedText": text(models["en-de"], EN[:1])[0]})
    # The body's fields win over the query string's.
    status, _, body = many.post(f"/translate?{query}", {"q": EN[1]})
    assert (status, body) == (200, {"translatedText": text(models["en-de"], EN[1:])[0]})


# --------------------------------------------------------------------------- files


def test_translate_file_txt_and_html(many: Server, models: dict[str, Translator]) -> None:
    lines = [EN[0], "", EN[1]]
    status, _, body = multipart(many, "/translate_file", {"source": "en", "target": "de"},
                                {"file": ("a/../notes.txt", "\n".join(lines).encode())})
    assert status == 200
    name = body["translatedFileUrl"].rsplit("/", 1)[1]
    assert name.endswith(".notes.txt")
    status, headers, data = many.request("GET", f"/download_file/{name}")
    want = text(models["en-de"], lines)
    assert (status, data.split("\n")) == (200, want) and want[1] == ""
    assert headers["content-type"].startswith("text/plain")
    page = f"<html><body><h1>{EN[0]}</h1><pre>{EN[1]}</pre></body></html>"
    status, _, body = multipart(many, "/translate_file", {"source": "en", "target": "de"},
                                {"file": ("page.html", page.encode())})
    assert status == 200
    status, headers, data = many.request(
        "GET", "/download_file/" + body["translatedFileUrl"].rsplit("/", 1)[1])
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert tags(data) == tags(page) and f"<pre>{EN[1]}</pre>" in data
    assert f"<h1>{text(models['en-de'], EN[:1])[0]}</h1>" in data
    for files, fields, error in (
            ({"file": ("x.pdf", b"%PDF")}, {"source": "en", "target": "de"},
             "file: 'x.pdf' is not a supported file format (expected .txt, .html, .htm)"),
            ({"file": ("x.txt", b"\xff\xfe")}, {"source": "en", "target": "de"},
             "file: x.txt is not valid UTF-8 (byte 0)"),
            ({}, {"source": "en", "target": "de"},
             "file: missing (send the file as a multipart/form-data field)"),
            ({"file": ("x.txt", b"a")}, {"source": "en"}, "target: missing (a language code)")):
        status, _, body = multipart(many, "/translate_file", fields, files)
        assert (status, body) == (400, {"error": error})
    status, _, body = many.request("GET", "/download_file/deadbeef.notes.txt")
    assert status == 404 and "no such file" in body["error"]


def test_translated_files_expire_and_the_store_is_bounded() -> None:
    import time

    from translate.serve.files import FileStore

    store = FileStore(keep=0.2, max_files=2, max_bytes=10)
    first = store.put("../../etc/a b.txt", b"12345")
    assert first.endswith(".a_b.txt") and "/" not in first
    assert store.get(first) == b"12345"
    second, third = store.put("b.txt", b"678"), store.put("c.txt", b"90")
    assert store.get(first) is None and store.get(third) == b"90"  # two files at most
    store.put("d.txt", b"123456789")  # ten bytes at most: the oldest go first
    assert store.get(second) is None and store.get(third) is None
    time.sleep(0.3)
    assert store.get(store.put("e.txt", b"x")) == b"x" and len(store._files) == 1


# --------------------------------------------------------------------------- browsers


def test_cors_preflight_and_answers(many: Server) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    status, headers, _ = many.request("OPTIONS", "/translate", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    assert "POST" in headers["access-control-allow-methods"]
    status, headers, _ = many.post("/translate", {"q": EN[0], "source": "en", "target": "de"},
                                   headers=origin)
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    status, headers, _ = many.post("/translate", {"q": EN[0]}, headers=origin)
    assert status == 400 and headers["access-control-allow-origin"] == "*"


def test_cors_origins_flag(guarded: Server) -> None:
    for origin, allowed in (("https://b.example", True), ("https://c.example", False)):
        status, headers, _ = guarded.request("OPTIONS", "/detect", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert (status == 200) is allowed
        assert headers.get("access-control-allow-origin") == (origin if allowed else None)


def _browser(tmp_path: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options,
                            service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))


OTHER_ORIGIN_PAGE = """<!doctype html><meta charset="utf-8"><body><div id="out"></div>
<script>
fetch("http://127.0.0.1:PORT/translate", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({q: QUERY, source: "auto", target: "de"})})
  .then((r) => r.json())
  .then((a) => { document.getElementById("out").textContent = JSON.stringify(a); })
  .catch((e) => { document.getElementById("out").textContent = "failed: " + e; });
</script>"""


@pytest.mark.host_dependent
def test_a_page_on_another_origin_calls_the_service(many: Server, models: dict[str, Translator],
                                                    tmp_path: Path) -> None:
    """A page served from another port (another origin) fetches /translate with a JSON
    body, which the browser preflights; the answer reaches the page."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(OTHER_ORIGIN_PAGE.replace("PORT", str(many.port))
                                     .replace("QUERY", json.dumps(EN[0])), "utf-8")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(site))  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        out = browser.find_element(By.ID, "out")
        WebDriverWait(browser, 60).until(lambda _: out.text)
        answer = json.loads(out.text)
        assert answer["translatedText"] == text(models["en-de"], EN[:1])[0]
        assert answer["detectedLanguage"]["language"] == "en"
    finally:
        browser.quit()
        httpd.shutdown()


@pytest.mark.host_dependent
def test_page_pair_selector_and_detection(many: Server, models: dict[str, Translator],
                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _browser(tmp_path)
    try:
        browser.get(f"http://127.0.0.1:{many.port}/")
        WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        source, target = (Select(browser.find_element(By.ID, i)) for i in ("from", "to"))
        assert [o.get_attribute("value") for o in source.options] == ["auto", "de", "en"]
        source.select_by_value("de")
        assert [o.get_attribute("value") for o in target.options] == ["en", "fr"]
        target.select_by_value("fr")
        assert browser.find_element(By.ID, "via").text == "(through English)"
        source.select_by_value("auto")
        target.select_by_value("de")
        browser.find_element(By.ID, "source").send_keys(EN[0])
        browser.find_element(By.ID, "go").click()
        output = browser.find_element(By.ID, "output")
        WebDriverWait(browser, 60).until(lambda _: output.get_attribute("data-done") == "1")
        assert output.text == text(models["en-de"], EN[:1])[0]
        assert browser.find_element(By.ID, "detected").text == "Detected: English"
        assert browser.find_element(By.ID, "error").text == ""
    finally:
        browser.quit()


# --------------------------------------------------------------------------- keys, limits


def _add_key(db: Path, *flags: str) -> str:
    done = subprocess.run([sys.executable, "-m", "translate.serve", "keys", "add",
                           "--api-keys", str(db), *flags], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, str, str]:
    """A key database with a key under the server's limits and one of 20 characters a day."""
    db = tmp_path_factory.mktemp("keys") / "keys.db"
    return db, _add_key(db), _add_key(db, "--char-limit-per-day", "20")


@pytest.fixture(scope="module")
def guarded(trained_run: Path, en_de: Path, keys: tuple[Path, str, str], tmp_path_factory):
    """Keys required, 3 requests a minute, pages of two origins only; de→en and (the folder
    holding it) en→de, both loaded at start."""
    srv = Server(trained_run, tmp_path_factory.mktemp("guarded") / "server.log",
                 "--model", str(en_de.parent), "--preload",
                 "--api-keys", str(keys[0]), "--require-api-key", "--req-limit", "3",
                 "--cors-origins", "https://a.example, https://b.example")
    yield srv
    assert srv.stop() == 0, srv.log_path.read_text()


def test_preload_and_a_folder_of_runs(guarded: Server, trained_run: Path) -> None:
    status, _, body = guarded.request("GET", "/ready")
    assert (status, body) == (200, {"status": "ready", "models": {trained_run.name: "ready",
                                                                  "en-de": "ready"}})


def test_command_line_refusals(trained_run: Path, en_de: Path, tmp_path: Path) -> None:
    """A --model that cannot be served stops the start with one line, before any load."""
    (tmp_path / "empty").mkdir()
    cases = [(["--model", str(tmp_path / "empty")], "neither a run directory nor a folder of "
                                                    "run directories"),
             (["--model", str(trained_run), "--model", str(trained_run)],
              f"two models are named '{trained_run.name}'"),
             (["--model", f"{trained_run},{en_de}"], "an ensemble's models translate one pair"),
             (["--model", str(trained_run), "--model", str(en_de), "--preload",
               "--max-loaded", "1"], "--preload: 2 models do not fit --max-loaded 1")]

    def start(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "translate.serve", "--port", "0", *args],
                              capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(start, [args for args, _ in cases]))
    for (_, error), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, done.stderr
        assert error in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_keys_and_limits(guarded: Server, keys: tuple[Path, str, str]) -> None:
    """--api-keys with --require-api-key: no key is a 400, a wrong one a 403 (Mastodon's
    QuotaExceededError); over --req-limit a 429 with Retry-After (its TooManyRequestsError);
    a key's own character limit likewise; a key of the wrong type is a 400, never a 500."""
    srv, (_, key, small) = guarded, keys
    ask = {"q": DE[0], "source": "de", "target": "en"}
    status, _, body = srv.post("/translate", ask)
    assert (status, body) == (400, {"error": MISSING_KEY})
    status, _, body = srv.post("/translate", {**ask, "api_key": "not-a-key-of-ours"})
    assert (status, body) == (403, {"error": INVALID_KEY})
    for bad in (5, ["x"], {"k": 1}):
        status, _, body = srv.post("/translate", {**ask, "api_key": bad})
        assert status == 400 and body["error"].startswith("api_key:")
    assert srv.request("GET", "/frontend/settings")[2]["keyRequired"] is True
    answers = [srv.post("/translate", {**ask, "api_key": key})[0] for _ in range(3)]
    assert answers == [200, 200, 200]
    status, headers, body = srv.post("/translate", {**ask, "api_key": key})
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert "per minute" in body["error"]
    # The same key in the query string or a form field counts alike (LibreTranslate).
    status, _, _ = form(srv, "/detect", {"q": "Hallo"}, "?" + urlencode({"api_key": key}))
    assert status == 429
    status, _, _ = srv.post("/detect", {"q": "Hallo", "api_key": small})
    assert status == 200
    status, _, _ = srv.post("/translate", {**ask, "q": "Ein Hund.", "api_key": small})
    assert status == 200
    status, headers, body = srv.post("/translate", {**ask, "q": "Zwei Hunde spielen.",
                                                    "api_key": small})
    assert status == 429 and "per day" in body["error"] and "retry-after" in headers
    assert 'status="500"' not in srv.request("GET", "/metrics")[2]


BAD_HTML = ["<p>Ein <b>Mann <i>fährt</b> Rad</i>", "<div><p>Zwei Hunde", "</p></p>Hallo<br/>",
            "<a href='x\">Hund</a>", "<!-- offen", "<p>&notanentity; &amp &#xZZ;</p>",
            "<script>alert(1)</script>Ein Hund", "<<>>", "<p translate=no>Ein Hund</p>",
            "<ü>Ein Mann</ü>", "\u200b<p>\U0001f600 Ein Hund</p>", ""]


def test_bad_html_is_answered(many: Server) -> None:
    """Malformed HTML is repaired and translated, never a 500; an empty document stays
    empty; text that must not be translated is not."""
    status, _, body = many.post("/translate", {"q": BAD_HTML, "source": "de", "target": "en",
                                               "format": "html"})
    assert status == 200, body
    out = body["translatedText"]
    assert len(out) == len(BAD_HTML) and out[-1] == ""
    assert "<script>alert(1)</script>" in out[6]
    assert "Ein Hund" in out[8]
    status, _, body = many.post("/v1/translate", {"sentences": BAD_HTML, "source": "de",
                                                  "target": "en", "format": "html"})
    assert status == 200 and [t["translation"] for t in body["translations"]] == out
    assert 'status="500"' not in many.request("GET", "/metrics")[2]
