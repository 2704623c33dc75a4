-- Wake the relay when events are written: one notification per inserting
-- statement (PostgreSQL also folds duplicates within a transaction).
CREATE FUNCTION commands.notify_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tributary_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
AFTER INSERT ON commands.outbox
FOR EACH STATEMENT EXECUTE FUNCTION commands.notify_outbox();

CREATE INDEX outbox_published ON commands.outbox (published_at) WHERE published_at IS NOT NULL;
