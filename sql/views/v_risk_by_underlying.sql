-- grain: one row per as_of_date × underlying: the accounts' risk summed (SPEC §4, §5.2)
-- delta_usd, vega_usd (per vol point), theta_usd (per day) are signed client exposures;
-- scan_risk, calendar_charge, short_option_min, inter_credit, risk are Σ of the accounts' figures.
-- worst_scenario is the scenario with the largest loss of all accounts' books together
-- (Σ of scenario_losses, weighted by cover; lowest id on ties; null when no scenario loses);
-- worst_scenario_position is its 1-based place in scenario_id order. The id is known when some
-- account's own worst scenario is at that place (the warehouse stores losses by position only).
CREATE OR REPLACE VIEW v_risk_by_underlying AS
WITH totals AS (
    SELECT
        as_of_date,
        underlying,
        count(*) FILTER (WHERE net_delta_units <> 0 OR scan_risk > 0) AS accounts,
        sum(net_delta_units) AS net_delta_units,
        sum(delta_usd) AS delta_usd,
        sum(gamma_units) AS gamma_units,
        sum(vega_usd) AS vega_usd,
        sum(theta_usd) AS theta_usd,
        sum(scan_risk) AS scan_risk,
        sum(calendar_charge) AS calendar_charge,
        sum(short_option_min) AS short_option_min,
        sum(inter_credit) AS inter_credit,
        sum(risk) AS risk,
        max(scan_risk) AS largest_account_scan_risk
    FROM underlying_risk
    GROUP BY as_of_date, underlying
),
losses AS (
    SELECT as_of_date, underlying, position, sum(loss) AS loss
    FROM (
        SELECT
            as_of_date,
            underlying,
            unnest(scenario_losses) AS loss,
            generate_subscripts(scenario_losses, 1) AS position
        FROM underlying_risk
    )
    GROUP BY as_of_date, underlying, position
),
worst AS (
    SELECT as_of_date, underlying, position, loss
    FROM losses
    QUALIFY row_number() OVER (PARTITION BY as_of_date, underlying ORDER BY loss DESC, position) = 1
),
scenario_ids AS (
    SELECT
        as_of_date,
        list_position(scenario_losses, list_max(scenario_losses)) AS position,
        min(worst_scenario) AS scenario_id
    FROM underlying_risk
    WHERE worst_scenario IS NOT NULL
    GROUP BY ALL
)
SELECT
    t.*,
    CASE WHEN w.loss > 0 THEN i.scenario_id END AS worst_scenario,
    CASE WHEN w.loss > 0 THEN w.position END AS worst_scenario_position,
    greatest(coalesce(w.loss, 0), 0) AS worst_scenario_loss
FROM totals AS t
LEFT JOIN worst AS w ON w.as_of_date = t.as_of_date AND w.underlying = t.underlying
LEFT JOIN scenario_ids AS i ON i.as_of_date = w.as_of_date AND i.position = w.position;
