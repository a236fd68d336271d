-- identity_sign_in: the sign-in transaction of identity/accounts/sign_in.py in one call, its
-- steps numbered and named as there. Called as one statement in autocommit, so the call is its
-- own transaction; a concurrent change detected inside raises serialization_failure (or a
-- unique violation), which rolls it back whole, and the caller retries.
-- Changing it: docs/architecture.md, "The SQL functions".
CREATE OR REPLACE FUNCTION identity_sign_in(
    p_replay_key text, p_replay_expires timestamptz, p_provider text, p_account_key text,
    p_email text, p_authoritative boolean, p_name text, p_picture text,
    p_client_id text, p_scope text, p_session_id text, p_refresh_hash text,
    p_session_expires timestamptz, p_user_agent text, p_now timestamptz,
    p_new_user_id text, p_new_account_id text,
    p_lock_key text, p_lock_limit integer, p_lock_window bigint,
    p_budget_limit integer, p_budget_window bigint, p_budget_expires timestamptz,
    p_access_token text, p_refresh_token text, p_id_token text, p_expires_at bigint,
    p_token_type text, p_token_scope text, p_session_state text,
    p_audit_client text, p_ip text, p_audit_agent text, p_request_id text,
    p_audience text DEFAULT NULL, p_upstream_sid text DEFAULT NULL,
    p_notify text[] DEFAULT NULL, p_issued_at timestamptz DEFAULT NULL
) RETURNS TABLE (
    outcome text, created_user boolean, r_id text, r_name text, r_email text,
    r_email_verified timestamptz, r_image text, r_pending_email text,
    r_created_at timestamptz, r_updated_at timestamptz, r_accounts text, r_reason text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    u users%ROWTYPE;
    holder users%ROWTYPE;
    other users%ROWTYPE;
    v_user_id text;
    v_account_id text;
    v_suspended timestamptz;
    v_revoked timestamptz;
    v_refusal text;
    v_how text := 'returning';
    v_created boolean := false;
    v_count integer;
    v_name text;
    v_image text;
    v_email text;
    v_verified timestamptz;
    v_verified_by text;
    v_pending text;
    v_changed boolean;
    v_event bigint;
BEGIN
    -- 1. The failure limit of this caller, when it is checked here ("locked").
    IF p_lock_key IS NOT NULL THEN
        SELECT rl.count INTO v_count FROM rate_limits rl
        WHERE rl.key = p_lock_key AND rl.window_start = p_lock_window;
        IF v_count >= p_lock_limit THEN
            outcome := 'locked'; RETURN NEXT; RETURN;
        END IF;
    END IF;

    -- 2. Who it is: the account, or else the token's address ("conflict", "disabled",
    -- "suspended", "revoked").
    -- The account row is locked: a signal suspending it or ending its sessions (which locks
    -- it FOR UPDATE first) either committed before, and is seen here, or waits for this
    -- sign-in and then ends its session too; a plain read would let the session in after the
    -- signal ended the others. Cheap: one row found by its unique key, which the session's
    -- foreign key locks anyway. NO KEY UPDATE rather than SHARE: step 6 may update the row,
    -- and two SHARE holders upgrading at once would deadlock.
    SELECT a.id, a.user_id, a.suspended_at, a.sessions_revoked_at
    INTO v_account_id, v_user_id, v_suspended, v_revoked
    FROM accounts a WHERE a.provider = p_provider AND a.provider_account_id = p_account_key
    FOR NO KEY UPDATE;
    IF v_user_id IS NOT NULL THEN
        SELECT * INTO u FROM users WHERE users.id = v_user_id;
    ELSIF p_email IS NOT NULL THEN
        -- Locked: two first sign-ins of one provider cannot both see the holder without an
        -- account of it, and both link.
        SELECT * INTO holder FROM users WHERE users.email = p_email FOR NO KEY UPDATE;
        IF holder.id IS NOT NULL AND EXISTS (
            SELECT 1 FROM accounts a
            WHERE a.provider = p_provider AND a.provider_account_id = p_account_key
        ) THEN
            -- This very account was created since the first read of this step: a concurrent
            -- first sign-in of the same person committed in between. It is no conflict: start
            -- over, and the account is found.
            RAISE EXCEPTION 'account created meanwhile' USING ERRCODE = 'serialization_failure';
        END IF;
        IF holder.id IS NOT NULL AND holder.email_verified IS NOT NULL THEN
            v_refusal := CASE
                WHEN NOT p_authoritative THEN 'account_conflict'
                -- Another account key at this provider for the same address: a recycled
                -- domain or a recreated account, never the same person by proof.
                WHEN EXISTS (SELECT 1 FROM accounts a
                             WHERE a.user_id = holder.id AND a.provider = p_provider)
                    THEN 'same_provider'
                -- Proven only by our mail (or before this was recorded): a phished
                -- confirmation must not earn the link.
                WHEN holder.email_verified_by IS NULL OR holder.email_verified_by = 'mail'
                    THEN 'not_proven_by_provider'
            END;
            IF v_refusal IS NOT NULL THEN
                INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                          user_agent, request_id, detail)
                VALUES (p_now, 'sign_in_refused', holder.id, NULL, p_audit_client, p_ip,
                        p_audit_agent, p_request_id,
                        jsonb_build_object('provider', p_provider, 'reason', v_refusal));
                outcome := 'conflict'; r_reason := v_refusal; RETURN NEXT; RETURN;
            END IF;
            u := holder;
            v_how := 'linked';
        END IF;
    END IF;
    IF u.id IS NOT NULL AND u.disabled_at IS NOT NULL THEN
        INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                  user_agent, request_id, detail)
        VALUES (p_now, 'sign_in_refused', u.id, NULL, p_audit_client, p_ip, p_audit_agent,
                p_request_id, jsonb_build_object('provider', p_provider, 'reason', 'disabled'));
        outcome := 'disabled'; RETURN NEXT; RETURN;
    END IF;
    IF v_suspended IS NOT NULL THEN  -- this account only: the user's others still sign in
        INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                  user_agent, request_id, detail)
        VALUES (p_now, 'sign_in_refused', u.id, NULL, p_audit_client, p_ip, p_audit_agent,
                p_request_id, jsonb_build_object('provider', p_provider, 'reason', 'suspended'));
        outcome := 'suspended'; RETURN NEXT; RETURN;
    END IF;
    -- Issued no later than a signal ended this account's sessions, or in an upstream session a
    -- back-channel logout ended: a stolen, unused id_token gets no session after the event.
    IF p_issued_at <= v_revoked OR (p_upstream_sid IS NOT NULL AND EXISTS (
        SELECT 1 FROM ended_upstream_sessions e
        WHERE e.provider = p_provider AND e.sid = p_upstream_sid
    )) THEN
        INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                  user_agent, request_id, detail)
        VALUES (p_now, 'sign_in_refused', u.id, NULL, p_audit_client, p_ip, p_audit_agent,
                p_request_id, jsonb_build_object('provider', p_provider, 'reason', 'revoked'));
        outcome := 'revoked'; RETURN NEXT; RETURN;
    END IF;

    -- 3. Single use: the id_token is remembered ("replayed").
    INSERT INTO used_id_tokens (replay_key, expires_at) VALUES (p_replay_key, p_replay_expires)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        outcome := 'replayed'; RETURN NEXT; RETURN;
    END IF;

    -- 4. The user's success budget ("rate_limited"; a 429 does not spend the id_token).
    IF u.id IS NOT NULL AND p_budget_limit IS NOT NULL THEN
        INSERT INTO rate_limits AS rl (key, window_start, count, expires_at)
        VALUES ('user:' || u.id, p_budget_window, 1, p_budget_expires)
        ON CONFLICT (key, window_start) DO UPDATE SET count = rl.count + 1
        RETURNING rl.count INTO v_count;
        IF v_count > p_budget_limit THEN
            DELETE FROM used_id_tokens WHERE replay_key = p_replay_key;
            outcome := 'rate_limited'; RETURN NEXT; RETURN;
        END IF;
    END IF;

    -- 5. The user: a new one, or the profile refreshed from the token.
    IF u.id IS NULL THEN
        v_created := true;
        v_email := p_email;
        IF holder.id IS NOT NULL THEN  -- held, but not verified
            IF p_authoritative THEN
                UPDATE users SET email = NULL, updated_at = p_now
                WHERE users.id = holder.id AND users.email_verified IS NULL;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'address verified meanwhile'
                        USING ERRCODE = 'serialization_failure';
                END IF;
                INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip,
                                          user_agent, request_id, detail)
                VALUES (p_now, 'email_released', holder.id, NULL, p_audit_client, p_ip,
                        p_audit_agent, p_request_id,
                        jsonb_build_object('provider', p_provider, 'reason', 'proven_by_provider'));
            ELSE
                v_email := NULL;
            END IF;
        END IF;
        INSERT INTO users (id, name, email, email_verified, email_verified_by, image,
                           name_edited, image_edited, email_edited, last_sign_in_at, created_at,
                           updated_at)
        VALUES (p_new_user_id, p_name, v_email,
                CASE WHEN v_email IS NOT NULL AND p_authoritative THEN p_now END,
                CASE WHEN v_email IS NOT NULL AND p_authoritative THEN p_provider END,
                p_picture, false, false, false, p_now, p_now, p_now)
        RETURNING * INTO u;
        v_account_id := p_new_account_id;
        INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at,
                              updated_at)
        VALUES (v_account_id, u.id, 'oidc', p_provider, p_account_key, p_now, p_now);
        IF p_budget_limit IS NOT NULL THEN  -- 4. for a first sign-in too (1: never over)
            INSERT INTO rate_limits AS rl (key, window_start, count, expires_at)
            VALUES ('user:' || u.id, p_budget_window, 1, p_budget_expires)
            ON CONFLICT (key, window_start) DO UPDATE SET count = rl.count + 1;
        END IF;
    ELSE
        IF v_account_id IS NULL THEN  -- linked by a verified address
            v_account_id := p_new_account_id;
            INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at,
                                  updated_at)
            VALUES (v_account_id, u.id, 'oidc', p_provider, p_account_key, p_now, p_now);
        END IF;
        v_name := CASE WHEN NOT u.name_edited AND p_name IS NOT NULL THEN p_name ELSE u.name END;
        v_image := CASE WHEN NOT u.image_edited AND p_picture IS NOT NULL
                        THEN p_picture ELSE u.image END;
        v_email := u.email;
        v_verified := u.email_verified;
        v_verified_by := u.email_verified_by;
        v_pending := u.pending_email;
        IF p_authoritative AND p_email IS NOT NULL THEN
            IF p_email = u.email THEN  -- proven now, if it was not before, and by a provider
                v_verified := COALESCE(v_verified, p_now);
                IF v_verified_by IS NULL OR v_verified_by = 'mail' THEN
                    v_verified_by := p_provider;
                END IF;
            ELSIF NOT u.email_edited THEN
                SELECT * INTO other FROM users WHERE users.email = p_email;
                IF other.id IS NULL OR other.email_verified IS NULL THEN
                    IF other.id IS NOT NULL THEN
                        UPDATE users SET email = NULL, updated_at = p_now
                        WHERE users.id = other.id AND users.email_verified IS NULL;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION 'address verified meanwhile'
                                USING ERRCODE = 'serialization_failure';
                        END IF;
                        INSERT INTO audit_events (created_at, type, user_id, session_id,
                                                  client_id, ip, user_agent, request_id, detail)
                        VALUES (p_now, 'email_released', other.id, NULL, p_audit_client, p_ip,
                                p_audit_agent, p_request_id,
                                jsonb_build_object('provider', p_provider,
                                                   'reason', 'proven_by_provider'));
                    END IF;
                    IF u.email IS NOT NULL THEN
                        DELETE FROM verification_tokens vt
                        WHERE vt.user_id = u.id AND vt.identifier = u.email;
                    END IF;
                    v_email := p_email;
                    v_verified := p_now;
                    v_verified_by := p_provider;
                    IF v_pending = p_email THEN
                        v_pending := NULL;
                    END IF;
                END IF;
            END IF;
        END IF;
        v_changed := (v_name, v_image, v_email, v_verified, v_pending)
            IS DISTINCT FROM (u.name, u.image, u.email, u.email_verified, u.pending_email);
        UPDATE users SET name = v_name, image = v_image, email = v_email,
               email_verified = v_verified, email_verified_by = v_verified_by,
               pending_email = v_pending,
               updated_at = CASE WHEN v_changed THEN p_now ELSE users.updated_at END,
               last_sign_in_at = p_now
        WHERE users.id = u.id AND users.disabled_at IS NULL
        RETURNING * INTO u;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'user disabled meanwhile' USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    -- 6. The provider tokens, field by field (a field not given keeps its value).
    IF num_nonnulls(p_access_token, p_refresh_token, p_id_token, p_expires_at, p_token_type,
                    p_token_scope, p_session_state) > 0 THEN
        UPDATE accounts SET access_token = COALESCE(p_access_token, access_token),
               refresh_token = COALESCE(p_refresh_token, refresh_token),
               id_token = COALESCE(p_id_token, id_token),
               expires_at = COALESCE(p_expires_at, expires_at),
               token_type = COALESCE(p_token_type, token_type),
               scope = COALESCE(p_token_scope, scope),
               session_state = COALESCE(p_session_state, session_state),
               updated_at = p_now
        WHERE accounts.id = v_account_id;
    END IF;

    -- 7. The session and the sign_in audit event.
    INSERT INTO sessions (id, session_token, user_id, expires, client_id, scope, audience,
                          account_id, upstream_sid, user_agent, created_at, last_used_at)
    VALUES (p_session_id, p_refresh_hash, u.id, p_session_expires, p_client_id, p_scope,
            p_audience, v_account_id, p_upstream_sid, p_user_agent, p_now, p_now);
    INSERT INTO audit_events (created_at, type, user_id, session_id, client_id, ip, user_agent,
                              request_id, detail)
    VALUES (p_now, 'sign_in', u.id, p_session_id, p_audit_client, p_ip, p_audit_agent,
            p_request_id,
            jsonb_build_object('provider', p_provider, 'created_user', v_created,
                               'reason', CASE WHEN v_created THEN 'created' ELSE v_how END))
    RETURNING id INTO v_event;
    -- The notices someone subscribes to ('<event> <destination>' each; none: no row at all).
    INSERT INTO outbox (event, destination, payload, audit_event_id, created_at,
                        next_attempt_at, attempts, state)
    SELECT split_part(n, ' ', 1), substr(n, strpos(n, ' ') + 1),
           CASE WHEN split_part(n, ' ', 1) = 'user.created'
                THEN jsonb_build_object('user_id', u.id, 'provider', p_provider)
                ELSE jsonb_build_object('user_id', u.id, 'account_id', v_account_id,
                                        'provider', p_provider) END,
           v_event, p_now, now(), 0, 'pending'
    FROM unnest(p_notify) AS n
    WHERE (split_part(n, ' ', 1) = 'user.created' AND v_created)
       OR (split_part(n, ' ', 1) = 'account.linked' AND v_how = 'linked');

    -- 8. The answer: the user and their accounts ("ok").
    outcome := 'ok';
    created_user := v_created;
    r_id := u.id;
    r_name := u.name;
    r_email := u.email;
    r_email_verified := u.email_verified;
    r_image := u.image;
    r_pending_email := u.pending_email;
    r_created_at := u.created_at;
    r_updated_at := u.updated_at;
    SELECT COALESCE(json_agg(json_build_array(a.provider, a.provider_account_id)
                             ORDER BY a.created_at, a.id), '[]')::text
    INTO r_accounts FROM accounts a WHERE a.user_id = u.id;
    RETURN NEXT;
END
$$;
