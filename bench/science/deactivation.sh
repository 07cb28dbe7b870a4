#!/usr/bin/env bash
# Science check of issue 12 (method §5, Fig. 5/18/30/31, App. I) on gemma-3-270m with the Tatoeba test splits.
# Usage: bench/science/deactivation.sh STORE [LIMIT]   (from the repo root; the tnstore of .venv)
set -euo pipefail
S=${1:?store path}; N=${2:-300}
T=${TATOEBA:-../shared/data/tatoeba}
TN=".venv/bin/tnstore"
M=gemma-3-270m
for L in ja it; do
  $TN capture --model $M --corpus $T/en-$L.parallel.train.jsonl --limit $N --store $S --quiet
  $TN capture --model $M --corpus $T/en-$L.parallel.test.jsonl --split test --limit $N --store $S --quiet
  $TN capture --model $M --corpus $T/en-$L.nonparallel.jsonl --split test --kind nonparallel --limit $N --store $S --quiet
  $TN detect $S --type 1 --lang $L --top 1000
  $TN detect $S --type 2 --lang $L --top 1000
  $TN neurons random $S --like type=1,lang=$L,top=1000 --match-layers --name rand1_$L
  $TN neurons random $S --like type=2,lang=$L,top=1000 --match-layers --name rand2_$L
done
T1() { echo "type1_$1_train_cosine_layers0-11_top1000"; }
T2() { echo "type2_$1_train_cosine_layers11-18_top1000"; }
for L in ja it; do
  $TN replay $S --split test --langs $L --sets $(T1 $L),rand1_$L,$(T2 $L),rand2_$L --quiet
  $TN replay $S --split test --langs $L --kind nonparallel --sets $(T1 $L),rand1_$L --quiet
done
for L in ja it; do
  $TN latent similarity $S --split test --lang $L --conditions none,$(T1 $L),rand1_$L
  $TN latent knn $S --split test --lang $L --conditions none,$(T1 $L),rand1_$L
  $TN latent centroids $S --split test --where "kind = 'parallel' AND source LIKE 'en-$L.%'" --conditions none,$(T2 $L),rand2_$L
done
$TN replay cross-lingual $S --type 1 --langs ja,it --split test --quiet
$TN replay cross-lingual $S --type 2 --langs ja,it --split test --quiet
