-- Sample passes for the demo and the tests (load after sql/schema.sql).
--
--   user 12345: two v3 passes (one active, one expired) and one v4 pass
--   user 777:   one v3 pass
--
-- pass_uuid values are lower-case canonical UUIDs; timestamps are ms since the
-- epoch; payload_hash is the lowercase hex SHA-256 of the payload serialized
-- compactly with sorted keys (the same default bytemark_ingest computes).
-- DB-agnostic: load it into the database that holds bytemark_pass.

SET NAMES utf8mb4;

INSERT INTO bytemark_pass
  (user_id, pass_uuid, version, status, free_ticket_status,
   payload,
   payload_hash, timestamp)
VALUES
  (12345, '3f8e2a6c-1b4d-4c7e-9a2f-5d6b8c0e1f23', 3, 'active', 0,
   '{"activation_time":"2024-11-20T10:53:20Z","expiration_time":"2024-12-20T10:53:20Z","fare":{"amount":8900,"currency":"USD"},"order_uuid":"0b9d7f5e-3c1a-4e8b-b6d4-2f0a8c6e4b1d","product":{"name":"Monthly Pass","type":"PERIOD","uuid":"a1c3e5f7-2b4d-4f6a-8c0e-1d3f5a7b9c2e"},"rider":"Adult","zones":["A","B"]}',
   '6c54317ef0dfe1e26c483032e30cdd05fd41b5dba796d4b352bd5e978b4ed76b', 1732100000000),
  (12345, '7c2d9e4f-6a1b-4d3c-8e5f-0a9b8c7d6e5f', 3, 'expired', 1,
   '{"activation_time":"2024-10-21T08:40:00Z","expiration_time":"2024-10-21T10:40:00Z","fare":{"amount":275,"currency":"USD"},"note":"free transfer used","product":{"name":"Single Ride","type":"RIDE","uuid":"c4e6a8b0-5d7f-4a1c-9e3b-6f8d0a2c4e6b"},"rider":"Adult","zones":["A"]}',
   'fb4e6c3b4ba581ca9dfa2d69b3a61e7f71f6cc0dc152a17dd76e6d966ae93552', 1729500000000),
  (12345, 'b5a4c3d2-e1f0-4a9b-8c7d-6e5f4a3b2c1d', 4, 'active', 0,
   '{"activation_time":null,"expiration_time":null,"fare":{"amount":3400,"currency":"USD"},"links":{"terms":"https://example.com/terms/7-day"},"product":{"name":"7-Day Pass","type":"PERIOD","uuid":"e7f9b1d3-8c0a-4b2e-a4c6-9d1f3b5d7e9a"},"rider":"Reduced Fare","visual_validation":{"code":"K7","color":"#1E90FF"},"zones":["A","B","C"]}',
   '2dd122f6e1129abf778e96865b953cb825741ad4cce97cd8a22f47a370fe7810', 1732150000000),
  (777, '0e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6', 3, 'active', 0,
   '{"activation_time":"2024-11-07T17:20:00Z","expiration_time":"2024-11-08T17:20:00Z","fare":{"amount":500,"currency":"USD"},"label":"Café São Paulo","product":{"name":"Day Pass","type":"PERIOD","uuid":"f0a2c4e6-1b3d-4f5a-b7c9-0d2e4f6a8b1c"},"rider":"Senior","zones":["A"]}',
   'dddc4898538b48953fba7d537e9fb0518def3c3dc08e24b00097c35dac620df8', 1731000000000);
