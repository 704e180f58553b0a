-- grain: one row per (section, label) for one as_of_date ($1): the headline figures
-- printed by `margin demo` / `margin run` and put into the Prefect run artifact.
SELECT 'accounts by status' AS section, status AS label, count(*)::DOUBLE AS value, 1 AS ord
FROM account_margin WHERE as_of_date = $1 GROUP BY status
UNION ALL
SELECT 'total IM by mode (USD)', coalesce(margin_mode, 'unknown'), sum(im), 2
FROM account_margin WHERE as_of_date = $1 GROUP BY margin_mode
UNION ALL
SELECT 'netting benefit (USD)', 'gross_im - im, all accounts', coalesce(sum(netting_benefit), 0), 3
FROM account_margin WHERE as_of_date = $1
UNION ALL
SELECT 'netting benefit (USD)', 'gross_im - net_im, all accounts', coalesce(sum(gross_im - net_im), 0), 3
FROM account_margin WHERE as_of_date = $1
UNION ALL
SELECT 'netting benefit (USD)', 'aggregation benefit of margin groups', coalesce(sum(aggregation_benefit), 0), 3
FROM group_margin WHERE as_of_date = $1
UNION ALL
SELECT 'quarantined rows by reason', source_table || ': ' || reason, count(*)::DOUBLE, 4
FROM quarantine WHERE as_of_date = $1 GROUP BY source_table, reason
ORDER BY ord, section, label;
