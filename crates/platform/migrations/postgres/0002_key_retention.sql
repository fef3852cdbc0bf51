-- Idempotency keys and scan ids expire (platform::retention); the cleanup finds them by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON platform.idempotency_keys (created_at);
