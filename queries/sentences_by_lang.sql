/* sentences_by_lang.sql: what a store holds, per language, split and kind.

   tnstore sql STORE "$(cat queries/sentences_by_lang.sql)"
   n_pairs counts sentences that have a partner in another language (same pair_id, same split).
*/
SELECT s.lang, s.split, s.kind,
       count(*) AS sentences,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM sentences AS o
           WHERE o.pair_id = s.pair_id AND o.split = s.split AND o.lang <> s.lang)) AS n_pairs,
       round(avg(s.n_tokens), 1) AS mean_tokens,
       max(s.n_tokens) AS max_tokens
FROM sentences AS s
GROUP BY ALL
ORDER BY s.split, s.kind, s.lang
