-- grain: one row per as_of_date × underlying, over every account whatever its mode
-- What each method would charge the whole book in this underlying: gross_im (nothing netted),
-- net_im (netted per instrument, SPEC §5.1) and portfolio_risk = Σ R_u (SPEC §5.2);
-- rule_netting_benefit = gross_im − net_im, portfolio_benefit = net_im − portfolio_risk. USD.
CREATE OR REPLACE VIEW v_netting_benefit_by_underlying AS
WITH rule AS (
    SELECT as_of_date, underlying, sum(gross_im) AS gross_im, sum(net_im) AS net_im
    FROM position_margin
    GROUP BY as_of_date, underlying
),
scenario AS (
    SELECT as_of_date, underlying, sum(risk) AS portfolio_risk, sum(inter_credit) AS inter_credit
    FROM underlying_risk
    GROUP BY as_of_date, underlying
)
SELECT
    coalesce(r.as_of_date, s.as_of_date) AS as_of_date,
    coalesce(r.underlying, s.underlying) AS underlying,
    coalesce(r.gross_im, 0) AS gross_im,
    coalesce(r.net_im, 0) AS net_im,
    coalesce(s.portfolio_risk, 0) AS portfolio_risk,
    coalesce(s.inter_credit, 0) AS inter_credit,
    coalesce(r.gross_im, 0) - coalesce(r.net_im, 0) AS rule_netting_benefit,
    coalesce(r.net_im, 0) - coalesce(s.portfolio_risk, 0) AS portfolio_benefit,
    coalesce(r.gross_im, 0) - coalesce(s.portfolio_risk, 0) AS total_benefit
FROM rule AS r
FULL OUTER JOIN scenario AS s
    ON s.as_of_date = r.as_of_date AND s.underlying = r.underlying;
