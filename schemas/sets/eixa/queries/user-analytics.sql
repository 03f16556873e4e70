-- One user's analytics over the last N days: interactions, active days, average
-- duration, tokens, errors and their five most frequent intents.
-- @param user_id STRING  the app's user id
-- @param days INT64 = 30  how many days back
WITH base AS (
  SELECT *
  FROM user_interactions
  WHERE user_id = @user_id
    AND timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
),
totals AS (
  SELECT
    COUNT(*) AS total_interactions,
    COUNT(DISTINCT DATE(timestamp)) AS active_days,
    AVG(duration_ms) AS avg_duration_ms,
    IFNULL(SUM(IFNULL(tokens_in, 0) + IFNULL(tokens_out, 0)), 0) AS total_tokens,
    COUNTIF(error_code IS NOT NULL) AS error_count
  FROM base
),
intents AS (
  SELECT intent, COUNT(*) AS n
  FROM base
  WHERE intent IS NOT NULL
  GROUP BY intent
),
top AS (
  SELECT ARRAY_AGG(STRUCT(intent AS value, n AS count) ORDER BY n DESC, intent LIMIT 5) AS top_intents
  FROM intents
)
SELECT totals.*, top.top_intents
FROM totals CROSS JOIN top
