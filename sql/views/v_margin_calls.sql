-- grain: one row per account × as_of_date whose own status or binding (group) status is not ok
-- Why: im_basis names the margin figure that sets im (SPEC §5.3), binding_level says whether
-- the account's own book or its margin group's book sets binding_status (SPEC §7), and
-- deficit / binding_deficit are the USD needed to bring equity back to initial margin.
CREATE OR REPLACE VIEW v_margin_calls AS
SELECT
    a.as_of_date,
    a.account_id,
    a.margin_group,
    a.margin_mode,
    a.status,
    a.binding_status,
    CASE WHEN g.margin_group IS NOT NULL THEN 'group' ELSE 'account' END AS binding_level,
    CASE a.margin_mode
        WHEN 'isolated' THEN 'gross_im'
        WHEN 'cross' THEN 'net_im'
        WHEN 'portfolio' THEN 'portfolio_im'
        ELSE CASE
            WHEN a.gross_im >= a.net_im AND a.gross_im >= a.portfolio_im THEN 'gross_im'
            WHEN a.net_im >= a.portfolio_im THEN 'net_im'
            ELSE 'portfolio_im'
        END || ' (mode unknown: max of the three)'
    END AS im_basis,
    a.im,
    a.mm,
    a.equity,
    a.excess,
    greatest(a.im - a.equity, 0) AS deficit,
    greatest(a.mm - a.equity, 0) AS shortfall_to_mm,
    g.group_im,
    g.group_equity,
    g.group_excess,
    g.status AS group_status,
    CASE WHEN g.margin_group IS NOT NULL THEN greatest(-g.group_excess, 0) ELSE greatest(a.im - a.equity, 0) END
        AS binding_deficit,
    CASE
        WHEN a.status = 'liquidation' AND a.equity <= 0 THEN 'equity <= 0'
        WHEN a.status = 'liquidation' THEN 'equity below maintenance margin (equity < mm)'
        WHEN a.status = 'margin_call' THEN 'equity below initial margin (mm <= equity < im)'
        WHEN a.status = 'deficit' THEN 'no positions and negative equity (debt exceeds assets)'
        ELSE 'own book ok'
    END
    || CASE
        WHEN g.margin_group IS NOT NULL AND g.status <> 'ok'
            THEN '; margin group ' || g.margin_group || ' is ' || g.status
                 || ' (group equity ' || round(g.group_equity, 2)::VARCHAR || ' vs group im '
                 || round(g.group_im, 2)::VARCHAR || ')'
        ELSE ''
    END AS why,
    a.complete
FROM account_margin AS a
LEFT JOIN group_margin AS g
    ON g.as_of_date = a.as_of_date AND g.margin_group = a.margin_group
WHERE a.status <> 'ok' OR a.binding_status <> 'ok';
