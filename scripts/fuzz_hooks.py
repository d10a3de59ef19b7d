"""Schemathesis hooks for scripts/fuzz-api (README, "Fuzzing the API"): the
contract's rule for methods outside the document, and the two kinds of
request the local stack cannot take the way API Gateway would; and a guard
around CPython 3.11's ast.parse for schemathesis' own worker threads."""

import ast
import json
import threading

import schemathesis
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario

# CPython 3.11 counts the AST constructor's recursion depth per interpreter,
# not per call (python/cpython#106905): when a garbage collection during
# `ast.parse` runs a finaliser that lets another thread parse too, the count
# comes back wrong and `ast.parse` raises SystemError "AST constructor
# recursion depth mismatch". Hypothesis parses the source of lambdas to
# describe them, in every schemathesis worker; that error failed fuzz runs
# (the coverage phase, 2026-12-03; the OTLP operations before). One parse at
# a time: four threads parsing under GC pressure (finalisers that sleep(0))
# hit the error in each of three runs on Python 3.11.7, and never with it.
_AST_LOCK = threading.Lock()
_ast_parse = ast.parse


def _parse_one_at_a_time(*args, **kwargs):
    with _AST_LOCK:
        return _ast_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time

# A gateway answers from its route table: no function runs, so no wait.
UNSUPPORTED_METHOD_SECONDS = 1.0


@schemathesis.check
def unsupported_method_is_404(ctx, response, case):
    """A method the document does not list for a path gets 404 NOT_FOUND at
    once (the contract: the gateway answers it, as API Gateway does). This
    replaces schemathesis' own `unsupported_method`, which wants 405 with an
    `Allow` header: neither API Gateway nor the contract answers that."""
    meta = case.meta
    if meta is None or not isinstance(meta.phase.data, CoveragePhaseData):
        return None
    if meta.phase.data.scenario != CoverageScenario.UNSPECIFIED_HTTP_METHOD:
        return None
    method = response.request.method
    if response.status_code != 404:
        raise AssertionError(f"{method} on {case.operation.path}: {response.status_code}, expected 404")
    if response.elapsed > UNSUPPORTED_METHOD_SECONDS:
        raise AssertionError(f"{method} on {case.operation.path}: answered after {response.elapsed:.1f} s")
    body = json.loads(response.content or b"null")
    if not isinstance(body, dict) or body.get("error") != "NOT_FOUND" or body.get("code") != "PROXY_METRICS_404":
        raise AssertionError(f"{method} on {case.operation.path}: not the contract's 404 body: {body!r}")
    return None


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
