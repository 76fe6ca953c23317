-- The forecast a `projected_to_exceed` alert fired on: projected spend, its
-- range and basis (method, days of history, weekday factors, trend), sent
-- in the webhook payload as stored, so a retry sends the same bytes.
ALTER TABLE alerts ADD COLUMN forecast JSONB;
