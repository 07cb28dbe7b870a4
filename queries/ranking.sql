/* ranking.sql: the top-n transfer neurons of one language and type, best first (method §4, Eq. 9).

   Run it as is:   tnstore sql STORE "$(cat queries/ranking.sql)" --format csv
   Change the `params` row to pick another language, type (1 = L2 -> shared space, 2 = shared space -> L2),
   top-n, distance or split. `tnstore detect` must have stored that set first; `tnstore neurons list STORE`
   shows what is stored. If sets with different --layers match, the set_id column tells them apart.
*/
WITH params AS (
    SELECT 'ja' AS lang, 1 AS type, 1000 AS top, 'cosine' AS dist, 'train' AS split
)
SELECT t.set_id, t.rank, t.layer, t.neuron, t.score
FROM transfer_neurons AS t, params AS p
WHERE t.lang = p.lang AND t.type = p.type AND t.top = p.top AND t.dist = p.dist AND t.split = p.split
ORDER BY t.set_id, t.rank
