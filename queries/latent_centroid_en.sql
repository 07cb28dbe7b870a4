/* latent_centroid_en.sql: how close each language's centroid is to the English one, layer by layer (method §3.3;
   Fig. 14, 15): cos(C_en, C_L) per hidden index, with the layer where each language comes closest.

   Run it as is:   tnstore sql STORE "$(cat queries/latent_centroid_en.sql)" --max-rows 1000
   `tnstore latent centroids STORE` must have stored the matrix first. Change the `params` row to compare with
   another reference language or split. The paper expects the languages to converge mid-stack (cosine highest)
   and separate again in the last layers, ja/ko staying further from en than nl/it.
*/
WITH params AS (
    SELECT 'en' AS reference, 'train' AS split
),
pairs AS (
    SELECT c.where_sql, c.lang_b AS lang, c.hidden_index, c.cosine
    FROM latent_centroid_cos AS c, params AS p
    WHERE c.lang_a = p.reference AND c.lang_b <> p.reference AND c.split = p.split
)
SELECT where_sql, lang, hidden_index, cosine,
       cosine = max(cosine) OVER (PARTITION BY where_sql, lang) AS closest
FROM pairs
ORDER BY where_sql, lang, hidden_index
