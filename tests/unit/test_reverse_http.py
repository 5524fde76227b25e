"""The `reverse` function over HTTP, served the way the python3-http template serves it.

The template's index.py (Flask) builds an Event (body as bytes, headers,
method, query, path) and a Context (hostname), calls handler.handle(), and
maps a returned dict to a response: "statusCode" (default 200), "body"
(missing -> "", dict -> JSON, anything else -> str()), "headers" (a dict
becomes a header list). This WSGI harness does the same with the stdlib, on
127.0.0.1 only.
"""

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from tests.unit.test_reverse import load_handler  # noqa: E402,F401 (also used by the compare test)


def event_from_environ(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    return SimpleNamespace(
        body=environ["wsgi.input"].read(length) if length else b"",
        headers=headers,
        method=environ["REQUEST_METHOD"],
        query=dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""))),
        path=environ.get("PATH_INFO") or "/",
    )


def template_response(result):
    """Map handle()'s return value to (status, headers, body bytes) as index.py does."""
    if result is None:
        result = {}
    status = result.get("statusCode", 200)
    body = result.get("body", "")
    headers = result.get("headers", {})
    headers = list(headers.items()) if isinstance(headers, dict) else list(headers)
    if isinstance(body, dict):
        body = json.dumps(body)
        headers.append(("Content-Type", "application/json"))
    elif not isinstance(body, str):
        body = str(body)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "text/html; charset=utf-8"))  # Flask's default
    payload = body.encode("utf-8")
    headers.append(("Content-Length", str(len(payload))))
    return "%d %s" % (status, HTTPStatus(status).phrase), headers, payload


def make_app(handler):
    def app(environ, start_response):
        event = event_from_environ(environ)
        context = SimpleNamespace(hostname="localhost")
        status, headers, payload = template_response(handler.handle(event, context))
        start_response(status, headers)
        return [payload]

    return app


class QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def function_url():
    app = make_app(load_handler())
    server = make_server("127.0.0.1", 0, app, handler_class=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/" % server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def post(url, data):
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def test_post_text_returns_it_reversed(function_url):
    status, headers, body = post(function_url, b"Hello World")
    assert status == 200
    assert body.decode("utf-8") == "dlroW olleH"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_post_emoji_and_accents_round_trip_as_utf8(function_url):
    status, _, body = post(function_url, "he\u0301llo 👍🏽".encode("utf-8"))
    assert status == 200
    assert body.decode("utf-8") == "👍🏽 olle\u0301h"


def test_post_invalid_utf8_returns_400(function_url):
    status, _, body = post(function_url, b"\xff")
    assert status == 400
    assert b"not valid UTF-8" in body


def test_post_empty_body_returns_empty_200(function_url):
    status, _, body = post(function_url, b"")
    assert status == 200
    assert body == b""
