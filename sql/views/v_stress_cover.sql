-- grain: one row per stress × as_of_date (SPEC §11): the Cover 1 / Cover 2 table
-- Why: cover1_usd is the largest shortfall (stressed losses a counterparty's own collateral does
-- not cover) and cover2_usd the sum of the two largest, the CCP "Cover 2" standard for a default
-- fund; cover1_counterparty / cover2_counterparty name who makes them ('account ACC0004',
-- 'group GRP00'; ties by type then id), with the LEI of an account where known. ladder_move is
-- set for the rungs of the liquidation ladder (a uniform move of every underlying, §11), whose
-- breaches are counted here but not listed in stress_results; null for the named stresses.
CREATE OR REPLACE VIEW v_stress_cover AS
SELECT
    s.as_of_date,
    s.stress_id,
    s.ladder_move,
    s.counterparties_below_mm,
    s.counterparties_in_shortfall,
    s.total_shortfall_usd,
    s.cover1_usd,
    s.cover1_book_type || ' ' || s.cover1_book_id AS cover1_counterparty,
    a1.lei AS cover1_lei,
    s.cover2_usd,
    s.cover2_usd - s.cover1_usd AS second_shortfall_usd,
    s.cover2_book_type || ' ' || s.cover2_book_id AS cover2_counterparty,
    a2.lei AS cover2_lei,
    CASE WHEN s.total_shortfall_usd > 0 THEN s.cover2_usd / s.total_shortfall_usd END AS cover2_share_of_total,
    s.run_id
FROM stress_summary AS s
LEFT JOIN account_margin AS a1
    ON s.cover1_book_type = 'account' AND a1.as_of_date = s.as_of_date AND a1.account_id = s.cover1_book_id
LEFT JOIN account_margin AS a2
    ON s.cover2_book_type = 'account' AND a2.as_of_date = s.as_of_date AND a2.account_id = s.cover2_book_id;
