-- grain: one row per position (account × instrument) with a non-zero worst-scenario loss, per as_of_date.
-- Which positions drive scan risk: worst_scenario_loss (USD, + = loss in its underlying's worst scenario,
-- − = a hedge) is the position's share of its account × underlying scan_risk (SPEC §5.2), so
--   share_of_account_scan_risk = worst_scenario_loss / Σ_u scan_risk of the account (shares sum to 1);
--   share_of_group_scan_risk   = worst_scenario_loss / Σ of the members' own scan risk (null outside a group;
--                                the group's pooled book is margined apart: `margin explain --group G` shows
--                                each position's share of it);
--   share_of_book_scan_risk    = worst_scenario_loss / Σ scan_risk of every account on the date.
-- rank_in_account / rank_in_group / rank_in_book: 1 = the largest loss contribution.
CREATE OR REPLACE VIEW v_position_contribution AS
WITH contributions AS (
    SELECT
        p.as_of_date,
        p.account_id,
        a.margin_group,
        a.margin_mode,
        p.instrument_id,
        p.underlying,
        p.kind,
        p.net_qty,
        p.worst_scenario_loss,
        u.worst_scenario,
        u.scan_risk AS underlying_scan_risk
    FROM position_margin AS p
    JOIN account_margin AS a ON a.as_of_date = p.as_of_date AND a.account_id = p.account_id
    JOIN underlying_risk AS u
        ON u.as_of_date = p.as_of_date AND u.account_id = p.account_id AND u.underlying = p.underlying
    WHERE p.worst_scenario_loss IS NOT NULL AND p.worst_scenario_loss <> 0
)
SELECT
    *,
    worst_scenario_loss / nullif(sum(worst_scenario_loss) OVER (PARTITION BY as_of_date, account_id), 0)
        AS share_of_account_scan_risk,
    CASE WHEN margin_group IS NOT NULL THEN
        worst_scenario_loss / nullif(sum(worst_scenario_loss) OVER (PARTITION BY as_of_date, margin_group), 0)
    END AS share_of_group_scan_risk,
    worst_scenario_loss / nullif(sum(worst_scenario_loss) OVER (PARTITION BY as_of_date), 0)
        AS share_of_book_scan_risk,
    row_number() OVER (PARTITION BY as_of_date, account_id ORDER BY worst_scenario_loss DESC, instrument_id)
        AS rank_in_account,
    CASE WHEN margin_group IS NOT NULL THEN
        row_number() OVER (PARTITION BY as_of_date, margin_group
                           ORDER BY worst_scenario_loss DESC, account_id, instrument_id)
    END AS rank_in_group,
    row_number() OVER (PARTITION BY as_of_date ORDER BY worst_scenario_loss DESC, account_id, instrument_id)
        AS rank_in_book
FROM contributions;
