-- Today's (UTC) search engagement: unique users, searches, average results per search.
SELECT
  COUNT(DISTINCT user_id) AS unique_users,
  COUNT(*) AS total_searches,
  AVG(result_count) AS avg_results
FROM user_search_events
WHERE DATE(timestamp) = CURRENT_DATE()
