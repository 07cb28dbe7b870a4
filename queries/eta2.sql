/* eta2.sql: correlation ratio η² and one-way ANOVA of every neuron against a categorical label (method §6.1),
   from the per-group statistics in group_stats alone, without touching the activations.

   Run it as is:   tnstore sql STORE "$(cat queries/eta2.sql)" --out eta2.parquet
   once `tnstore stats groups STORE` (or corr-ratio, lang-neurons) has stored per-language statistics.
   Change the `params` row to pick stored statistics (their grouping expression and where_sql, see
   `SELECT DISTINCT array_name, grouping, where_sql, split, group_value, n FROM group_stats`), and `label_map` to define
   labels: which label group each group value falls in, per label_id (a group value left out of a label is left
   out of its statistic). The example is Japanese vs the rest; for the family label map en, nl, it to one group
   and ja, ko to the other.

   Output per (label_id, layer, neuron): n sentences, k label groups, ss_between, ss_within,
   eta2 = ss_between / (ss_between + ss_within) (NULL for a neuron constant over the sentences),
   anova_f = (ss_between / (k - 1)) / (ss_within / (n - k)), df_between = k - 1, df_within = n - k.
   The ANOVA p-value is the upper tail of F(df_between, df_within) at anova_f; DuckDB has no F distribution,
   so tnstore computes it with scipy.stats.f.sf(anova_f, df_between, df_within).

   group_stats keeps shifted sums per group: sum = Σ(x - shift), sumsq = Σ(x - shift)², so a group's mean is
   shift + sum/n and its centred sum of squares sumsq - sum²/n, small and exact. Every other sum below adds
   non-negative terms around a mean, so nothing cancels.
*/
WITH params AS (
    SELECT 'lang' AS grouping, 'ablation IS NULL' AS where_sql, 'train' AS split
),
stats AS (
    SELECT s.*
    FROM group_stats AS s, params AS p
    WHERE s.array_name = 'mlp_act' AND s.grouping = p.grouping AND s.where_sql = p.where_sql AND s.split = p.split
      AND s.n > 0
),
label_map AS (
    SELECT DISTINCT 'ja' AS label_id, group_value,
           CASE WHEN group_value = 'ja' THEN 'ja' ELSE 'rest' END AS label_group
    FROM stats
),
grp AS (
    SELECT m.label_id, m.label_group, s.layer, s.neuron, s.n,
           s.shift + s.sum / s.n AS mean,
           greatest(s.sumsq - s.sum * s.sum / s.n, 0.0::DOUBLE) AS m2
    FROM stats AS s
    JOIN label_map AS m ON m.group_value = s.group_value
),
lab_mean AS (
    SELECT label_id, label_group, layer, neuron, sum(n)::BIGINT AS n, sum(n * mean) / sum(n) AS mean
    FROM grp
    GROUP BY ALL
),
lab AS (
    -- a label group's within sum of squares: its groups' own, plus their spread around the label group's mean
    SELECT l.label_id, l.label_group, l.layer, l.neuron, l.n, l.mean,
           sum(g.m2 + g.n * (g.mean - l.mean) ^ 2) AS ss_within
    FROM lab_mean AS l
    JOIN grp AS g USING (label_id, label_group, layer, neuron)
    GROUP BY ALL
),
overall AS (
    SELECT label_id, layer, neuron, count(*) AS k, sum(n)::BIGINT AS n, sum(n * mean) / sum(n) AS mean,
           sum(ss_within) AS ss_within
    FROM lab
    GROUP BY ALL
),
anova AS (
    SELECT o.label_id, o.layer, o.neuron, o.n, o.k,
           sum(l.n * (l.mean - o.mean) ^ 2) AS ss_between, o.ss_within
    FROM overall AS o
    JOIN lab AS l USING (label_id, layer, neuron)
    GROUP BY o.label_id, o.layer, o.neuron, o.n, o.k, o.ss_within
)
SELECT label_id, layer, neuron, n, k, ss_between, ss_within,
       ss_between / nullif(ss_between + ss_within, 0) AS eta2,
       CASE WHEN ss_between + ss_within = 0 OR k < 2 OR n <= k THEN NULL
            WHEN ss_within = 0 THEN 'inf'::DOUBLE
            ELSE (ss_between / (k - 1)) / (ss_within / (n - k)) END AS anova_f,
       k - 1 AS df_between,
       n - k AS df_within
FROM anova
ORDER BY label_id, layer, neuron
