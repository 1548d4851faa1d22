#!/usr/bin/env bash
# The GPU checks behind BENCHMARKS.md's GPU section, sized for one short loan of a GPU machine:
#
#   OUT=<dir> bash scripts/bench_gpu_session.sh [part ...]  # parts: tests run bench ratios variants compile ar10k fulltest tf32nll pinning
#
# Each part has its own time limit and adds its results to $OUT/results.json (and the ends of its logs to
# $OUT/logs.txt) as soon as it ends, so a part that runs out of time loses only itself. Data are synthetic
# CIFAR-format batches and the Inception network has random weights: timings are real, quality is not.
# On a machine without hydra-core, omegaconf or torch-fidelity, put their wheels in .whl/ first
# (../shared/gpu/README.md says how). TRAINER=cpu PY=.venv/bin/python runs the same commands on a CPU (to check the script).
set -u
OUT=${OUT:-outputs/gpu_session}
TRAINER=${TRAINER:-gpu}
PY=${PY:-python3}
RUN_STEPS=${RUN_STEPS:-200} RUN_SAMPLES=${RUN_SAMPLES:-2000}  # the "run" part's training steps, eval samples
WORK=${WORK:-/tmp/genbench_gpu_session}
off=(performance.tf32=false performance.channels_last=false performance.fused_optimizer=false)  # float32 throughout
# The issue's baseline (18.9 steps/s): cuDNN's convolutions in TF32, as torch's default, NCHW, foreach Adam
# (tf32=true also runs matmuls in TF32, which the issue measured as no gain for this U-Net)
baseline=(performance.tf32=true performance.channels_last=false performance.fused_optimizer=false)
profiled=(--families diffusion --train-only --steps 50 --profile-steps 5)  # diffusion, kernel profile
mkdir -p "$OUT" "$WORK/results"
if [ -d .whl ] && ! $PY -c 'import hydra, torch_fidelity' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

collect() {  # every part's JSON into one file, and the last lines of every log into another
  $PY - "$WORK" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
results = {p.stem: json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))}
(out / "results.json").write_text(json.dumps(results, indent=2))
logs = [f"==== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
        for p in sorted(work.glob("*.log"))]
(out / "logs.txt").write_text("\n".join(logs) + "\n")
EOF
}

part() {  # part NAME SECONDS COMMAND...: run it under a time limit, log it, say how it ended
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  echo "part $name: exit $? after $((SECONDS - start)) s (limit $limit s)" | tee -a "$WORK/parts.log"
  collect
}

bench() {  # bench LABEL SECONDS ARGS...: scripts/bench_gpu.py, its rows saved as results/LABEL.json
  local label=$1 limit=$2; shift 2
  part "bench_$label" "$limit" $PY scripts/bench_gpu.py --out "$WORK/$label" "$@"
  [ -f "$WORK/$label/bench_gpu.json" ] && cp "$WORK/$label/bench_gpu.json" "$WORK/results/bench_$label.json"
  collect
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import torch, pytorch_lightning as pl
print('torch', torch.__version__, '| lightning', pl.__version__, '| host threads', torch.get_num_threads())"
} > "$WORK/machine.log" 2>&1
collect

for name in ${*:-tests run bench variants}; do
  case $name in
    tests)  # the GPU-only tests (they skip without CUDA or GENBENCH_TEST_GPU=1) and the device logic's CPU
            # tests; the whole log comes back, each failure's reason in it (logs.txt keeps the last lines only)
      part tests 300 env GENBENCH_TEST_GPU=1 $PY -m pytest -q -p no:cacheprovider -rf --tb=short \
        tests/test_eval_device.py tests/test_performance.py
      # the limit's SIGTERM inside a training run becomes Lightning's exception: a failed test, not a bug
      grep -q "Received SIGTERM" "$WORK/tests.log" && echo "part tests: cut inside a test by its limit" \
        | tee -a "$WORK/parts.log"
      cp "$WORK/tests.log" "$OUT/tests.log"
      collect ;;
    run)  # a real run with trainer=gpu, then eval.py on its checkpoint: what do their records say?
      data=$WORK/data
      $PY -c "import sys; from pathlib import Path; sys.path.insert(0, 'scripts'); import bench_gpu
bench_gpu.write_cifar(Path('$data'), 1000, 500)
bench_gpu.save_random_weights(Path('$data/inception.pt'))"
      common=(experiment=gan_cifar10 "trainer=$TRAINER" "dataset.root=$data" dataset.num_workers=2 logger=none
              eval.num_samples=$RUN_SAMPLES eval.num_real=$RUN_SAMPLES "eval.inception_weights=$data/inception.pt"
              eval.feature_net=false eval.speed_repeats=2)
      part run_train 75 $PY train.py "${common[@]}" trainer.max_steps=$RUN_STEPS "hydra.run.dir=$WORK/run"
      part run_eval 60 $PY eval.py "${common[@]}" "ckpt_path=$WORK/run/checkpoints/last.ckpt" \
        "hydra.run.dir=$WORK/eval"
      for kind in run eval; do
        [ -f "$WORK/$kind/metrics.json" ] && cp "$WORK/$kind/metrics.json" "$WORK/results/${kind}_metrics.json"
      done
      collect ;;
    bench)  # every family at its CIFAR-10 config; the autoregressive evaluation on 1,000 samples (see ar10k);
            # the evaluation times sampling once (the config's calls: ar10k, fulltest)
      bench families 330 --families vae,gan,flow,ebm,diffusion,flow_matching,autoregressive --steps 50 \
        --sample-repeats 2 --eval-samples-for autoregressive=1000 --no-speed-of-config ;;
    ratios)  # genbench against the hand loop, training only (1.05x is the target): rounds of 75 batches,
             # every other one with the hand loop first. The GAN first, in 8 rounds: at 2 its rounds differed
             # by 10% (H100: 1.01x and 1.12x), more than the margin; its 85 batches take about 2 s a window.
             # Then 2 rounds each, autoregressive last, so a cut loses only it
      bench ratios_gan 100 --families gan --train-only --steps 75 --rounds 8
      bench ratios 260 --families vae,flow,ebm,diffusion,flow_matching,autoregressive --train-only \
        --steps 75 --rounds 2 ;;
    variants)  # the diffusion config's training under each speed switch, with a kernel profile
      bench diffusion_plain_fp32 45 "${profiled[@]}" --label fp32 "${off[@]}"
      bench diffusion_default 45 "${profiled[@]}" --label default
      bench diffusion_default_nchw 45 "${profiled[@]}" --label default-nchw performance.channels_last=false
      bench diffusion_bf16 45 "${profiled[@]}" --label bf16 trainer.precision=bf16-mixed
      bench diffusion_plain_bf16 45 "${profiled[@]}" --label bf16-switches-off trainer.precision=bf16-mixed "${off[@]}"
      bench diffusion_cudnn_benchmark 45 "${profiled[@]}" --label default+cudnn-benchmark +trainer.benchmark=true ;;
    compile)  # the 2x candidate, bf16 with CUDA graphs (the default's eager kernels take 29.9 ms a step on
              # the H100: 33 steps/s with every launch hidden, 2.1x that baseline's 15.66 through genbench),
              # against the issue's baseline in the same call; minutes of compilation. (default-nchw, in
              # variants: CUDA's GroupNorm runs NCHW only, so the U-Net converts around its 46 GroupNorms;
              # the profile counts the copies)
      bench diffusion_baseline 45 "${profiled[@]}" --label baseline "${baseline[@]}"
      graphs=(trainer.precision=bf16-mixed performance.compile=true performance.compile_mode=reduce-overhead)
      bench diffusion_bf16_graphs 240 --families diffusion --train-only --steps 50 --warmup 20 \
        --label bf16-reduce-overhead "${graphs[@]}"
      # the same with pinned batches (off by default): on the H200 (2026-11-27) genbench ran 37.06 steps/s
      # pinned and 46.99 pageable, its hand loop 50.34 and 46.30
      bench diffusion_bf16_graphs_pinned 240 --families diffusion --train-only --steps 50 --warmup 20 \
        --label bf16-reduce-overhead-pinned "${graphs[@]}" performance.pin_memory=true ;;
    ar10k)  # the autoregressive evaluation at the full 10,000 samples, timing sampling as its config does
      bench autoregressive_10k 360 --families autoregressive --steps 20 --eval-samples 10000 ;;
    fulltest)  # the two costly evaluations as configured (eval/many_network_calls: the likelihood of 1,024
               # test images) with a 10,000-image test split (the other parts: 64 test images)
      full=(--steps 20 --test-images 10000)
      bench diffusion_full_test 200 --families diffusion "${full[@]}"
      bench flow_matching_full_test 200 --families flow_matching "${full[@]}" ;;
    tf32nll)  # how far TF32 moves a flow's exact likelihood (the evaluation runs in the run's TF32 setting)
      part tf32nll 120 $PY scripts/bench_tf32_likelihood.py --out "$WORK/tf32nll"
      [ -f "$WORK/tf32nll/bench_tf32_likelihood.json" ] && cp "$WORK/tf32nll/bench_tf32_likelihood.json" \
        "$WORK/results/tf32nll.json"
      collect ;;
    pinning)  # what genbench adds to a step with pinned batches: on the H200 (2026-11-27) the VAE took 11.1 ms
              # a step against its hand loop's 5.9 (1.89x; 1.17x on the H100 with pageable batches), and diffusion
              # with bf16 and CUDA graphs 27.0 ms pinned against 21.3 pageable, one round each. The VAE's ratio
              # both ways in 4 rounds, with the CUDA runtime's calls of 20 hand-loop steps; then a cProfile of
              # its genbench step both ways, and a run without it whose 20 batches' CUDA runtime calls set
              # beside the hand loop's say where genbench waits (a cudaHostAlloc or a synchronize in every
              # step?); their whole logs in $OUT
      for pin in true false; do
        bench "pinning_vae_$pin" 90 --families vae --train-only --steps 75 --rounds 4 --profile-steps 20 \
          --label "pin_memory=$pin" "performance.pin_memory=$pin"
      done
      gpu_flag=(); [ "$TRAINER" = gpu ] && gpu_flag=(--gpu)
      for pin in true false; do
        part "host_step_vae_pin_$pin" 60 $PY scripts/bench_host_step.py --family vae "${gpu_flag[@]}" --batch 128 \
          --steps 300 --top 60 --runtime-batches 20 "performance.pin_memory=$pin"
        cp "$WORK/host_step_vae_pin_$pin.log" "$OUT/"
      done
      collect ;;
    *) echo "unknown part $name (tests run bench ratios variants compile ar10k fulltest tf32nll pinning)"; exit 2 ;;
  esac
done
cat "$WORK/parts.log"
$PY - "$OUT/results.json" <<'EOF'
import json, sys
sys.path.insert(0, "scripts")
from bench_gpu import markdown
rows = [row for name, rows in json.load(open(sys.argv[1])).items() if name.startswith("bench_") for row in rows]
print(markdown(rows))
EOF
