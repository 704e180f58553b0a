-- grain: one row per (measure, driver) on the as_of_date ($1): the book's day-over-day change split by driver (v_account_change)
SELECT 'im' AS measure, 'price' AS driver, sum(im_price_effect) AS change_usd, any_value(prev_date) AS prev_date, 1 AS ord
FROM v_account_change WHERE as_of_date = $1
UNION ALL SELECT 'im', 'positions', sum(im_position_effect), any_value(prev_date), 2 FROM v_account_change WHERE as_of_date = $1
UNION ALL SELECT 'equity', 'collateral', sum(equity_collateral_effect), any_value(prev_date), 3 FROM v_account_change WHERE as_of_date = $1
UNION ALL SELECT 'equity', 'price', sum(equity_price_effect), any_value(prev_date), 4 FROM v_account_change WHERE as_of_date = $1
UNION ALL SELECT 'equity', 'positions', sum(equity_position_effect), any_value(prev_date), 5 FROM v_account_change WHERE as_of_date = $1
ORDER BY ord;
