-- grain: one row per (source table, reason) on the as_of_date ($1): quarantined rows, rows read, share of the table
SELECT source_table, reason, rows, rows_read, share_of_table
FROM v_quarantine_summary
WHERE as_of_date = $1
ORDER BY source_table, rows DESC, reason;
