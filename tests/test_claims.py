"""The one claim checker: decode first, then rules with `now`, leeway, issuers and audiences."""

from __future__ import annotations

from typing import Any

import pytest

from identity.errors import TokenRejected
from identity.tokens.claims import ClaimRules

NOW = 1_800_000_000
GOOD = {"iss": "https://id.test", "aud": "api", "sub": "u1", "iat": NOW, "exp": NOW + 60}


def rules(**options: Any) -> ClaimRules:
    base: dict[str, Any] = {
        "issuers": frozenset({"https://id.test"}),
        "audiences": frozenset({"api"}),
        "audience_mode": "all",
        "leeway": 10,
    }
    return ClaimRules(**{**base, **options})


def test_accepts_and_returns_times() -> None:
    checked = rules().check(dict(GOOD), NOW)
    assert (checked.subject, checked.issued_at, checked.expires_at) == ("u1", NOW, NOW + 60)


@pytest.mark.parametrize(
    ("mode", "aud", "ok"),
    [
        ("all", ["api", "other"], False),
        ("any", ["api", "other"], True),
        ("any", ["other"], False),
        ("all", "api", True),
    ],
)
def test_audience_modes(mode: str, aud: Any, ok: bool) -> None:
    check = rules(audience_mode=mode)
    if ok:
        check.check({**GOOD, "aud": aud}, NOW)
    else:
        with pytest.raises(TokenRejected):
            check.check({**GOOD, "aud": aud}, NOW)


@pytest.mark.parametrize(
    ("now", "claims", "reason"),
    [
        (NOW + 70, {}, "expired"),
        (NOW - 11, {}, "issued_in_future"),
        (NOW, {"nbf": NOW + 11}, "not_yet_valid"),
        (NOW, {"iss": "https://other.test"}, "bad_issuer"),
        (NOW, {"azp": "x"}, "bad_azp"),
        (NOW, {"exp": 2**53 + 1}, "bad_exp"),
        (NOW, {"iat": -1}, "bad_iat"),
        (NOW, {"nbf": 2**53 + 1}, "bad_nbf"),
        (NOW, {"exp": NOW + 86_401}, "lifetime_too_long"),
        (NOW, {"exp": 10**15}, "lifetime_too_long"),
    ],
)
def test_refusals(now: int, claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        rules(check_azp=True).check({**GOOD, **claims}, now)
    assert caught.value.reason == reason


def test_leeway_and_max_age() -> None:
    rules().check(dict(GOOD), NOW + 69)  # exp + leeway not yet reached
    with pytest.raises(TokenRejected) as caught:
        rules(max_age=30).check({**GOOD, "exp": NOW + 1000}, NOW + 41)
    assert caught.value.reason == "too_old"


def test_no_issuer_rule_when_the_caller_matched_it() -> None:
    rules(issuers=None).check({**GOOD, "iss": "anything"}, NOW)
