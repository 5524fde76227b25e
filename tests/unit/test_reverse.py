"""The `reverse` OpenFaaS function: reverses text by user-perceived characters."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

HANDLER_PATH = Path(__file__).resolve().parents[2] / "functions" / "reverse" / "handler.py"


def load_handler():
    # The function is not an installed package: load it from its file, as the
    # template's index.py would after the build copies it into function/.
    spec = importlib.util.spec_from_file_location("reverse_handler", HANDLER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


handler = load_handler()


def invoke(body):
    """Call handle() with a minimal stand-in for the template's Event and Context."""
    event = SimpleNamespace(body=body, headers={}, method="POST", query={}, path="/")
    context = SimpleNamespace(hostname="localhost")
    return handler.handle(event, context)


def reverse_ok(text):
    response = invoke(text.encode("utf-8"))
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert isinstance(response["body"], str)
    return response["body"]


def test_reverses_plain_ascii():
    assert reverse_ok("Hello World") == "dlroW olleH"


def test_combining_accent_stays_on_its_letter():
    assert reverse_ok("he\u0301llo") == "olle\u0301h"


def test_emoji_with_skin_tone_modifier_stays_whole():
    assert reverse_ok("👍🏽ok") == "ko👍🏽"


def test_flags_stay_whole_and_swap_places():
    # Each flag is a pair of regional indicators; splitting the pairs would
    # turn US+FR into the unrelated pairs S+F and R+U.
    assert reverse_ok("🇺🇸🇫🇷") == "🇫🇷🇺🇸"


def test_zwj_family_emoji_stays_whole():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    assert reverse_ok(family + "ab") == "ba" + family


def test_zwj_rainbow_flag_stays_whole():
    rainbow = "\U0001F3F3\ufe0f\u200d\U0001F308"
    assert reverse_ok("x" + rainbow) == rainbow + "x"


def test_crlf_line_break_is_not_turned_into_lfcr():
    assert reverse_ok("ab\r\ncd") == "dc\r\nba"


def test_precomposed_and_hangul_text():
    assert reverse_ok("café 한국") == "국한 éfac"


def test_reversing_twice_gives_back_the_input():
    text = "he\u0301llo 👍🏽 🇺🇸🇫🇷 \U0001F468\u200d\U0001F469\u200d\U0001F467 a\r\nb"
    assert reverse_ok(reverse_ok(text)) == text


def test_empty_body_gives_empty_200():
    response = invoke(b"")
    assert response["statusCode"] == 200
    assert response["body"] == ""


def test_missing_body_is_treated_as_empty():
    assert invoke(None)["statusCode"] == 200


@pytest.mark.parametrize("raw", [b"\xff", b"ok\xc3", b"\xed\xa0\x80"])
def test_invalid_utf8_gives_400_with_a_message(raw):
    response = invoke(raw)
    assert response["statusCode"] == 400
    assert "not valid UTF-8" in response["body"]
    assert response["headers"]["Content-Type"] == "text/plain; charset=utf-8"


def test_invalid_utf8_message_names_the_byte_and_offset():
    body = invoke(b"abc\xff")["body"]
    assert "0xff" in body
    assert "offset 3" in body
