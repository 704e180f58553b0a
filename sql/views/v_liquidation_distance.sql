-- grain: one row per counterparty × as_of_date (days whose stress table has ladder rungs, SPEC §11)
-- Why: move_down / move_up are the smallest uniform price moves of every underlying (ladder rungs,
-- e.g. -0.15 = -15 %) at which the counterparty's stressed equity falls below its maintenance
-- margin; 0 when it is already below mm, null when no rung of that side breaches. distance is the
-- nearer of the two (absolute), so "within 10 % of liquidation" is `distance <= 0.10`.
-- A counterparty is a margin group (book_type 'group', its group book and pooled collateral) or an
-- account outside any group (book_type 'account'); im, equity and status are that book's.
CREATE OR REPLACE VIEW v_liquidation_distance AS
SELECT
    l.as_of_date,
    l.book_type,
    l.book_id,
    l.move_down,
    l.move_up,
    least(abs(l.move_down), abs(l.move_up)) AS distance,
    CASE
        WHEN l.move_down IS NULL AND l.move_up IS NULL THEN NULL
        WHEN l.move_down = 0 OR l.move_up = 0 THEN 'already below mm'
        WHEN l.move_up IS NULL OR abs(l.move_down) <= abs(l.move_up) THEN 'down'
        ELSE 'up'
    END AS nearer_side,
    CASE WHEN l.book_type = 'group' THEN g.member_count ELSE 1 END AS accounts,
    a.margin_mode,
    a.lei,
    coalesce(a.im, g.group_im) AS im,
    coalesce(a.equity, g.group_equity) AS equity,
    coalesce(a.excess, g.group_excess) AS excess,
    coalesce(a.status, g.status) AS status
FROM liquidation_distance AS l
LEFT JOIN account_margin AS a
    ON l.book_type = 'account' AND a.as_of_date = l.as_of_date AND a.account_id = l.book_id
LEFT JOIN group_margin AS g
    ON l.book_type = 'group' AND g.as_of_date = l.as_of_date AND g.margin_group = l.book_id;
