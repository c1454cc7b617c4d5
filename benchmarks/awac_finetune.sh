#!/usr/bin/env bash
# AWAC vs SAC fine-tuning from a weak BC actor (10 demos per task) on one task, as measured in
# docs/algorithms.md ("AWAC on every task"). Usage: bash benchmarks/awac_finetune.sh lift
# (runs under $RUNS, default runs/awac-finetune; then python benchmarks/plot_awac_finetune.py).
set -euo pipefail
T=$1
R=${RUNS:-runs/awac-finetune}/$T
mkdir -p $R
C=configs/train_awac.yaml
common="env.tasks=[$T] trainer.num_threads=1 awac.eval_episodes_per_task=50"
start=$(date +%s)
uv run teamvla train --config $C $common awac.grip_head=bernoulli awac.weighting=uniform awac.train_critic=false awac.online_env_steps=0 awac.offline_steps=2000 --out $R/bc-bern --no-progress > $R/bc-bern.log 2>&1
uv run teamvla train --config $C $common awac.grip_head=gaussian awac.weighting=uniform awac.train_critic=false awac.online_env_steps=0 awac.offline_steps=2000 --out $R/bc-gauss --no-progress > $R/bc-gauss.log 2>&1
echo "bc done $(( $(date +%s) - start )) s"
s=$(date +%s)
uv run teamvla train --config $C $common awac.grip_head=bernoulli awac.init_from=$R/bc-bern awac.offline_steps=2000 awac.online_env_steps=20000 awac.lambda=0.05 --out $R/awac-bern --no-progress > $R/awac-bern.log 2>&1
echo "awac done $(( $(date +%s) - s )) s"
s=$(date +%s)
uv run teamvla train --config configs/train_sac.yaml env.tasks=[$T] trainer.num_threads=1 sac.init_from=$R/bc-gauss sac.warmup_steps=0 sac.env_steps=20000 sac.eval_episodes_per_task=50 --out $R/sac-gauss --no-progress > $R/sac-gauss.log 2>&1
echo "sac done $(( $(date +%s) - s )) s"
