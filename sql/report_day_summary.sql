-- grain: one row per (section, label) for one as_of_date ($1): the headline figures
-- printed by `margin demo` / `margin run` and put into the Prefect run artifact.
-- Accounts are counted by binding_status, as the report counts them (a margin group member's
-- binding status is its group's); two rows say where the own status differs and why.
SELECT 'accounts by binding status' AS section, binding_status AS label, count(*)::DOUBLE AS value, 1 AS ord
FROM account_margin WHERE as_of_date = $1 GROUP BY binding_status
UNION ALL
SELECT 'accounts by binding status', 'own status not ok, covered by its margin group', count(*)::DOUBLE, 2
FROM account_margin WHERE as_of_date = $1 AND status <> 'ok' AND binding_status = 'ok'
HAVING count(*) > 0
UNION ALL
SELECT 'accounts by binding status', 'own status ok, its margin group not ok', count(*)::DOUBLE, 2
FROM account_margin WHERE as_of_date = $1 AND status = 'ok' AND binding_status <> 'ok'
HAVING count(*) > 0
UNION ALL
SELECT 'total IM by mode (USD)', coalesce(margin_mode, 'unknown'), sum(im), 3
FROM account_margin WHERE as_of_date = $1 GROUP BY margin_mode
UNION ALL
SELECT 'netting benefit (USD)', 'gross_im - im, all accounts', coalesce(sum(netting_benefit), 0), 4
FROM account_margin WHERE as_of_date = $1
UNION ALL
SELECT 'netting benefit (USD)', 'gross_im - net_im, all accounts', coalesce(sum(gross_im - net_im), 0), 4
FROM account_margin WHERE as_of_date = $1
UNION ALL
SELECT 'netting benefit (USD)', 'aggregation benefit of margin groups', coalesce(sum(aggregation_benefit), 0), 4
FROM group_margin WHERE as_of_date = $1
UNION ALL
SELECT 'quarantined rows by reason', source_table || ': ' || reason, count(*)::DOUBLE, 5
FROM quarantine WHERE as_of_date = $1 GROUP BY source_table, reason
ORDER BY ord, label;
