-- The one insert into the outbox. Callers append through this function (the
-- outbox crate's `append`), or call it from their own statement when the
-- state change and its event must be written in one round trip (PlaceOrder,
-- a chord's callback): the outbox's columns are named here only.
CREATE FUNCTION commands.outbox_append(
    p_event_id uuid, p_topic text, p_key text, p_value bytea, p_headers jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO commands.outbox (event_id, topic, key, value, headers)
    VALUES (p_event_id, p_topic, p_key, p_value, p_headers)
    RETURNING id INTO new_id;
    RETURN new_id;
END;
$$;
