-- grain: one row per account whose binding_status is not ok on the latest published as_of_date
-- "Who is on margin call today": v_margin_calls of the newest date in account_margin only, so a
-- query needs no date filter (for another day: v_margin_calls WHERE as_of_date = 'YYYY-MM-DD').
CREATE OR REPLACE VIEW v_margin_calls_today AS
SELECT *
FROM v_margin_calls
WHERE as_of_date = (SELECT max(as_of_date) FROM account_margin);
