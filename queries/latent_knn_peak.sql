/* latent_knn_peak.sql: where en and each L2 are most aligned (method §3.4, App. E; Fig. 4, 18, 19): the hidden
   index with the highest mutual k-NN score per language, k and selection, next to the first and last layers.

   Run it as is:   tnstore sql STORE "$(cat queries/latent_knn_peak.sql)"
   `tnstore latent knn STORE` must have stored the scores first. Change the `params` row to pick the split; one
   row per (selection, language, k). hidden_index 0 = embeddings, l = output of layer l. The paper expects the
   peak mid-stack, above both ends.
*/
WITH params AS (
    SELECT 'train' AS split
),
scores AS (
    SELECT s.* FROM latent_knn AS s, params AS p WHERE s.split = p.split
)
SELECT where_sql, lang, k, n_pairs,
       arg_max(hidden_index, score) AS peak_index,
       max(score) AS peak_score,
       arg_min(score, hidden_index) AS first_score,
       arg_max(score, hidden_index) AS last_score
FROM scores
GROUP BY where_sql, lang, k, n_pairs
ORDER BY where_sql, lang, k
