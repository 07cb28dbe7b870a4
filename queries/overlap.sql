/* overlap.sql: how much two languages' top-n transfer-neuron sets share, per layer and overall (method §6.1,
   Tab. 2 and Fig. 8): n_a, n_b, the shared neurons and the Jaccard index |A ∩ B| / |A ∪ B|.

   Run it as is:   tnstore sql STORE "$(cat queries/overlap.sql)"
   The row with layer NULL is the whole set. Change the `params` row to pick the two languages, the type,
   top-n, distance or split; both sets must have been stored by `tnstore detect` (same settings, both languages).
*/
WITH params AS (
    SELECT 'ja' AS lang_a, 'ko' AS lang_b, 1 AS type, 1000 AS top, 'cosine' AS dist, 'train' AS split
),
chosen AS (
    SELECT t.layer, t.neuron, t.lang = p.lang_a AS in_a, t.lang = p.lang_b AS in_b
    FROM transfer_neurons AS t, params AS p
    WHERE t.lang IN (p.lang_a, p.lang_b)
      AND t.type = p.type AND t.top = p.top AND t.dist = p.dist AND t.split = p.split
),
neurons AS (
    SELECT layer, neuron, bool_or(in_a) AS in_a, bool_or(in_b) AS in_b FROM chosen GROUP BY layer, neuron
)
SELECT layer,
       count(*) FILTER (WHERE in_a) AS n_a,
       count(*) FILTER (WHERE in_b) AS n_b,
       count(*) FILTER (WHERE in_a AND in_b) AS n_shared,
       round(count(*) FILTER (WHERE in_a AND in_b) / count(*), 4) AS jaccard
FROM neurons
GROUP BY ROLLUP (layer)
ORDER BY layer NULLS LAST
