-- grain: one row per as_of_date × margin_mode ('unknown' for accounts missing from accounts)
-- netting_benefit = Σ (gross_im − im) (SPEC §5.3); rule_netting_benefit = Σ (gross_im − net_im),
-- the part that per-instrument netting alone gives; USD.
CREATE OR REPLACE VIEW v_netting_benefit_by_mode AS
SELECT
    as_of_date,
    coalesce(margin_mode, 'unknown') AS margin_mode,
    count(*) AS accounts,
    sum(gross_im) AS gross_im,
    sum(net_im) AS net_im,
    sum(portfolio_im) AS portfolio_im,
    sum(im) AS im,
    sum(netting_benefit) AS netting_benefit,
    sum(gross_im - net_im) AS rule_netting_benefit,
    sum(netting_benefit) / nullif(sum(gross_im), 0) AS netting_benefit_pct
FROM account_margin
GROUP BY as_of_date, coalesce(margin_mode, 'unknown');
