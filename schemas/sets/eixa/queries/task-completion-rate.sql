-- One user's task completion rate over the last N days: each task counted once,
-- in its latest state.
-- @param user_id STRING  the app's user id
-- @param days INT64 = 7  how many days back
WITH latest AS (
  SELECT task_id, completed,
    ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY IFNULL(updated_at, created_at) DESC) AS rn
  FROM tasks
  WHERE user_id = @user_id
    AND created_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
)
SELECT
  COUNT(*) AS tasks,
  COUNTIF(completed) AS completed,
  SAFE_DIVIDE(COUNTIF(completed), COUNT(*)) AS completion_rate
FROM latest
WHERE rn = 1
