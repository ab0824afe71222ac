"""The redactor masks secrets, whatever characters they hold, in text and in log records."""

from __future__ import annotations

import json
import logging

import pytest

from threads_exporter.redact import MASK, RedactingFilter, Redactor

ODD = ['tok"en\\with"quotes', "tökén-ünïcode-€", "token with spaces", "short", "a|b*c+d(e)"]


@pytest.mark.parametrize("secret", ODD)
def test_secrets_with_odd_characters_are_masked(secret: str) -> None:
    redact = Redactor()
    redact.set_secrets([secret, "other-secret"])
    text = f"before {secret} middle {secret}after other-secret"
    out = redact(text)
    assert secret not in out and "other-secret" not in out
    assert out.count(MASK) == 3


def test_a_secret_containing_another_is_masked_whole() -> None:
    redact = Redactor()
    redact.set_secrets(["abc", "xxabcxx"])
    assert redact("see xxabcxx and abc") == f"see {MASK} and {MASK}"


def test_token_parameters_and_bearer_values_are_masked_even_when_unknown() -> None:
    out = Redactor()("GET /me?access_token=EAAB123&input_token=XYZ Authorization: Bearer q.w.e")
    assert "EAAB123" not in out and "XYZ" not in out and "q.w.e" not in out


def test_the_logging_filter_redacts_message_arguments_and_extras() -> None:
    redact = Redactor()
    redact.set_secrets(["SECRET-1"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s in %r", ("SECRET-1",
                               {"k": "SECRET-1"}), None)
    record.error = "upstream said SECRET-1"
    assert RedactingFilter(redact).filter(record)
    assert "SECRET-1" not in record.getMessage()
    assert "SECRET-1" not in record.error


def test_secrets_sharing_a_long_prefix_are_each_masked() -> None:
    # Threads tokens share their first characters; the index must still find each one.
    shared = "THAAJ1Lw0000"  # exactly GRAM characters
    tokens = [shared, f"{shared}a", f"{shared}ab", f"{shared}abc-xyz"] + \
        [f"THAAJ1Lw{i:04d}tail{i}" for i in range(500)]
    redact = Redactor()
    redact.set_secrets(tokens)
    for token in tokens:
        out = redact(f"x={token};")
        assert out == f"x={MASK};", (token, out)


def test_redaction_after_add_secrets_keeps_the_old_ones() -> None:
    redact = Redactor()
    redact.set_secrets(["first-secret-value"])
    redact.add_secrets(["second-secret-value", "s2"])
    assert redact("first-secret-value second-secret-value s2") == f"{MASK} {MASK} {MASK}"


@pytest.mark.parametrize("formatter", ["json", "logfmt"])
def test_formatters_redact_before_escaping(formatter: str) -> None:
    """JSON and logfmt escape a quote, a backslash or non-ASCII; a secret holding one would
    no longer match once escaped, so each value is redacted before it is quoted."""
    from threads_exporter.logs import JsonFormatter, LogfmtFormatter
    from threads_exporter.redact import REDACT

    secret = 'tö"k\\en with space€'
    REDACT.set_secrets([secret])
    try:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", (secret,), None)
        record.error = f"upstream said {secret}"
        out = (JsonFormatter() if formatter == "json" else LogfmtFormatter()).format(record)
    finally:
        REDACT.set_secrets([])
    assert "<redacted>" in out
    for form in (secret, json.dumps(secret)[1:-1], secret.replace('"', '\\"')):
        assert form not in out, out
