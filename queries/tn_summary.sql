/* tn_summary.sql: the paper's summary of transfer neurons against a label (method §6.1; Tab. 1, 4-6 language,
   Tab. 10-12 family, Tab. 13-20 significance), one row per transfer-neuron set, from tn_corr_ratio:
     eta2_top10 / _top100 / _top1000   mean η² of the set's ranks 1-10 / 1-100 / 1-1000
     sig                share of the set's neurons with one-way ANOVA p < 0.05
     sig_eta2_gt_0_1    share with p < 0.05 and η² > 0.1 ("some correlation")
     sig_eta2_gt_0_25   share with p < 0.05 and η² > 0.25 ("moderate")
     mwu_sig            share with Mann-Whitney U p < 0.05 (binary labels only)

   Run it as is:   tnstore sql STORE "$(cat queries/tn_summary.sql)"
   after `tnstore stats corr-ratio STORE`. Change the `params` row to pick another corr-ratio run: its label
   (language, family or sql), label_spec (the --family or --label-sql text; NULL for language), --where text
   and --split.
*/
WITH params AS (
    SELECT 'language' AS label, NULL::VARCHAR AS label_spec, 'ablation IS NULL' AS where_sql, 'train' AS split
)
SELECT c.positive, c.lang, c.type, c.set_id,
       count(*) AS n_tn,
       avg(c.eta2) FILTER (WHERE c.rank <= 10) AS eta2_top10,
       avg(c.eta2) FILTER (WHERE c.rank <= 100) AS eta2_top100,
       avg(c.eta2) FILTER (WHERE c.rank <= 1000) AS eta2_top1000,
       avg(CASE WHEN c.anova_p < 0.05 THEN 1.0 ELSE 0.0 END) AS sig,
       avg(CASE WHEN c.anova_p < 0.05 AND c.eta2 > 0.1 THEN 1.0 ELSE 0.0 END) AS sig_eta2_gt_0_1,
       avg(CASE WHEN c.anova_p < 0.05 AND c.eta2 > 0.25 THEN 1.0 ELSE 0.0 END) AS sig_eta2_gt_0_25,
       avg(CASE WHEN c.mwu_p < 0.05 THEN 1.0 WHEN c.mwu_p IS NOT NULL THEN 0.0 END) AS mwu_sig
FROM tn_corr_ratio AS c, params AS p
WHERE c.set_id IS NOT NULL
  AND c.label = p.label
  AND c.label_spec IS NOT DISTINCT FROM p.label_spec
  AND c.where_sql = p.where_sql
  AND c.split = p.split
GROUP BY ALL
ORDER BY c.type, c.lang, c.set_id
