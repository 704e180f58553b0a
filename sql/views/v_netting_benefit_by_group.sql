-- grain: one row per as_of_date × margin_group; accounts outside any group form one row, margin_group = '(none)'
-- member_netting_benefit = Σ members' (gross_im − im) (SPEC §5.3); aggregation_benefit =
-- sum_member_im − group_im (SPEC §7); total_benefit = Σ members' gross_im − the figure that
-- is charged (group_im for a group, Σ im outside groups). USD.
CREATE OR REPLACE VIEW v_netting_benefit_by_group AS
WITH members AS (
    SELECT
        as_of_date,
        margin_group,
        count(*) AS accounts,
        sum(gross_im) AS gross_im,
        sum(im) AS sum_member_im,
        sum(netting_benefit) AS member_netting_benefit
    FROM account_margin
    GROUP BY as_of_date, margin_group
)
SELECT
    m.as_of_date,
    coalesce(m.margin_group, '(none)') AS margin_group,
    m.accounts,
    m.gross_im,
    m.sum_member_im,
    m.member_netting_benefit,
    g.group_im,
    coalesce(g.aggregation_benefit, 0) AS aggregation_benefit,
    m.gross_im - coalesce(g.group_im, m.sum_member_im) AS total_benefit,
    (m.gross_im - coalesce(g.group_im, m.sum_member_im)) / nullif(m.gross_im, 0) AS total_benefit_pct,
    g.status AS group_status
FROM members AS m
LEFT JOIN group_margin AS g
    ON g.as_of_date = m.as_of_date AND g.margin_group = m.margin_group;
