"""The route table."""

from __future__ import annotations

from starlette.routing import Route

from . import discovery, me, oauth

routes = [
    Route("/token", oauth.token, methods=["POST"]),
    Route("/auth/oauth/callback", oauth.oauth_callback, methods=["POST"]),
    Route("/revoke", oauth.revoke, methods=["POST"]),
    Route("/introspect", oauth.introspect, methods=["POST"]),
    Route("/auth/logout", oauth.logout, methods=["POST"]),
    Route("/.well-known/jwks.json", discovery.jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", discovery.openid_configuration, methods=["GET"]),
    Route("/users/me", me.get_me, methods=["GET"]),
    Route("/users/me", me.patch_me, methods=["PATCH"]),
    Route("/users/me", me.delete_me, methods=["DELETE"]),
    Route("/users/me/sessions", me.list_sessions, methods=["GET"]),
    Route("/users/me/sessions/{session_id}", me.end_session, methods=["DELETE"]),
    Route("/userinfo", me.userinfo, methods=["GET"]),
    Route("/auth/verify-email/request", me.request_verification, methods=["POST"]),
    Route("/auth/verify-email", me.verify_email, methods=["POST"]),
    Route("/auth/verify-email", me.verify_email_page, methods=["GET"]),
    Route("/healthz", discovery.healthz, methods=["GET"]),
    Route("/readyz", discovery.readyz, methods=["GET"]),
    Route("/metrics", discovery.metrics, methods=["GET"]),
    Route("/openapi.json", discovery.openapi, methods=["GET"]),
]
