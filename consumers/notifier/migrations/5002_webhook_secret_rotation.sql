-- Rotating a subscription's secret: the new one signs every delivery at
-- once, and the one it replaced signs too until `previous_secret_expires_at`,
-- so a receiver can switch keys without refusing a delivery.
ALTER TABLE notifier.subscriptions
    ADD COLUMN previous_secret            text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN secret_rotated_at          timestamptz,
    ADD CONSTRAINT previous_secret_expires
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
