/* lang_neurons.sql: language-specific neurons (method §6.1, App. H.3, Fig. 36-38): per language, threshold and
   layer, how many neurons have η² above the threshold against the label "this language vs the rest".

   Run it as is:   tnstore sql STORE "$(cat queries/lang_neurons.sql)" --max-rows 1000
   after `tnstore stats lang-neurons STORE`. Change the `params` row to pick the thresholds or another
   lang-neurons run (its --where and --split).
*/
WITH params AS (
    SELECT 'ablation IS NULL' AS where_sql, 'train' AS split, [0.1, 0.25, 0.5]::DOUBLE[] AS thresholds
),
thresholds AS (
    SELECT unnest(thresholds) AS threshold FROM params
)
SELECT l.lang, t.threshold, l.layer, count(*) FILTER (WHERE l.eta2 > t.threshold) AS n_neurons
FROM lang_neurons AS l, params AS p, thresholds AS t
WHERE l.where_sql = p.where_sql AND l.split = p.split
GROUP BY ALL
ORDER BY l.lang, t.threshold, l.layer
