/* latent_similarity_gap.sql: how much more similar parallel en-L2 pairs are than non-parallel ones, per layer
   (method §3.5, App. C.1; Fig. 10, 11): gap = mean cos(parallel) - mean cos(non-parallel), for hidden states and
   for MLP activations α, with the layer where the gap is widest marked.

   Run it as is:   tnstore sql STORE "$(cat queries/latent_similarity_gap.sql)" --max-rows 1000
   `tnstore latent similarity STORE` must have stored the similarities first. Change the `params` row to pick
   the language, array_name ('hidden' or 'mlp_act') and split. The paper expects the widest gap mid-stack.
*/
WITH params AS (
    SELECT 'ja' AS lang, 'hidden' AS array_name, 'train' AS split
),
gaps AS (
    SELECT s.where_sql, s.lang, s.array_name, s.hidden_index,
           max(s.mean_cos) FILTER (WHERE s.kind = 'parallel') AS parallel_cos,
           max(s.mean_cos) FILTER (WHERE s.kind = 'nonparallel') AS nonparallel_cos
    FROM latent_pair_similarity AS s, params AS p
    WHERE s.lang = p.lang AND s.array_name = p.array_name AND s.split = p.split
    GROUP BY ALL
)
SELECT where_sql, lang, array_name, hidden_index, parallel_cos, nonparallel_cos,
       parallel_cos - nonparallel_cos AS gap,
       (parallel_cos - nonparallel_cos) = max(parallel_cos - nonparallel_cos) OVER (PARTITION BY where_sql)
           AS widest
FROM gaps
ORDER BY where_sql, hidden_index
