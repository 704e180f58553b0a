-- grain: one row for the account $2 on the as_of_date $1: its v_account_change row (same columns, same
-- formulas; see sql/views/v_account_change.sql), computed from that account's rows of the two dates
-- and the per-unit figures of the instruments it held the day before only, so that `margin explain`
-- does not aggregate the whole book of both days. No row when no earlier date is published or the
-- account is on neither day.
WITH pairs AS (
    SELECT $1::DATE AS as_of_date, max(as_of_date) AS prev_date
    FROM account_margin
    WHERE as_of_date < $1::DATE
    HAVING max(as_of_date) IS NOT NULL
),
held_before AS (
    SELECT y.*
    FROM pairs AS p JOIN position_margin AS y ON y.as_of_date = p.prev_date AND y.account_id = $2
),
unit_figures AS (
    SELECT
        instrument_id,
        any_value(mv_usd / net_qty) FILTER (WHERE net_qty <> 0) AS mv_per_unit,
        sum(net_im) FILTER (WHERE net_qty > 0) / sum(net_qty) FILTER (WHERE net_qty > 0) AS im_per_long_unit,
        sum(net_im) FILTER (WHERE net_qty < 0) / sum(-net_qty) FILTER (WHERE net_qty < 0) AS im_per_short_unit
    FROM position_margin
    WHERE as_of_date = $1::DATE AND instrument_id IN (SELECT instrument_id FROM held_before)
    GROUP BY instrument_id
),
prev_book_today AS (
    SELECT
        sum(CASE WHEN y.kind IN ('option', 'spot') THEN y.mv_usd ELSE 0 END) AS prev_position_value,
        sum(CASE WHEN y.kind IN ('option', 'spot') AND y.net_qty <> 0
                 THEN y.net_qty * coalesce(t.mv_per_unit, y.mv_usd / y.net_qty) ELSE 0 END) AS prev_position_value_today,
        sum(y.net_im) AS prev_net_im,
        sum(CASE WHEN y.net_qty > 0 THEN y.net_qty * coalesce(t.im_per_long_unit, y.net_im / y.net_qty)
                 WHEN y.net_qty < 0 THEN -y.net_qty * coalesce(t.im_per_short_unit, y.net_im / -y.net_qty)
                 ELSE 0 END) AS prev_net_im_today
    FROM held_before AS y
    LEFT JOIN unit_figures AS t ON t.instrument_id = y.instrument_id
    HAVING count(*) > 0
),
today AS (
    SELECT * FROM account_margin WHERE as_of_date = $1::DATE AND account_id = $2
),
prev AS (
    SELECT a.* FROM pairs AS p JOIN account_margin AS a ON a.as_of_date = p.prev_date AND a.account_id = $2
),
joined AS (
    SELECT
        p.as_of_date,
        p.prev_date,
        coalesce(t.account_id, y.account_id) AS account_id,
        coalesce(t.margin_group, y.margin_group) AS margin_group,
        t.margin_mode,
        y.margin_mode AS prev_margin_mode,
        t.status,
        y.status AS prev_status,
        coalesce(t.im, 0) AS im,
        coalesce(y.im, 0) AS prev_im,
        coalesce(t.equity, 0) AS equity,
        coalesce(y.equity, 0) AS prev_equity,
        coalesce(t.collateral_value_usd, 0) - coalesce(y.collateral_value_usd, 0) AS collateral_change,
        coalesce(t.position_value_usd, 0) - coalesce(y.position_value_usd, 0) AS position_value_change,
        t.account_id IS NULL AS gone_today,
        y.account_id IS NULL AS new_today
    FROM pairs AS p
    LEFT JOIN today AS t ON true
    LEFT JOIN prev AS y ON true
    WHERE t.account_id IS NOT NULL OR y.account_id IS NOT NULL
)
SELECT
    j.as_of_date,
    j.prev_date,
    j.account_id,
    j.margin_group,
    j.margin_mode,
    j.prev_margin_mode,
    j.status,
    j.prev_status,
    j.im,
    j.prev_im,
    j.im - j.prev_im AS im_change,
    coalesce(CASE WHEN b.prev_net_im > 0 THEN j.prev_im * (b.prev_net_im_today / b.prev_net_im - 1) END, 0)
        AS im_price_effect,
    j.im - j.prev_im
        - coalesce(CASE WHEN b.prev_net_im > 0 THEN j.prev_im * (b.prev_net_im_today / b.prev_net_im - 1) END, 0)
        AS im_position_effect,
    j.equity,
    j.prev_equity,
    j.equity - j.prev_equity AS equity_change,
    j.collateral_change AS equity_collateral_effect,
    coalesce(b.prev_position_value_today - b.prev_position_value, 0) AS equity_price_effect,
    j.position_value_change - coalesce(b.prev_position_value_today - b.prev_position_value, 0)
        AS equity_position_effect,
    j.new_today,
    j.gone_today
FROM joined AS j
LEFT JOIN prev_book_today AS b ON true;
