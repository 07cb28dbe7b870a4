/* distribution.sql: how a top-n transfer-neuron set spreads over its candidate layers (method §6.1, Fig. 6).

   Run it as is:   tnstore sql STORE "$(cat queries/distribution.sql)"
   One row per candidate layer (layers holding none of the set show 0): the count and the share of the set.
   Change the `params` row to pick the language, type, top-n, distance or split.
*/
WITH params AS (
    SELECT 'ja' AS lang, 1 AS type, 1000 AS top, 'cosine' AS dist, 'train' AS split
),
tn AS (
    SELECT t.set_id, t.layer_start, t.layer_end, t.layer, t.neuron
    FROM transfer_neurons AS t, params AS p
    WHERE t.lang = p.lang AND t.type = p.type AND t.top = p.top AND t.dist = p.dist AND t.split = p.split
),
candidate_layers AS (
    SELECT DISTINCT set_id, unnest(range(layer_start, layer_end)) AS layer FROM tn
)
SELECT c.set_id, c.layer, count(tn.neuron) AS n,
       round(100.0 * count(tn.neuron) / sum(count(tn.neuron)) OVER (PARTITION BY c.set_id), 2) AS pct
FROM candidate_layers AS c LEFT JOIN tn USING (set_id, layer)
GROUP BY c.set_id, c.layer
ORDER BY c.set_id, c.layer
