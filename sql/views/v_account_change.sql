-- grain: one row per account × as_of_date that has an earlier published date (prev_date: the
-- previous as_of_date in account_margin); an account present on only one of the two days has 0
-- for the other. Day-over-day change of im and equity with their drivers, USD:
--   equity_change = equity_collateral_effect + equity_price_effect + equity_position_effect
--     collateral: Δ collateral_value_usd (balances, their FX rates and haircuts together);
--     price: yesterday's option and spot positions revalued at today's per-unit mark
--            (mv_usd / net_qty of the instrument today, any account) minus yesterday's value;
--     position: the rest of Δ position_value_usd (positions opened, closed or resized).
--   im_change = im_price_effect + im_position_effect
--     price: yesterday's im × (yesterday's netted positions' net_im at today's per-unit net_im
--            of the same instrument and side / yesterday's net_im − 1); exact for cross accounts
--            (im = net_im), a proportional approximation for isolated and portfolio accounts;
--     position: the rest (new, closed or resized positions, a mode change, and for portfolio
--            accounts the non-additive part of scenario margin).
-- An instrument with no position today keeps yesterday's per-unit figures (no price effect).
CREATE OR REPLACE VIEW v_account_change AS
WITH dates AS (
    SELECT DISTINCT as_of_date FROM account_margin
),
pairs AS (
    SELECT as_of_date, lag(as_of_date) OVER (ORDER BY as_of_date) AS prev_date FROM dates
    QUALIFY prev_date IS NOT NULL
),
unit_figures AS (
    SELECT
        as_of_date,
        instrument_id,
        any_value(mv_usd / net_qty) FILTER (WHERE net_qty <> 0) AS mv_per_unit,
        sum(net_im) FILTER (WHERE net_qty > 0) / sum(net_qty) FILTER (WHERE net_qty > 0) AS im_per_long_unit,
        sum(net_im) FILTER (WHERE net_qty < 0) / sum(-net_qty) FILTER (WHERE net_qty < 0) AS im_per_short_unit
    FROM position_margin
    GROUP BY as_of_date, instrument_id
),
prev_book_today AS (
    SELECT
        p.as_of_date,
        y.account_id,
        sum(CASE WHEN y.kind IN ('option', 'spot') THEN y.mv_usd ELSE 0 END) AS prev_position_value,
        sum(CASE WHEN y.kind IN ('option', 'spot') AND y.net_qty <> 0
                 THEN y.net_qty * coalesce(t.mv_per_unit, y.mv_usd / y.net_qty) ELSE 0 END) AS prev_position_value_today,
        sum(y.net_im) AS prev_net_im,
        sum(CASE WHEN y.net_qty > 0 THEN y.net_qty * coalesce(t.im_per_long_unit, y.net_im / y.net_qty)
                 WHEN y.net_qty < 0 THEN -y.net_qty * coalesce(t.im_per_short_unit, y.net_im / -y.net_qty)
                 ELSE 0 END) AS prev_net_im_today
    FROM pairs AS p
    JOIN position_margin AS y ON y.as_of_date = p.prev_date
    LEFT JOIN unit_figures AS t ON t.as_of_date = p.as_of_date AND t.instrument_id = y.instrument_id
    GROUP BY p.as_of_date, y.account_id
),
today AS (
    SELECT p.prev_date, a.*
    FROM pairs AS p JOIN account_margin AS a ON a.as_of_date = p.as_of_date
),
prev AS (
    SELECT p.as_of_date AS next_date, p.prev_date, a.*
    FROM pairs AS p JOIN account_margin AS a ON a.as_of_date = p.prev_date
),
joined AS (
    SELECT
        coalesce(t.as_of_date, y.next_date) AS as_of_date,
        coalesce(t.prev_date, y.prev_date) AS prev_date,
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
    FROM today AS t
    FULL OUTER JOIN prev AS y ON y.next_date = t.as_of_date AND y.account_id = t.account_id
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
LEFT JOIN prev_book_today AS b ON b.as_of_date = j.as_of_date AND b.account_id = j.account_id;
