/* jaccard.sql: overlap of transfer-neuron sets between every pair of languages (method §6.1; Tab. 2, 7-9
   overall, Fig. 8, 34, 35 per layer): Jaccard = |A ∩ B| / |A ∪ B| of the top-n neurons of two languages' sets.

   Run it as is:   tnstore sql STORE "$(cat queries/jaccard.sql)" --max-rows 1000
   Change the `params` row to pick the type and top-n. Sets are compared only with sets of the same split,
   distance and candidate layers; if a language has several such sets holding the top n, the one with the
   smallest `top` (then set_id) is used. One row per pair overall (layer NULL), and per layer where either set
   has neurons. (overlap.sql does the same for one chosen pair.)
*/
WITH params AS (
    SELECT 1 AS type, 1000 AS top
),
sets AS (
    SELECT s.*
    FROM (SELECT DISTINCT set_id, lang, type, split, dist, layer_start, layer_end, top FROM transfer_neurons) AS s,
         params AS p
    WHERE s.type = p.type AND s.top >= p.top
    QUALIFY row_number() OVER (PARTITION BY s.lang, s.type, s.split, s.dist, s.layer_start, s.layer_end
                               ORDER BY s.top, s.set_id) = 1
),
members AS (
    SELECT t.set_id, t.layer, t.neuron
    FROM transfer_neurons AS t, params AS p
    WHERE t.rank <= p.top AND t.set_id IN (SELECT set_id FROM sets)
),
pairs AS (
    SELECT a.type, a.split, a.dist, a.lang AS lang_a, b.lang AS lang_b, a.set_id AS set_a, b.set_id AS set_b
    FROM sets AS a
    JOIN sets AS b ON a.split = b.split AND a.dist = b.dist AND a.layer_start = b.layer_start
                  AND a.layer_end = b.layer_end AND a.lang < b.lang
),
cells AS (
    -- every neuron of a pair's two sets, with which of them hold it
    SELECT p.*, m.layer, m.neuron, bool_or(m.set_id = p.set_a) AS in_a, bool_or(m.set_id = p.set_b) AS in_b
    FROM pairs AS p
    JOIN members AS m ON m.set_id IN (p.set_a, p.set_b)
    GROUP BY ALL
),
counts AS (
    SELECT type, split, dist, lang_a, lang_b, set_a, set_b, layer,
           count(*) FILTER (WHERE in_a) AS n_a,
           count(*) FILTER (WHERE in_b) AS n_b,
           count(*) FILTER (WHERE in_a AND in_b) AS n_intersection
    FROM cells
    GROUP BY GROUPING SETS ((type, split, dist, lang_a, lang_b, set_a, set_b),
                            (type, split, dist, lang_a, lang_b, set_a, set_b, layer))
)
SELECT c.type, p.top, c.split, c.dist, c.lang_a, c.lang_b, c.set_a, c.set_b, c.layer, c.n_a, c.n_b,
       c.n_intersection, c.n_intersection / (c.n_a + c.n_b - c.n_intersection) AS jaccard
FROM counts AS c, params AS p
ORDER BY c.type, c.split, c.dist, c.lang_a, c.lang_b, c.layer NULLS FIRST
