#!/usr/bin/env bash
# Draws the benchmark's plots (SVG, gnuplot) from the data scripts/bench.sh wrote into DIR (default
# docs/bench): batch-size.svg from batch-size.dat (CURVE) and rtt.svg from rtt.dat (RTT_MS), each
# titled with the line "# title: ..." of its data (what was measured, when, at which commit).
# Installs gnuplot-nox with apt-get when gnuplot is missing.
#   bash scripts/plot-bench.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-docs/bench}
if ! command -v gnuplot >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
title_of() { sed -n 's/^# title: //p' "$1" | head -1; }
style='set terminal svg size 760,440 font "sans,12" background "white"
set termoption noenhanced
set grid
set style line 1 lw 2 pt 7 ps 0.8 lc rgb "#7b3294"
set style line 2 lw 2 pt 5 ps 0.8 lc rgb "#008837"
set style line 3 lw 2 pt 9 ps 0.8 lc rgb "#2c7bb6"
set format y "%.0s%c"'
if [ -f "$DIR/batch-size.dat" ]; then
  gnuplot <<GP
$style
set output "$DIR/batch-size.svg"
set title "$(title_of "$DIR/batch-size.dat")"
set xlabel "records per batch (batch_size), log scale"
set ylabel "records/s"
set logscale x
set xrange [80:2500]
set xtics (100, 250, 500, 1000, 2000)
set yrange [0:*]
set key bottom right
plot "$DIR/batch-size.dat" using 1:3 with linespoints ls 1 title "redis-cli --pipe of the same EVALSHA batches (the server's limit)", \
     "" using 1:2 with linespoints ls 2 title "destination-redis write"
GP
  echo "plot: $DIR/batch-size.svg"
fi
if [ -f "$DIR/rtt.dat" ]; then
  gnuplot <<GP
$style
set output "$DIR/rtt.svg"
set title "$(title_of "$DIR/rtt.dat")"
set xlabel "round-trip time, ms (a delay line on loopback; measured with PINGs)"
set ylabel "records/s, log scale"
set logscale y
set yrange [100:1000000]
set xrange [-0.05:*]
set key center right
plot "$DIR/rtt.dat" using 2:4 with linespoints ls 1 title "redis-cli --pipe of the same EVALSHA batches", \
     "" using 2:3 with linespoints ls 2 title "destination-redis write", \
     "" using 2:5 with linespoints ls 3 title "the Java connector's pattern (4 round trips per record)"
GP
  echo "plot: $DIR/rtt.svg"
fi
