-- grain: one row per underlying on the as_of_date ($1): exposures, scan risk, worst scenario, netting benefit
SELECT r.underlying, r.accounts, r.net_delta_units, r.delta_usd, r.vega_usd, r.theta_usd, r.scan_risk,
       r.calendar_charge, r.short_option_min, r.inter_credit, r.risk, r.worst_scenario, r.worst_scenario_loss,
       n.gross_im, n.net_im, n.rule_netting_benefit, n.portfolio_benefit
FROM v_risk_by_underlying AS r
LEFT JOIN v_netting_benefit_by_underlying AS n USING (as_of_date, underlying)
WHERE r.as_of_date = $1
ORDER BY r.risk DESC, r.underlying;
