-- identity_refresh: the refresh-token rotation of identity/accounts/rotation.py in one call, its
-- steps numbered and named as there (1-4, and the checks a-e of steps 1 and 2). Called as one
-- statement in autocommit, so the call is its own transaction. Times two replicas must agree on
-- (the rotation's, and the reuse interval measured from it) are the database's own, now(): never
-- a replica's clock; p_now serves the session's expiry and idle time and the audit events.
-- Changing it: docs/architecture.md, "The SQL functions".
CREATE OR REPLACE FUNCTION identity_refresh(
    p_hash text, p_client_id text, p_scope text[], p_successor text, p_sealed bytea,
    p_interval integer, p_now timestamptz, p_idle_since timestamptz,
    p_lock_prefix text, p_lock_limit integer, p_lock_window bigint,
    p_budget_limit integer, p_budget_window bigint, p_budget_expires timestamptz,
    p_audit_client text, p_ip text, p_audit_agent text, p_request_id text,
    p_notify text[] DEFAULT NULL, p_token_ttl integer DEFAULT 900
) RETURNS TABLE (
    outcome text, session_id text, user_id text, scope text, sealed bytea,
    email text, email_verified timestamptz, name text, image text, audience text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s record;
    v_count integer;
    v_step integer;
    v_reused_session text;
    v_reused_user text;
    v_reused_client text;
    v_reason text;
    v_event bigint;
BEGIN
    FOR v_step IN 1..2 LOOP
        -- 1. The current token; 2. the parent, within the reuse interval.
        IF v_step = 1 THEN
            SELECT se.id, se.user_id, se.scope, se.audience, se.client_id, se.expires,
                   se.last_used_at, se.previous_sealed, us.email, us.email_verified, us.name,
                   us.image, ac.suspended_at
            INTO s FROM sessions se JOIN users us ON us.id = se.user_id
            LEFT JOIN accounts ac ON ac.id = se.account_id
            WHERE se.session_token = p_hash;
        ELSE
            SELECT se.id, se.user_id, se.scope, se.audience, se.client_id, se.expires,
                   se.last_used_at, se.previous_sealed, us.email, us.email_verified, us.name,
                   us.image, ac.suspended_at
            INTO s FROM sessions se JOIN users us ON us.id = se.user_id
            LEFT JOIN accounts ac ON ac.id = se.account_id
            WHERE se.previous_hash = p_hash AND p_interval > 0
              AND se.previous_sealed IS NOT NULL
              AND se.rotated_at > now() - make_interval(secs => p_interval);
        END IF;
        CONTINUE WHEN NOT FOUND;

        session_id := s.id; user_id := s.user_id; scope := s.scope; audience := s.audience;
        email := s.email; email_verified := s.email_verified; name := s.name; image := s.image;
        -- a. The client the session is bound to ("client_mismatch"; the session stays).
        IF s.client_id <> p_client_id THEN
            outcome := 'client_mismatch'; RETURN NEXT; RETURN;
        END IF;
        -- b. Expiry and idle time ("session_expired"; the session is deleted), or the account
        -- it was started through suspended ("account_suspended"; the session ends as every
        -- session does, below with step 3's): a session that began beside a suspension cannot
        -- live on through its refresh token.
        IF s.expires <= p_now OR s.last_used_at <= p_idle_since THEN
            DELETE FROM sessions WHERE sessions.id = s.id;
            outcome := 'session_expired'; RETURN NEXT; RETURN;
        END IF;
        IF s.suspended_at IS NOT NULL THEN
            v_reused_session := s.id; v_reused_user := s.user_id; v_reused_client := s.client_id;
            v_reason := 'account_suspended';
            EXIT;
        END IF;
        -- c. The failure limit of the session's user, when it is checked here ("locked").
        IF p_lock_prefix IS NOT NULL THEN
            SELECT rl.count INTO v_count FROM rate_limits rl
            WHERE rl.key = p_lock_prefix || s.user_id AND rl.window_start = p_lock_window;
            IF v_count >= p_lock_limit THEN
                outcome := 'locked'; RETURN NEXT; RETURN;
            END IF;
        END IF;
        -- d. A narrower scope, within the session's ("bad_scope").
        IF p_scope IS NOT NULL AND NOT p_scope <@ string_to_array(s.scope, ' ') THEN
            outcome := 'bad_scope'; RETURN NEXT; RETURN;
        END IF;
        -- e. The user's success budget ("rate_limited").
        IF p_budget_limit IS NOT NULL THEN
            INSERT INTO rate_limits AS rl (key, window_start, count, expires_at)
            VALUES ('user:' || s.user_id, p_budget_window, 1, p_budget_expires)
            ON CONFLICT (key, window_start) DO UPDATE SET count = rl.count + 1
            RETURNING rl.count INTO v_count;
            IF v_count > p_budget_limit THEN
                outcome := 'rate_limited'; RETURN NEXT; RETURN;
            END IF;
        END IF;

        -- 2. The parent, within the reuse interval: the same successor again ("reused").
        IF v_step = 2 THEN
            UPDATE sessions SET last_used_at = p_now WHERE sessions.id = s.id;
            outcome := 'reused'; sealed := s.previous_sealed; RETURN NEXT; RETURN;
        END IF;
        -- 1. The current token: compare and swap ("rotated"). A concurrent twin that swapped
        -- first leaves nothing to match here; it then finds this token as the parent in step 2.
        UPDATE sessions SET session_token = p_successor, previous_hash = p_hash,
               previous_sealed = p_sealed, rotated_at = now(), last_used_at = p_now
        WHERE sessions.id = s.id AND sessions.session_token = p_hash;
        IF FOUND THEN
            INSERT INTO rotated_refresh_tokens (token_hash, session_id, rotated_at)
            VALUES (p_hash, s.id, now());
            outcome := 'rotated'; RETURN NEXT; RETURN;
        END IF;
        p_budget_limit := NULL;  -- counted once, whichever step answers
    END LOOP;

    -- 3. An earlier token: reuse revokes the session ("reuse_detected"), when its own client
    -- presents it; another client's is refused and the session stays ("client_mismatch").
    IF v_reason IS NULL THEN
        SELECT r.session_id, se.user_id, se.client_id
        INTO v_reused_session, v_reused_user, v_reused_client
        FROM rotated_refresh_tokens r JOIN sessions se ON se.id = r.session_id
        WHERE r.token_hash = p_hash;
        v_reason := 'reuse_detected';
    END IF;
    session_id := NULL; user_id := NULL; scope := NULL; audience := NULL;
    email := NULL; email_verified := NULL; name := NULL; image := NULL;
    IF v_reused_session IS NOT NULL AND v_reused_client <> p_client_id THEN
        outcome := 'client_mismatch'; RETURN NEXT; RETURN;
    END IF;
    IF v_reused_session IS NOT NULL THEN  -- reuse, or b.'s suspended account
        DELETE FROM sessions WHERE sessions.id = v_reused_session;
        INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                  user_agent, request_id, detail)
        VALUES (p_now, CASE WHEN v_reason = 'reuse_detected' THEN 'refresh_reuse'
                            ELSE 'session_revoked' END,
                v_reused_user, v_reused_session, p_audit_client, p_ip,
                p_audit_agent, p_request_id, jsonb_build_object('reason', v_reason))
        RETURNING id INTO v_event;
        -- The session ends as every session does (identity/accounts/sessions.py, end_sessions):
        -- the revocation feed's row, and a notice to each destination of session.ended.
        INSERT INTO revocations (txid, session_id, client_id, user_id, ended_at, expires_at)
        VALUES (pg_current_xact_id()::text::bigint, v_reused_session, v_reused_client,
                v_reused_user, p_now, p_now + make_interval(secs => p_token_ttl));
        INSERT INTO outbox (event, destination, payload, audit_event_id, created_at,
                            next_attempt_at, attempts, state)
        SELECT 'session.ended', d,
               jsonb_build_object('sid', v_reused_session, 'user_id', v_reused_user,
                                  'client_id', v_reused_client, 'reason', v_reason),
               v_event, p_now, now(), 0, 'pending'
        FROM unnest(p_notify) AS d;
        outcome := v_reason; session_id := v_reused_session; user_id := v_reused_user;
        RETURN NEXT; RETURN;
    END IF;

    -- 4. Otherwise: an unknown token ("unknown_token").
    outcome := 'unknown_token'; RETURN NEXT;
END
$$;
