#!/usr/bin/env bash
# Fetch the official BioASQ evaluator (github.com/BioASQ/Evaluation-Measures: BioASQEvaluation.jar and its lib/)
# into a folder OUTSIDE this repository, check it, and print the line that tests/test_official_evaluator.py reads:
#
#   scripts/fetch_bioasq_evaluator.sh ~/bioasq_evaluator
#   export BIOASQ_EVALUATION_JAR=~/bioasq_evaluator/BioASQEvaluation.jar
#
# The files come from a pinned commit of the official repository and are checked against their SHA-256 sums.
# Without network access, point BIOASQ_EVALUATION_REPO to a local clone (bare or not) of that repository.
# Running the jar needs Java (Debian: apt-get install default-jre-headless). Never commit the jar.
set -euo pipefail

COMMIT=8c8e689068a41c1370fec55260e5fbfe3a6a6016 # master, 2022-04-26 ("Update for BioASQ task Synergy")
DIST=flat/BioASQEvaluation/dist
FILES=(BioASQEvaluation.jar lib/SnowBallStemmer.jar lib/commons-cli-1.2.jar lib/gson-2.2.4.jar)
SUMS="40321d159d9770b42724967d9d401993d9c5bd052abf4d90da18e483472fa539  BioASQEvaluation.jar
2101c729c8b68efb4b241f86410cb18408311f2436d51f1c7796959be80d6aad  lib/SnowBallStemmer.jar
e7cd8951956d349b568b7ccfd4f5b2529a8c113e67c32b028f52ffda371259d9  lib/commons-cli-1.2.jar
08a99b852eafa908f76b1f4c8723c47c3399cbdc682ba9106a7556f1c06bf167  lib/gson-2.2.4.jar"

fail() {
  echo "fetch_bioasq_evaluator.sh: error: $*" >&2
  exit 1
}

[[ $# -eq 1 && $1 != -* ]] || fail "usage: $0 DEST_DIR (a folder outside this repository, created if missing)"
dest=$(realpath -m -- "$1")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
case "$dest/" in
  "$repo_root"/*) fail "$dest is inside this repository ($repo_root): the jar must never be committed; choose a folder outside it" ;;
esac
mkdir -p "$dest/lib"

source=${BIOASQ_EVALUATION_REPO:-}
for f in "${FILES[@]}"; do
  if [[ -n $source ]]; then
    [[ -d $source ]] || fail "BIOASQ_EVALUATION_REPO=$source is not a folder (give a local clone of BioASQ/Evaluation-Measures)"
    git -C "$source" cat-file -e "$COMMIT^{commit}" 2>/dev/null ||
      fail "BIOASQ_EVALUATION_REPO=$source does not have commit $COMMIT; update the clone (git fetch)"
    git -C "$source" show "$COMMIT:$DIST/$f" >"$dest/$f"
  else
    url=https://raw.githubusercontent.com/BioASQ/Evaluation-Measures/$COMMIT/$DIST/$f
    curl -fsSL --retry 3 -o "$dest/$f" "$url" ||
      fail "could not download $url; without network access set BIOASQ_EVALUATION_REPO to a local clone"
  fi
done
(cd "$dest" && sha256sum --quiet -c - <<<"$SUMS") ||
  fail "the files in $dest do not match the SHA-256 sums of commit $COMMIT"

if command -v java >/dev/null; then
  java -cp "$dest/BioASQEvaluation.jar:$dest/lib/*" evaluation.EvaluatorTask1b 2>&1 | grep -q "Usage: -phaseX" ||
    fail "java could not run $dest/BioASQEvaluation.jar"
else
  echo "note: java is not on PATH; install a JRE (Debian: apt-get install default-jre-headless) to run the jar" >&2
fi
echo "BIOASQ_EVALUATION_JAR=$dest/BioASQEvaluation.jar"
