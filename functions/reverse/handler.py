"""OpenFaaS `reverse` function (python3-http template).

Reverses text the way a person reads it: by user-perceived characters
(Unicode extended grapheme clusters), so an accented letter written as
"e" + combining accent, a flag, or an emoji with a skin-tone modifier or a
ZWJ family sequence stays whole instead of being split into code points.
"""

import regex

TEXT_PLAIN = {"Content-Type": "text/plain; charset=utf-8"}

# \X is one extended grapheme cluster (Unicode UAX #29); the stdlib `re`
# module has no equivalent.
_GRAPHEME = regex.compile(r"\X")


def reverse_text(text):
    """Return `text` with its grapheme clusters in reverse order."""
    return "".join(reversed(_GRAPHEME.findall(text)))


def handle(event, context):
    """Reverse the UTF-8 request body; answer 400 if it is not UTF-8."""
    body = event.body or b""
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as err:
            return {
                "statusCode": 400,
                # The template's index.py passes str(body) to Flask, so the
                # body must be a str (bytes would come out as "b'...'").
                "body": (
                    "request body is not valid UTF-8: byte 0x%02x at offset %d; "
                    "send the text encoded as UTF-8\n" % (err.object[err.start], err.start)
                ),
                "headers": dict(TEXT_PLAIN),
            }
    return {"statusCode": 200, "body": reverse_text(text), "headers": dict(TEXT_PLAIN)}
