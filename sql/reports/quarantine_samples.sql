-- grain: one quarantined input row per row on the as_of_date ($1): up to 3 sample rows per (source table, reason)
SELECT source_table, reason, row_json
FROM (
    SELECT source_table, reason, row_json,
           row_number() OVER (PARTITION BY source_table, reason ORDER BY row_json) AS sample
    FROM quarantine
    WHERE as_of_date = $1
)
WHERE sample <= 3
ORDER BY source_table, reason, row_json;
