"""The route table."""

from __future__ import annotations

from starlette.routing import Route

from . import discovery, oauth, profile

routes = [
    Route("/token", oauth.token, methods=["POST"]),
    Route("/auth/oauth/callback", oauth.oauth_callback, methods=["POST"]),
    Route("/revoke", oauth.revoke, methods=["POST"]),
    Route("/introspect", oauth.introspect, methods=["POST"]),
    Route("/auth/logout", oauth.logout, methods=["POST"]),
    Route("/.well-known/jwks.json", discovery.jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", discovery.openid_configuration, methods=["GET"]),
    Route("/users/me", profile.users_me, methods=["GET"]),
    Route("/users/me/sessions", profile.list_sessions, methods=["GET"]),
    Route("/users/me/sessions/{session_id}", profile.end_session, methods=["DELETE"]),
    Route("/userinfo", profile.userinfo, methods=["GET"]),
    Route("/healthz", discovery.healthz, methods=["GET"]),
    Route("/readyz", discovery.readyz, methods=["GET"]),
]
