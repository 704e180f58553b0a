-- grain: one row per margin group on the as_of_date ($1), '(none)' for accounts outside groups
SELECT margin_group, accounts, gross_im, sum_member_im, member_netting_benefit, group_im,
       aggregation_benefit, total_benefit, total_benefit_pct, group_status
FROM v_netting_benefit_by_group
WHERE as_of_date = $1
ORDER BY total_benefit DESC, margin_group;
