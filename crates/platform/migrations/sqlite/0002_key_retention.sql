-- Idempotency keys and scan ids expire (platform::retention); the cleanup finds them by age.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);
