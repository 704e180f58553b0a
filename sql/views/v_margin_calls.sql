-- grain: one row per account × as_of_date whose binding_status is not ok (SPEC §7: a group member's
-- binding_status is its group's status, an account outside groups its own status)
-- Why: `why` starts with the reason for binding_status (the group's book for a member, else the
-- account's own book) and adds the own book's state for a group member. im_basis names the margin
-- figure that sets im (SPEC §5.3); binding_level says whose book sets binding_status.
-- USD amounts: shortfall_to_im_usd = max(0, −excess) = max(0, im − equity) of the account's own book
-- (deficit is the same figure under its earlier name; neither is the status 'deficit');
-- shortfall_to_mm = max(mm − equity, 0); binding_deficit = what the binding book needs to restore
-- initial margin: max(0, −group_excess) for a group member, else shortfall_to_im_usd.
CREATE OR REPLACE VIEW v_margin_calls AS
WITH calls AS (
    SELECT
        a.*,
        g.margin_group IS NOT NULL AS in_group,
        g.group_im,
        g.group_equity,
        g.group_excess,
        g.status AS group_status,
        CASE
            WHEN a.status = 'liquidation' AND a.equity <= 0 THEN 'equity <= 0'
            WHEN a.status = 'liquidation' THEN 'equity below maintenance margin (equity < mm)'
            WHEN a.status = 'margin_call' THEN 'equity below initial margin (mm <= equity < im)'
            WHEN a.status = 'deficit' THEN 'no positions and negative equity (debt exceeds assets)'
            ELSE 'ok'
        END AS own_reason,
        CASE
            WHEN g.status = 'liquidation' AND g.group_equity <= 0 THEN 'group equity <= 0'
            WHEN g.status = 'liquidation' THEN 'group equity below group maintenance margin'
            WHEN g.status = 'margin_call' THEN 'group equity below group initial margin'
            WHEN g.status = 'deficit' THEN 'group without positions and with negative equity'
            ELSE 'ok'
        END AS group_reason
    FROM account_margin AS a
    LEFT JOIN group_margin AS g
        ON g.as_of_date = a.as_of_date AND g.margin_group = a.margin_group
    WHERE a.binding_status <> 'ok'
)
SELECT
    as_of_date,
    account_id,
    margin_group,
    margin_mode,
    status,
    binding_status,
    CASE WHEN in_group THEN 'group' ELSE 'account' END AS binding_level,
    CASE margin_mode
        WHEN 'isolated' THEN 'gross_im'
        WHEN 'cross' THEN 'net_im'
        WHEN 'portfolio' THEN 'portfolio_im'
        ELSE CASE
            WHEN gross_im >= net_im AND gross_im >= portfolio_im THEN 'gross_im'
            WHEN net_im >= portfolio_im THEN 'net_im'
            ELSE 'portfolio_im'
        END || ' (mode unknown: max of the three)'
    END AS im_basis,
    im,
    mm,
    equity,
    excess,
    greatest(-excess, 0) AS shortfall_to_im_usd,
    greatest(im - equity, 0) AS deficit,
    greatest(mm - equity, 0) AS shortfall_to_mm,
    group_im,
    group_equity,
    group_excess,
    group_status,
    CASE WHEN in_group THEN greatest(-group_excess, 0) ELSE greatest(-excess, 0) END AS binding_deficit,
    CASE
        WHEN in_group THEN
            'margin group ' || margin_group || ' is ' || group_status || ': ' || group_reason
            || ' (group equity ' || round(group_equity, 2)::VARCHAR || ' vs group im '
            || round(group_im, 2)::VARCHAR || '); own book: ' || own_reason
        ELSE own_reason
    END AS why,
    complete
FROM calls;
