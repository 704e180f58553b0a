-- grain: one row per as_of_date × source_table × reason (SPEC §3)
-- rows_read comes from the publishing run's row_counts; share_of_table = rows / rows_read.
CREATE OR REPLACE VIEW v_quarantine_summary AS
SELECT
    q.as_of_date,
    q.source_table,
    q.reason,
    count(*) AS rows,
    any_value(json_extract_string(r.row_counts, '$."' || q.source_table || '".read'))::BIGINT AS rows_read,
    count(*) / nullif(any_value(json_extract_string(r.row_counts, '$."' || q.source_table || '".read'))::DOUBLE, 0)
        AS share_of_table,
    min(q.row_json) AS example_row
FROM quarantine AS q
LEFT JOIN runs AS r ON r.run_id = q.run_id
GROUP BY q.as_of_date, q.source_table, q.reason;
