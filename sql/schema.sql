-- bytemark_pass: the MySQL source of truth for transit passes (SPEC section 2).
--
-- DB-agnostic on purpose: no CREATE DATABASE / USE here. Load it into the
-- database of your choice (`portal` in the tests and the demo), e.g.
--   mariadb portal < sql/schema.sql
--
-- Rows with version = 4 are returned in `passes4`, all others in `passes`.
-- `timestamp` is in milliseconds since the epoch (JavaScript Date.now()).
--
-- utf8mb4_bin: comparisons are exact and case-sensitive, as the API's `status`
-- filter is; pass_uuid is always stored lower-case by the writers.

CREATE TABLE IF NOT EXISTS bytemark_pass (
  id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id            BIGINT UNSIGNED NOT NULL,
  pass_uuid          CHAR(36)        NOT NULL,
  version            TINYINT UNSIGNED NOT NULL DEFAULT 3,  -- 3: passes, 4: passes4
  status             VARCHAR(32)     NOT NULL,
  free_ticket_status TINYINT         NOT NULL DEFAULT 0,
  payload            JSON            NULL,
  payload_hash       CHAR(64)        NULL,
  timestamp          BIGINT UNSIGNED NOT NULL,             -- ms since the epoch
  created_on  DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  modified_on DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  UNIQUE KEY uq_pass_uuid (pass_uuid),
  KEY ix_user_status (user_id, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
