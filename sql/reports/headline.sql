-- grain: one row for the as_of_date ($1): the day's headline figures for the risk desk report
SELECT
    count(*) AS accounts,
    count(*) FILTER (WHERE binding_status <> 'ok') AS accounts_not_ok,
    sum(im) AS im,
    sum(mm) AS mm,
    sum(equity) AS equity,
    sum(gross_im) AS gross_im,
    sum(netting_benefit) AS netting_benefit,
    (SELECT coalesce(sum(aggregation_benefit), 0) FROM group_margin WHERE as_of_date = $1) AS aggregation_benefit,
    (SELECT count(*) FROM quarantine WHERE as_of_date = $1) AS quarantined_rows,
    any_value(run_id) AS run_id
FROM account_margin
WHERE as_of_date = $1;
