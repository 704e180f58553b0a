-- grain: one row per (status kind, status) on the as_of_date ($1): own status and binding (group) status counts
SELECT 'own status' AS kind, status, count(*) AS accounts
FROM account_margin WHERE as_of_date = $1 GROUP BY status
UNION ALL
SELECT 'binding status', binding_status, count(*)
FROM account_margin WHERE as_of_date = $1 GROUP BY binding_status
ORDER BY kind DESC, status;
