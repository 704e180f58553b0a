-- grain: one row per margin_mode on the as_of_date ($1): IM charged and what the other methods would charge
SELECT margin_mode, accounts, gross_im, net_im, portfolio_im, im, netting_benefit, netting_benefit_pct
FROM v_netting_benefit_by_mode
WHERE as_of_date = $1
ORDER BY im DESC, margin_mode;
