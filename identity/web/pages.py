"""The two small HTML pages of email verification: confirm (GET) and result (POST)."""

from __future__ import annotations

from html import escape

# A page that only shows text and one form posting back to us: nothing else may load or run.
# no-referrer: the address bar holds the token, which must not leak to other sites.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}"
    "button{font-size:1rem;padding:.6rem 1.2rem}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def confirm(email: str, token: str) -> str:
    # The link only shows this page; the token is spent by the POST, so mail scanners that
    # follow links do not consume it.
    return _page(
        "Confirm your email address",
        f"<p>Confirm that <strong>{escape(email)}</strong> is your address.</p>"
        '<form method="post" action="/auth/verify-email">'
        f'<input type="hidden" name="email" value="{escape(email, quote=True)}">'
        f'<input type="hidden" name="token" value="{escape(token, quote=True)}">'
        '<button type="submit">Confirm</button></form>',
    )


def result(ok: bool, email: str | None = None, *, conflict: bool = False) -> str:
    if ok:
        return _page(
            "Email address confirmed",
            f"<p><strong>{escape(email or '')}</strong> is confirmed. You can close this page.</p>",
        )
    if conflict:
        return _page(
            "Address already in use",
            "<p>This address already belongs to another account, which has confirmed it. "
            "Nothing was changed.</p>",
        )
    return _page(
        "Link not valid",
        "<p>This verification link is invalid, was already used, or has expired. "
        "Ask for a new one from your account page.</p>",
    )
