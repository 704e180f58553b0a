-- grain: one row per margin group on the as_of_date ($1) whose aggregation_benefit is negative (group_im > Σ member im):
-- the members' modes, their own im, and what the portfolio method (which margins the group, SPEC §7) charges each alone
SELECT g.margin_group, g.member_count, g.sum_member_im, g.group_im, g.aggregation_benefit,
       sum(a.portfolio_im) AS members_portfolio_im,
       string_agg(DISTINCT coalesce(a.margin_mode, 'unknown'), ', ' ORDER BY coalesce(a.margin_mode, 'unknown'))
           AS member_modes
FROM group_margin AS g
JOIN account_margin AS a ON a.as_of_date = g.as_of_date AND a.margin_group = g.margin_group
WHERE g.as_of_date = $1 AND g.aggregation_benefit < -0.005
GROUP BY ALL
ORDER BY g.aggregation_benefit, g.margin_group;
