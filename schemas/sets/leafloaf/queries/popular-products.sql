-- The 20 products with the most interactions in the last 7 days, with their cart adds.
SELECT
  product_name,
  COUNT(*) AS interaction_count,
  SUM(CASE WHEN interaction_type = 'add_to_cart' THEN 1 ELSE 0 END) AS cart_adds
FROM product_interaction_events
WHERE DATE(timestamp) >= DATE_SUB(CURRENT_DATE(), INTERVAL 7 DAY)
GROUP BY product_name
ORDER BY interaction_count DESC, product_name
LIMIT 20
