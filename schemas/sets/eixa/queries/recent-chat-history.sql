-- One user's latest chat turns, newest first: context for retrieval.
-- @param user_id STRING  the app's user id
-- @param days INT64 = 7  how many days back
-- @param limit INT64 = 20  most turns returned
SELECT message_in, message_out, timestamp
FROM user_interactions
WHERE user_id = @user_id
  AND intent = 'chat'
  AND timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @days DAY)
ORDER BY timestamp DESC
LIMIT @limit
