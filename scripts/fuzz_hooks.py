"""Schemathesis hooks for scripts/fuzz-api: the two kinds of request the local
stack cannot take the way API Gateway would (README, "Fuzzing the API")."""

import schemathesis


@schemathesis.hook
def filter_body(ctx, body):
    # A body that is not UTF-8: cargo lambda watch answers it with its own
    # 500 before any function runs. API Gateway passes it base64-encoded, and
    # the function answers 400 (tested at the handler level).
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


@schemathesis.hook
def filter_headers(ctx, headers):
    # Header values with control characters: the watcher fails on them the
    # same way; API Gateway refuses them itself.
    if not headers:
        return True
    return all(isinstance(v, str) and v.isascii() and v.isprintable() for v in headers.values())
