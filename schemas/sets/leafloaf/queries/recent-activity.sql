-- Searches in the last hour: how many, and the latest one's time.
SELECT
  COUNT(*) AS event_count,
  MAX(timestamp) AS latest_event
FROM user_search_events
WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)
