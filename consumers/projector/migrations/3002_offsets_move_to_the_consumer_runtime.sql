-- The consumer runtime (shared/consumer) now keeps every consumer's offsets
-- in consumer.offsets. Carry over what the projector stored, and keep the
-- analysts' view of projection freshness under its old name.
INSERT INTO consumer.offsets (consumer, topic, partition, next_offset, last_event_at, updated_at)
SELECT projection, topic, partition, next_offset, last_event_at, updated_at
FROM read_model.projection_offsets
ON CONFLICT DO NOTHING;

DROP TABLE read_model.projection_offsets;

CREATE VIEW read_model.projection_offsets AS
SELECT consumer AS projection, topic, partition, next_offset, last_event_at, updated_at
FROM consumer.offsets
WHERE consumer IN ('orders');
