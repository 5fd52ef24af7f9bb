# pipe-train end-to-end cases under mpirun: exit status and exact output.
#   pipe_cli_test(NAME RANKS STATUS "text" ... -- pipe-train args ...)
set(PIPE_EXPECT ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh)
set(PIPE_TEST_DATA ${CMAKE_CURRENT_SOURCE_DIR}/data)

# pipe_expect_test(NAME STATUS "text" ... -- COMMAND ...): COMMAND must exit
# with STATUS and print each text exactly once (tests/expect.sh).
function(pipe_expect_test name status)
  list(FIND ARGN "--" split)
  list(SUBLIST ARGN 0 ${split} texts)
  math(EXPR first "${split} + 1")
  list(SUBLIST ARGN ${first} -1 command)
  add_test(NAME ${name} COMMAND ${PIPE_EXPECT} ${status} ${texts} -- ${command})
  # CPU cases even on a GPU machine (pipe-train defaults to cuda where it sees a GPU).
  set_tests_properties(${name} PROPERTIES TIMEOUT 120 PROCESSORS 2 ENVIRONMENT "CUDA_VISIBLE_DEVICES=")
  # Cases that expect a refusal (non-zero status): `ctest -L refusal` runs them alone.
  if(NOT status EQUAL 0)
    set_tests_properties(${name} PROPERTIES LABELS refusal)
  endif()
endfunction()

# pipe-train under mpirun with RANKS ranks.
function(pipe_cli_test name ranks status)
  list(FIND ARGN "--" split)
  list(SUBLIST ARGN 0 ${split} texts)
  math(EXPR first "${split} + 1")
  list(SUBLIST ARGN ${first} -1 args)
  pipe_expect_test(cli.${name} ${status} ${texts} -- ${PIPE_MPIRUN} -np ${ranks} $<TARGET_FILE:pipe-train> ${args})
endfunction()

pipe_cli_test(help 1 0 "usage: mpirun -np N pipe-train" "Parallelism (world size = product of the axes):"
  "(gradient accumulation; 1 to 1,000,000)" "validation pass (1 to 1,000,000)" "optimizer steps to run (1 or more)" -- --help)
# The dry run's JSON lines (keys sorted): exact for chosen ranks. gpt-tiny by
# parameters on 2 stages is Embedding + 2 blocks | 2 blocks + norm + head +
# loss, the split DeepSpeed makes (FACTS.md); each rank allocates exactly its
# own layers' parameters (437,504 and 429,568 floats). --device cpu: the same
# lines on a machine with GPUs.
pipe_cli_test(dry_run_pipe2_data2 4 0
  "dry run: model gpt-tiny (8 layers, 834,304 parameters) on pipe=2 x data=2, 4 ranks; partition parameters: [0,3,8]"
  [[{"comm":"mpi","coord":{"data":0,"pipe":0},"data":0,"data_parallel_group":[0,1],"device":"cpu","layer_range":[0,3],"layers":[{"index":0,"type":"Embedding"},{"index":1,"type":"TransformerBlock"},{"index":2,"type":"TransformerBlock"}],"model":0,"model_group":[0],"next":2,"parameter_bytes":1750016,"pipe_group":[0,2],"prev":-1,"rank":0,"stage":0,"tie_groups":[{"key":"embedding","layers":[0,6],"ranks":[0,2],"stages":[0,1]}]}]]
  [[{"comm":"mpi","coord":{"data":1,"pipe":1},"data":1,"data_parallel_group":[2,3],"device":"cpu","layer_range":[3,8],"layers":[{"index":3,"type":"TransformerBlock"},{"index":4,"type":"TransformerBlock"},{"index":5,"type":"LayerNorm"},{"index":6,"type":"LMHead"},{"index":7,"type":"SoftmaxCrossEntropy"}],"model":0,"model_group":[3],"next":-1,"parameter_bytes":1718272,"pipe_group":[1,3],"prev":1,"rank":3,"stage":1,"tie_groups":[{"key":"embedding","layers":[0,6],"ranks":[1,3],"stages":[0,1]}]}]]
  -- --model gpt-tiny --stages 2 --data-parallel 2 --device cpu --dry-run)
pipe_cli_test(dry_run_default_data_parallel 4 0 "on pipe=4 x data=1, 4 ranks; partition parameters: [0,2,3,4,8]"
  [["layer_range":[3,4],"layers":[{"index":3,"type":"TransformerBlock"}],"model":0,"model_group":[2],"next":3,"parameter_bytes":793088,"pipe_group":[0,1,2,3],"prev":1,"rank":2,"stage":2,"tie_groups":[]}]]
  -- --stages 4 --dry-run)
# Virtual stages: each rank lists its chunks (zb-v's V: stage 0 holds the first and the last chunk).
pipe_cli_test(dry_run_zb_v_chunks 2 0 [=[{"chunks":[{"chunk":0,"layer_range":[0,2]},{"chunk":3,"layer_range":[6,8]}],]=]
  [=[{"chunks":[{"chunk":1,"layer_range":[2,4]},{"chunk":2,"layer_range":[4,6]}],]=]
  "partition uniform into 2 chunks per stage (v-shape): [0,2,4,6,8]"
  -- --stages 2 --schedule zb-v --partition-method uniform --dry-run)
pipe_cli_test(dry_run_type_regex 4 0 "partition type:block: [0,2,3,4,8]" -- --stages 4 --partition-method type:block --dry-run)
pipe_cli_test(dry_run_custom_topology 8 0 "on data=2 x pipe=4, 8 ranks"
  [[{"comm":"mpi","coord":{"data":1,"pipe":1},"data":1,"data_parallel_group":[1,5],"device":"cpu","layer_range":[2,3],"layers":[{"index":2,"type":"TransformerBlock"}],"model":0,"model_group":[5],"next":6,"parameter_bytes":793088,"pipe_group":[4,5,6,7],"prev":4,"rank":5,"stage":1,"tie_groups":[]}]]
  -- --topology data=2,pipe=4 --device cpu --dry-run)
pipe_cli_test(dry_run_model_axis 8 0
  [[{"comm":"mpi","coord":{"data":1,"model":0,"pipe":1},"data":1,"data_parallel_group":[4,6],"device":"cpu","layer_range":[3,8],]]
  [["model":0,"model_group":[6,7],"next":-1,"parameter_bytes":1718272,"pipe_group":[2,6],"prev":2,"rank":6,"stage":1,"tie_groups":[{"key":"embedding","layers":[0,6],"ranks":[2,6],"stages":[0,1]}]}]]
  -- --topology pipe=2,data=2,model=2 --device cpu --dry-run)
pipe_cli_test(unknown_partition_method 2 1 "pipe-train: error: unknown partition method 'balanced'"
  -- --stages 2 --partition-method balanced --dry-run)
pipe_cli_test(too_few_matching_layers 4 1 "pipe-train: error: type:Embedding matches 1 layer"
  -- --stages 4 --partition-method type:Embedding --dry-run)
pipe_cli_test(describe_gpt2 1 0 "model gpt2-124m: input int32[1024], 16 layers, 124,439,808 parameters"
  -- --model gpt2-124m --describe)

pipe_cli_test(world_size_mismatch 6 1
  "pipe-train: error: world size 6 does not match the topology pipe=4 x data=2, which needs 8 ranks"
  -- --stages 4 --data-parallel 2 --dry-run)
pipe_cli_test(world_not_multiple_of_stages 3 1
  "pipe-train: error: world size 3 is not a multiple of --stages 2; run with a multiple of 2 ranks or give --data-parallel"
  -- --stages 2 --dry-run)
pipe_cli_test(conflicting_flags 2 1
  "pipe-train: error: --topology cannot be combined with --stages or --data-parallel (the topology names every axis)"
  -- --topology pipe=2 --stages 2 --dry-run)
pipe_cli_test(unknown_flag 2 1 "pipe-train: error: unrecognised option '--stagse' (see --help)" -- --stagse 2)
pipe_cli_test(bad_stage_count 2 1 "pipe-train: error: --stages must be at least 1, not 0" -- --stages 0)
pipe_cli_test(broken_shape_chain 2 1
  "pipe-train: error: ${PIPE_TEST_DATA}/broken_chain.toml:16: layer 2 (Linear) expects input float32[*, 64] but layer 1 (ReLU) outputs float32[32]"
  -- --model ${PIPE_TEST_DATA}/broken_chain.toml --dry-run)
pipe_cli_test(unknown_model 2 1
  "pipe-train: error: model 'gpt-huge' is neither a file nor a shipped model (shipped: gpt-small, gpt-tiny, gpt2-124m, gpt2-tiny, llama-3.2-1b, llama-tiny, mlp)"
  -- --model gpt-huge --dry-run)

# Plugins through the command line and the environment.
pipe_cli_test(user_plugin_from_dir 2 0 "model scaled-mlp: input float32[16], 4 layers, 708 parameters"
  -- --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/scale --model ${PIPE_TEST_DATA}/scaled_mlp.toml --describe)
pipe_expect_test(cli.user_plugin_from_env 0 "from ${PIPE_TEST_PLUGIN_DIR}/scale/scale.so" "Scale(init=1.0)" --
  env PIPE_PLUGIN_PATH=${PIPE_TEST_PLUGIN_DIR}/scale ${PIPE_MPIRUN} -np 2 $<TARGET_FILE:pipe-train> --list-layers)
pipe_cli_test(user_type_without_its_plugin 2 1
  "pipe-train: error: ${PIPE_TEST_DATA}/scaled_mlp.toml:12: layer 1: unknown layer type 'Scale'"
  -- --model ${PIPE_TEST_DATA}/scaled_mlp.toml --dry-run)
pipe_cli_test(duplicate_plugin_type 2 1
  "pipe-train: error: layer type 'Linear' is registered twice: by ${PROJECT_BINARY_DIR}/${PIPE_PLUGIN_INSTALL_DIR}/pipe_core.so and by ${PIPE_TEST_PLUGIN_DIR}/duplicate_linear/duplicate_linear.so"
  -- --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/duplicate_linear --dry-run)
pipe_cli_test(plugin_abi_mismatch 2 1 "was built for plugin ABI 999 but this libpipe has plugin ABI"
  -- --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/bad_abi --dry-run)
pipe_cli_test(missing_plugin_dir 2 1 "pipe-train: error: plugin directory '/no/such/plugins' does not exist"
  -- --plugin-dir /no/such/plugins --dry-run)

# pipe-plan: no MPI, no allocation.
function(pipe_plan_test name status)
  list(FIND ARGN "--" split)
  list(SUBLIST ARGN 0 ${split} texts)
  math(EXPR first "${split} + 1")
  list(SUBLIST ARGN ${first} -1 args)
  pipe_expect_test(plan.${name} ${status} ${texts} -- $<TARGET_FILE:pipe-plan> ${args})
endfunction()

# Memory per rank (pipe/memory_model.hpp): 1F1B holds 2 micro-batches on stage 0 of 2; zb-v's activations are
# pipe-sim's (sim.model_peak_bytes_zb_v) for the same V-shaped cut. On the CPU (the default --device) the libraries'
# own 10 MiB count; on a GPU they do not.
pipe_plan_test(memory_table 0 "memory per rank (MB), 1f1b, 8 micro-batches of 16, adamw, fp32:"
  "0              1.8         0.0         1.8         3.5           39.4         2        9.5       1.1      10.5        67.4"
  -- --model gpt-tiny --stages 2)
pipe_plan_test(memory_table_cuda 0
  "0              1.8         0.0         1.8         3.5           39.4         2        9.5       1.1       0.0        56.9"
  -- --model gpt-tiny --stages 2 --device cuda)
pipe_plan_test(bad_device 1 "pipe-plan: error: --device 'tpu': expected cpu or cuda" -- --model gpt-tiny --device tpu)
pipe_plan_test(memory_json_zb_v 0 [=["activations":46227584.0,]=] [=["activations":39387136.0,]=] [=["schedule":"zb-v"]=]
  -- --model gpt-tiny --stages 2 --schedule zb-v --json)
# llama-3.2-1b (plugins/llama) on 8 stages: the split by parameters (the tied 128,256 x 2048 table on the first
# and last stage) and the memory per rank; by type:LlamaBlock, two blocks per stage. Its 2048 tokens run flash
# attention on the CPU (the default --device) and on a GPU: each block keeps 32 heads x 2048 rows of output and
# log-sum-exp (17 MB per sample), not 32 x 2048^2 probabilities (537 MB), in act.bytes/smp and the memory.
pipe_plan_test(llama_3_2_1b_8_stages 0
  "0      0-0          262,668,288         12,582,912            8,192    262,668,288  Embedding"
  "7      18-19        262,668,288  3,229,243,932,672    1,067,450,368    262,668,288  LMHead, SoftmaxCrossEntropy"
  "memory per rank (MB), 1f1b, 8 micro-batches of 16, adamw, fp32:"
  "0           1050.7         0.0      1050.7      2101.3          269.5         8        0.1     537.1       0.0      5009.4"
  -- --model llama-3.2-1b --stages 8 --device cuda)
pipe_plan_test(llama_3_2_1b_by_block 0
  "3      7-8          121,643,008  1,703,621,427,200      705,200,128              2  LlamaBlock x2"
  "7      15-19        384,313,344  4,932,898,914,304    1,789,435,904              2  LlamaBlock x2, RMSNorm, LMHead, SoftmaxCrossEntropy"
  -- --model llama-3.2-1b --stages 8 --partition-method type:LlamaBlock)
pipe_plan_test(memory_bad_optimizer 1 "pipe-plan: error: --optimizer 'lion': expected adamw or sgd"
  -- --model gpt-tiny --stages 2 --optimizer lion)
# --memory-limit (pipe/memory_partition.hpp): at 64 samples per micro-batch 1F1B's first stage of the balanced cut
# [0,3,8] needs about 207 MiB (2 micro-batches held); under 205 MiB the cut moves to [0,2,8] (200 MiB), which fits.
pipe_plan_test(memory_limit_moves_the_cut 0 [=["parts":[0,2,8]]=] [=["memory_limit":214958080.0]=]
  -- --model gpt-tiny --stages 2 --micro-batch-size 64 --memory-limit 205MiB --json)
pipe_plan_test(memory_limit_kept_cut 0 "0      0-2" "the cut above is the most balanced one that fits (the method's own)"
  -- --model gpt-tiny --stages 2 --micro-batch-size 64 --memory-limit 1GiB)
pipe_plan_test(memory_limit_unmet 1 "pipe-plan: error: --memory-limit 1.00 MiB: no cut of gpt-tiny into 2 stages fits (1f1b, 8 micro-batches of 16); the smallest peak any cut reaches is 64.7 MiB; would lower it: --activation-checkpoint-interval 1 (44.1 MiB), --micro-batch-size 8 (41.0 MiB), --zero 1 (62.3 MiB), more stages"
  -- --model gpt-tiny --stages 2 --data-parallel 2 --memory-limit 1MiB)
# --zero 1 over 2 replicas: AdamW's 8 bytes per parameter become 4, as many as the parameters' own.
pipe_plan_test(memory_limit_zero_shards 0 [=["optimizer":1750016.0,"parameters":1750016.0,]=] [=["zero":1}]=]
  -- --model gpt-tiny --stages 2 --data-parallel 2 --zero 1 --json)
# The planner (pipe-plan --auto): a given rate (--gflops) makes the search deterministic. 4 ranks, 64 samples per
# step: every plan considered fits without a limit, 91 of them under 30 MiB (10 MiB of each peak is the CPU libraries'), none
# under 2 MiB.
pipe_plan_test(auto_json 0 [=["considered":186,"fitting":186,]=] [=["flops_per_s":50000000000.0,]=]
  [=["command":"mpirun -np 4 pipe-train --model gpt-tiny --stages 1 --data-parallel 4 --schedule 1f1b ]=]
  -- --auto --model gpt-tiny --world-size 4 --global-batch 64 --gflops 50 --json --top 1)
pipe_plan_test(auto_memory_limit 0 "186 plans considered, 91 fit, in "
  "pipe-plan --auto: gpt-tiny on 4 ranks, global batch 64, memory limit 30.0 MiB per rank"
  -- --auto --model gpt-tiny --world-size 4 --global-batch 64 --gflops 50 --memory-limit 30MiB)
pipe_plan_test(auto_nothing_fits 1 "pipe-plan: error: --auto: none of the 186 plans for gpt-tiny on 4 ranks fits --memory-limit 2.00 MiB per rank"
  "the smallest predicted peak is 15.2 MiB (more ranks, a smaller global batch or bf16 off would lower it)"
  -- --auto --model gpt-tiny --world-size 4 --global-batch 64 --gflops 50 --memory-limit 2MiB)
pipe_plan_test(auto_needs_a_batch 1 "pipe-plan: error: --auto needs --global-batch G (samples per optimizer step)"
  -- --auto --model gpt-tiny --world-size 4)
# With virtual stages a stage's chunks are not one range of layers: the method's chunk cut is checked, not moved.
pipe_plan_test(memory_limit_interleaved 1 "pipe-plan: error: --memory-limit 1.00 MiB: the parameters cut of gpt-tiny into 2 x 2 chunks (zb-v, 8 micro-batches of 16) puts 71.8 MiB on stage 0: with virtual stages the cut is checked, not moved (--schedule 1f1b moves it and reaches 64.7 MiB); would lower it: --activation-checkpoint-interval 1 (46.7 MiB), --micro-batch-size 8 (44.2 MiB), more stages"
  -- --model gpt-tiny --stages 2 --schedule zb-v --memory-limit 1MiB)
pipe_plan_test(memory_limit_interleaved_fits 0 "memory limit 1.00 GiB per rank: the method's cut into 2 x 2 chunks fits every rank (with virtual stages it is checked, not moved)"
  -- --model gpt-tiny --stages 2 --schedule interleaved-1f1b --micro-batches 8 --memory-limit 1GiB)
pipe_plan_test(gpt_tiny_json 0 [=["params":834304,"parts":[0,3,8],"stage_details":]=]
  [=["stage_weights":[437504.0,429568.0],"stages":2,"world_size":4}]=] [=["bottleneck":437504.0,"bottleneck_stage":0,]=]
  -- --model gpt-tiny --stages 2 --data-parallel 2 --json)
pipe_plan_test(gpt_tiny_table 0 "model gpt-tiny: 8 layers, 834,304 parameters; 2 stages x 1 data-parallel = 2 ranks"
  "Embedding, TransformerBlock x2" "TransformerBlock x2, LayerNorm, LMHead, SoftmaxCrossEntropy"
  "bottleneck: stage 0, weight 437,504; imbalance 0.9% (bottleneck / mean - 1)" -- --model gpt-tiny --stages 2)
# DeepSpeed's uniform split of the same model: embedding + 3 blocks | 1 block + norm + head.
pipe_plan_test(gpt_tiny_uniform 0 [=["parts":[0,4,8]]=] -- --model gpt-tiny --stages 2 --partition-method uniform --json)
pipe_plan_test(gpt2_weighted_types 0 [=["parts":[0,1,5,9,16]]=] [=["stage_weights":[2.0,4.0,4.0,4.0]]=]
  -- --model gpt2-124m --stages 4 --partition-method type:embed:2|block:1 --json)
pipe_plan_test(weights_json 0 [=["method":"balanced","parts":[0,3,5],"stage_weights":[8.0,6.0],"stages":2}]=]
  [[{"bottleneck":8.0,"bottleneck_stage":0,]] -- --weights 3,1,4,1,5 --stages 2 --json)
pipe_plan_test(weights_table 0 "bottleneck: stage 0, weight 8; imbalance 14.3% (bottleneck / mean - 1)"
  -- --weights 3,1,4,1,5 --stages 2)
pipe_plan_test(weights_huge 0 "imbalance 0.0% (bottleneck / mean - 1)" -- --weights 1,1e308,1e308 --stages 2)
pipe_plan_test(weights_uniform 0 [=["parts":[0,3,5]]=] -- --weights 1,1,1,1,1 --stages 2 --partition-method uniform --json)
pipe_plan_test(weights_not_a_number 1 "pipe-plan: error: --weights: 'x' (item 1) is not a number"
  -- --weights 3,x --stages 2)
# Weights that cannot be balanced, and counts that would be ignored, are refused (each was planned around before).
pipe_plan_test(weights_sum_overflows 1
  "pipe-plan: error: --weights: stage 1's weights sum past the largest double; scale them down"
  -- --weights 1e308,1e308,1e308 --stages 2)
pipe_plan_test(weights_negative 1 "pipe-plan: error: --weights: item 1 is -2.000000: weights are finite and not negative"
  -- --weights 1,-2,3 --stages 2)
pipe_plan_test(virtual_stages_zero 1 "pipe-plan: error: --virtual-stages must be at least 1, not 0"
  -- --model gpt-tiny --stages 2 --schedule interleaved-1f1b --virtual-stages 0)
pipe_plan_test(top_zero 1 "pipe-plan: error: --top must be at least 1, not 0"
  -- --auto --model gpt-tiny --world-size 2 --global-batch 16 --top 0)
# pipe-bench refuses what would hang, allocate without bound or report nonsense as OK.
pipe_expect_test(bench.attention_too_large 1 "pipe-bench attention: error: --seq 10000000 with B=1 H=12 D=64 needs"
  -- $<TARGET_FILE:pipe-bench> attention --seq 10000000)
pipe_expect_test(bench.attention_min_time_inf 1
  "pipe-bench attention: error: --min-time must be a positive number of seconds, not inf"
  -- $<TARGET_FILE:pipe-bench> attention --seq 16 --min-time inf)
pipe_expect_test(bench.pipeline_no_steps 1
  "pipe-bench pipeline: error: --steps and --micro-batch-size must be at least 1, not 0 and 16"
  -- $<TARGET_FILE:pipe-bench> pipeline --steps 0)
pipe_expect_test(bench.train_lr_nan 1 "pipe-bench train: error: --lr must be a positive number, not nan"
  -- $<TARGET_FILE:pipe-bench> train --lr nan)
pipe_plan_test(too_few_layers 1 "pipe-plan: error: cannot split 3 layers into 4 stages: every stage needs at least one layer"
  -- --weights 1,1,1 --stages 4 --partition-method uniform)
pipe_plan_test(broken_model 1
  "pipe-plan: error: ${PIPE_TEST_DATA}/broken_chain.toml:16: layer 2 (Linear) expects input float32[*, 64] but layer 1 (ReLU) outputs float32[32]"
  -- --model ${PIPE_TEST_DATA}/broken_chain.toml --stages 2)

# Training flags end to end (the equivalence checks are in train_check.sh).
pipe_cli_test(train_text_with_validation 2 0 "step 4 validation loss" "data: bytes of ${PIPE_TEST_DATA}/text.txt"
  "pipe-train: trained 4 steps in"
  -- --stages 2 --data ${PIPE_TEST_DATA}/text.txt --steps 4 --eval-every 4 --micro-batches 2 --micro-batch-size 4)
pipe_cli_test(train_from_config_file 2 0 "on pipe=2 x data=1; partition type:TransformerBlock [0,3,8]"
  "pipe-train: trained 2 steps in" -- --config ${PIPE_TEST_DATA}/train.cfg)
pipe_cli_test(train_sgd_gpipe 2 0 "schedule gpipe, 2 micro-batches" "pipe-train: trained 2 steps in"
  -- --stages 2 --steps 2 --micro-batches 2 --micro-batch-size 2 --optimizer sgd --lr 0.01 --schedule gpipe)
pipe_cli_test(profile_partition 2 0 "pipe-train: profile: forward + backward per layer" "2 ranks; partition profile: "
  -- --stages 2 --partition-method profile --micro-batch-size 2 --dry-run)
pipe_cli_test(data_file_missing 2 1 "pipe-train: error: --data /no/such/file.txt: no such file or directory"
  -- --stages 2 --data /no/such/file.txt)
pipe_cli_test(data_format_unknown 2 1 "pipe-train: error: --data-format 'csv': expected auto, bytes, llmc or nanogpt"
  -- --stages 2 --data ${PIPE_TEST_DATA}/text.txt --data-format csv)
pipe_cli_test(val_data_needs_data 2 1
  "pipe-train: error: --val-data needs --data (the built-in synthetic data makes its own validation set)"
  -- --stages 2 --val-data ${PIPE_TEST_DATA}/text.txt)
pipe_cli_test(data_dir_without_shards 2 1
  "pipe-train: error: --data ${PIPE_TEST_DATA}: the directory holds no .bin file (token shards)"
  -- --stages 2 --data ${PIPE_TEST_DATA})
pipe_cli_test(data_glob_matches_nothing 2 1 "pipe-train: error: --data /no/such/*.bin: the pattern matches no file"
  -- --stages 2 --data "/no/such/*.bin")
pipe_cli_test(data_needs_token_model 2 1
  "pipe-train: error: --data ${PIPE_TEST_DATA}/text.txt: byte-level text needs a token model (int32 input [T], cross-entropy); mlp takes float32[256]"
  -- --stages 2 --model mlp --data ${PIPE_TEST_DATA}/text.txt)
pipe_cli_test(unknown_schedule 2 1 "pipe-train: error: unknown pipeline schedule '1F1B' (did you mean '1f1b'?)"
  -- --stages 2 --schedule 1F1B)
pipe_cli_test(unknown_optimizer 2 1 "pipe-train: error: unknown --optimizer 'adam' (expected adamw or sgd)"
  -- --optimizer adam)
pipe_cli_test(bad_micro_batches 2 1 "pipe-train: error: --micro-batches must be at least 1, not 0" -- --micro-batches 0)
pipe_cli_test(config_file_missing 1 1 "pipe-train: error: --config /no/such.cfg: cannot open the file" -- --config /no/such.cfg)
pipe_cli_test(mlp_trains 3 0 "pipe-train: trained 3 steps in"
  -- --model mlp --stages 3 --steps 3 --micro-batches 3 --micro-batch-size 4)

# --trace: a real run's timeline is valid Chrome trace JSON with a row per
# rank (pipe-sim parses it back, every event of a known work kind, and draws
# it), and the end-of-run report.
string(JOIN " " PIPE_MPIRUN_LINE ${PIPE_MPIRUN})
set(PIPE_TRACE ${CMAKE_CURRENT_BINARY_DIR}/cli-trace.json)
pipe_expect_test(cli.trace_and_report 0 "trace ${PIPE_TRACE}: 4 rows" "pipe-train: trace written to ${PIPE_TRACE}"
  "theory = (S-1)/(M+S-1) for 1f1b" "wrote ${PIPE_TRACE}.svg" --absent "no known work kind" --
  sh -c "${PIPE_MPIRUN_LINE} -np 4 $<TARGET_FILE:pipe-train> --stages 2 --steps 2 --micro-batches 4 --micro-batch-size 2 --trace ${PIPE_TRACE} && $<TARGET_FILE:pipe-sim> --from-trace ${PIPE_TRACE} --svg ${PIPE_TRACE}.svg")

# Flags that cannot work together or cannot be honoured fail before any step.
pipe_cli_test(inference_cannot_train 2 1
  "pipe-train: error: schedule 'inference' cannot train (it has no backward); use 1f1b, gpipe or zb-h1"
  -- --stages 2 --schedule inference --steps 1)
pipe_cli_test(trace_unwritable 2 1 "pipe-train: rank 0: error: --trace /no/such/dir/t.json: cannot write the file"
  -- --stages 2 --steps 1 --trace /no/such/dir/t.json)
# Paths: an empty one is a mistake, not "unset"; only regular files are read; --save is proven writable before
# any training, so a save that cannot work never loses a run.
pipe_expect_test(cli.empty_save_path 1 "pipe-train: error: --save needs a path, not an empty one" --
  sh -c "${PIPE_MPIRUN_LINE} -np 2 $<TARGET_FILE:pipe-train> --stages 2 --save ''")
pipe_expect_test(cli.empty_data_path 1 "pipe-train: error: --data needs a path, not an empty one" --
  sh -c "${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --data ''")
pipe_expect_test(cli.empty_val_data_path 1 "pipe-train: error: --val-data needs a path, not an empty one" --
  sh -c "${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --data ${PIPE_TEST_DATA}/text.txt --val-data ''")
pipe_cli_test(save_on_a_device 2 1 "pipe-train: rank 0: error: --save /dev/null: "
  -- --stages 2 --steps 1 --save /dev/null)
pipe_cli_test(save_under_a_file 1 1 "pipe-train: error: --save ${PIPE_TEST_DATA}/text.txt/ck: cannot create the directory"
  -- --steps 1 --save ${PIPE_TEST_DATA}/text.txt/ck)
pipe_cli_test(data_is_a_device 2 1 "pipe-train: error: --data /dev/zero: not a regular file (a character device)"
  -- --stages 2 --steps 1 --data /dev/zero)
pipe_cli_test(config_is_a_directory 1 1 "pipe-train: error: --config ${PIPE_TEST_DATA}: not a regular file (a directory)"
  -- --config ${PIPE_TEST_DATA})
pipe_cli_test(zb_h1_needs_enough_micro_batches 2 1
  "pipe-train: error: the zb-h1 schedule needs at least as many micro-batches as stages (M >= S), got 1 micro-batch for 2 stages"
  -- --stages 2 --schedule zb-h1 --micro-batches 1 --steps 1)
pipe_cli_test(metrics_on_a_full_disk 1 1 "error: --metrics /dev/full: writing failed (is the disk full?)"
  -- --steps 2 --metrics /dev/full)
pipe_cli_test(huge_micro_batch_size 1 1 "pipe-train: error: --micro-batch-size must be at most 1,000,000, not 2,000,000,000"
  -- --micro-batch-size 2000000000)
pipe_cli_test(huge_eval_batches 1 1 "pipe-train: error: --eval-batches must be at most 1,000,000, not 99,999,999"
  -- --eval-every 1 --eval-batches 99999999)
pipe_cli_test(bad_min_lr 1 1 "pipe-train: error: --min-lr must be between 0 and --lr" -- --lr 0.001 --min-lr 0.01)
pipe_cli_test(checkpointable_unknown_type 2 1
  "pipe-train: error: --checkpointable-layers: unknown layer type 'TransformerBlok' (did you mean 'TransformerBlock'?)"
  -- --stages 2 --steps 1 --activation-checkpoint-interval 2 --checkpointable-layers TransformerBlok)
pipe_cli_test(checkpointable_needs_interval 1 1
  "pipe-train: error: --checkpointable-layers needs --activation-checkpoint-interval"
  -- --checkpointable-layers TransformerBlock)

# More bad input, one case per mistake a user makes; every rank must end.
pipe_cli_test(invalid_regex 2 1
  "pipe-train: error: partition method 'type:(': invalid regex '(': Unmatched marking parenthesis ( or \\( at position 1"
  -- --stages 2 --partition-method "type:(" --dry-run)
pipe_cli_test(regex_matches_nothing 2 1
  "pipe-train: error: partition method 'type:conv': regex 'conv' matches no layer (layer types in gpt-tiny: Embedding, TransformerBlock, LayerNorm, LMHead, SoftmaxCrossEntropy)"
  -- --stages 2 --partition-method type:conv --dry-run)
pipe_cli_test(manual_out_of_range 2 1
  "pipe-train: error: partition method 'manual:99': boundary 99 is out of range: the first layer of stage 1 must be between 1 and 7 (the model has 8 layers)"
  -- --stages 2 --partition-method manual:99 --dry-run)
pipe_cli_test(fewer_layers_than_stages 9 1
  "pipe-train: error: cannot split gpt-tiny's 8 layers into 9 stages: every stage needs at least one layer"
  -- --stages 9 --dry-run)
pipe_cli_test(toml_syntax_error 2 1
  "pipe-train: error: ${PIPE_TEST_DATA}/bad_syntax.toml:4:1: TOML syntax error: "
  -- --stages 2 --model ${PIPE_TEST_DATA}/bad_syntax.toml --dry-run)
pipe_cli_test(plugin_without_entry_point 2 1
  "pipe-train: error: plugin ${PIPE_TEST_PLUGIN_DIR}/no_entry/no_entry.so has no entry point 'pipe_plugin_init' (define one with PIPE_PLUGIN from <pipe/plugin.hpp>)"
  -- --stages 2 --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/no_entry --dry-run)
pipe_cli_test(plugin_truncated 2 1 "pipe-train: error: cannot load plugin ${PIPE_TEST_PLUGIN_DIR}/truncated/scale.so: truncated"
  -- --stages 2 --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/truncated --dry-run)
pipe_cli_test(plugin_not_a_library 2 1 "pipe-train: error: cannot load plugin ${PIPE_TEST_PLUGIN_DIR}/not_elf/broken.so: "
  -- --stages 2 --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/not_elf --dry-run)
pipe_cli_test(empty_data_file 2 1
  "pipe-train: error: --data ${PIPE_TEST_DATA}/empty.txt: the file has 0 bytes; it needs at least 130 (two windows of sequence length + 1)"
  -- --stages 2 --data ${PIPE_TEST_DATA}/empty.txt --steps 1)
pipe_cli_test(bad_topology_axis 2 1 "pipe-train: error: " -- --topology pipe=2,tensor=1 --dry-run)
pipe_cli_test(save_every_needs_save 1 1 "pipe-train: error: --save-every needs --save" -- --save-every 5)
pipe_cli_test(bad_comm_timeout 1 1 "pipe-train: error: --comm-timeout must be 0 (off) or from 0.001 to 1000000 seconds, not -1"
  -- --comm-timeout -1)
pipe_cli_test(comm_timeout_too_long 1 1 "pipe-train: error: --comm-timeout must be 0 (off) or from 0.001 to 1000000 seconds, not 1e+10"
  -- --comm-timeout 1e10)
# MPMD launch: a rank started with other flags is refused before it can disagree later.
pipe_expect_test(cli.ranks_with_other_flags 1
  "pipe-train: error: rank 1 was started with other flags or other layer plugins than rank 0; every rank must run the same command with the same plugins"
  -- ${PIPE_MPIRUN} -np 1 $<TARGET_FILE:pipe-train> --describe : -np 1 $<TARGET_FILE:pipe-train> --describe --seed 5)

# Found by fuzzing: absurd sizes and Boost's own placeholders.
pipe_cli_test(huge_layer 1 1
  "pipe-train: error: ${PIPE_TEST_DATA}/huge_layer.toml:5: layer 0 (Linear): shape [4611686018427387904, 16] is too large (more than 2^50 elements) or negative"
  -- --model ${PIPE_TEST_DATA}/huge_layer.toml --dry-run)
pipe_cli_test(placeholder_in_flag 1 1
  "pipe-train: error: argument 2: '%value%' contains a %name% placeholder, which is not allowed" -- --stages %value%)

# Devices. Without a visible GPU (CUDA_VISIBLE_DEVICES empty hides them on any
# machine) the default is the CPU and MPI, and asking for a GPU is one line
# from every rank. Its reason is libpipe's: exact in a build without CUDA; in a
# CUDA build it is the runtime's word for this machine, so only the start is fixed.
if(PIPE_CUDA)
  set(PIPE_NO_GPU_LINE "pipe-train: error: --device cuda: ")
else()
  set(PIPE_NO_GPU_LINE "pipe-train: error: --device cuda: this build of libpipe has no CUDA backend (rebuild with the CUDA toolkit installed, or -DPIPE_WITH_CUDA=ON)")
endif()
pipe_expect_test(cli.device_cuda_without_gpu 1 "${PIPE_NO_GPU_LINE}" --
  env CUDA_VISIBLE_DEVICES= ${PIPE_MPIRUN} -np 2 $<TARGET_FILE:pipe-train> --stages 2 --device cuda --dry-run)
pipe_expect_test(cli.device_default_without_gpu 0
  [[{"comm":"mpi","coord":{"data":0,"pipe":1},"data":0,"data_parallel_group":[1],"device":"cpu","layer_range":[3,8],]]
  -- env CUDA_VISIBLE_DEVICES= ${PIPE_MPIRUN} -np 2 $<TARGET_FILE:pipe-train> --stages 2 --dry-run)
pipe_cli_test(unknown_device 2 1 "pipe-train: error: unknown --device 'tpu' (expected cpu or cuda)" -- --device tpu)
pipe_cli_test(unknown_comm 2 1 "pipe-train: error: unknown --comm 'gloo' (expected auto, nccl or mpi)" -- --comm gloo)
pipe_cli_test(unknown_dtype 2 1 "pipe-train: error: unknown --dtype 'fp16' (expected fp32, tf32 or bf16)" -- --dtype fp16)
pipe_cli_test(nccl_on_cpu 2 1
  "pipe-train: error: --comm nccl needs --device cuda (NCCL moves GPU memory; on the CPU use --comm mpi)"
  -- --stages 2 --device cpu --comm nccl --dry-run)
pipe_cli_test(dtype_on_cpu 2 1
  "pipe-train: error: --dtype tf32 needs --device cuda (TF32 is the tensor cores' format; the CPU has fp32 and bf16)"
  -- --stages 2 --device cpu --dtype tf32 --dry-run)
pipe_expect_test(cli.nccl_without_gpu 1 "pipe-train: error: --comm nccl needs a GPU and there is none: " --
  env CUDA_VISIBLE_DEVICES= ${PIPE_MPIRUN} -np 2 $<TARGET_FILE:pipe-train> --stages 2 --comm nccl --dry-run)
set(PIPE_DEVICE_CFG ${CMAKE_CURRENT_BINARY_DIR}/cli-device.cfg)
pipe_expect_test(cli.device_from_config 1 "pipe-train: error: unknown --device 'tpu' (expected cpu or cuda)" --
  sh -c "printf 'device = tpu\\n' > ${PIPE_DEVICE_CFG} && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --config ${PIPE_DEVICE_CFG}")
# Synthetic data's teacher is refused before it is allocated where it would not fit (the memory check does not count it).
pipe_cli_test(synthetic_teacher_too_large 1 1
  "pipe-train: error: the synthetic data's teacher maps 100,000 input features to 100,000 targets: 37.3 GiB of weights, over its limit of 1.00 GiB; give --data"
  -- --model ${PIPE_TEST_DATA}/wide_regression.toml --steps 1)
# A --config file's errors name its file and line; a flag set twice, a nested --config and sections are refused.
# Under mpirun like every pipe-train case (the sanitizer build's leak checks expect MPI started by it).
set(PIPE_BAD_CFG ${CMAKE_CURRENT_BINARY_DIR}/cli-bad.cfg)
pipe_expect_test(cli.config_unknown_option 1 "pipe-train: error: ${PIPE_BAD_CFG}:2: unrecognised option 'bogus'" --
  sh -c "printf 'stages = 1\\nbogus = 3\\n' > ${PIPE_BAD_CFG} && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --config ${PIPE_BAD_CFG} --dry-run")
pipe_expect_test(cli.config_bad_value 1 "pipe-train: error: ${PIPE_BAD_CFG}.value:1: the argument ('abc') for option 'steps' is invalid" --
  sh -c "printf 'steps = abc\\n' > ${PIPE_BAD_CFG}.value && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --config ${PIPE_BAD_CFG}.value --dry-run")
pipe_expect_test(cli.config_set_twice 1 "pipe-train: error: ${PIPE_BAD_CFG}.twice:3: 'steps' is set again (first on line 1)" --
  sh -c "printf 'steps = 1\\nstages = 1\\nsteps = 2\\n' > ${PIPE_BAD_CFG}.twice && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --config ${PIPE_BAD_CFG}.twice --dry-run")
pipe_expect_test(cli.config_nested 1 "pipe-train: error: ${PIPE_BAD_CFG}.nested:1: a --config file cannot name another one" --
  sh -c "printf 'config = x.cfg\\n' > ${PIPE_BAD_CFG}.nested && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --config ${PIPE_BAD_CFG}.nested --dry-run")
# The end-of-run report names each rank's device and the comm.
pipe_cli_test(report_names_device 2 0 "peak RSS      grown    tensors      model  device" "comm: mpi (how activations, gradients and tied weights"
  -- --stages 2 --steps 1 --micro-batches 2 --micro-batch-size 2 --device cpu --comm mpi --dtype fp32)

# Reliability II: every output checked and every input stat-ed before any training, each refusal one exact line
# (tests/expect.sh --line) and exit status 1, never a hang (a device read whole would read for ever) or a
# replaced device (a finished trace renamed over /dev/null).
function(pipe_refusal name line)  # pipe_refusal(NAME "exact line" COMMAND ...)
  pipe_expect_test(${name} 1 --line "${line}" -- ${ARGN})
endfunction()
set(PIPE_TRAIN_1 ${PIPE_MPIRUN} -np 1 $<TARGET_FILE:pipe-train>)
# A memory limit that the balanced cut [0,3,8] breaks on stage 0 (pipe-plan's memory_limit_moves_the_cut): the
# run trains on the cut that fits.
pipe_cli_test(memory_limit_trains 2 0
  "pipe-train: training gpt-tiny (8 layers, 834,304 parameters) on pipe=2 x data=1; partition parameters within --memory-limit 205 MiB per rank [0,2,8]; schedule 1f1b, 2 micro-batches x 64 samples"
  -- --stages 2 --steps 2 --micro-batches 2 --micro-batch-size 64 --memory-limit 205MiB --device cpu --comm mpi)
# With virtual stages the method's chunk cut is checked against the limit and trains when it fits.
pipe_cli_test(memory_limit_trains_interleaved 2 0
  "pipe-train: training gpt-tiny (8 layers, 834,304 parameters) on pipe=2 x data=1; partition parameters into 2 chunks per stage (looped) within --memory-limit 1.00 GiB per rank [0,2,3,4,8]; schedule interleaved-1f1b"
  -- --stages 2 --steps 2 --micro-batches 4 --memory-limit 1GiB --schedule interleaved-1f1b --device cpu --comm mpi)
# pipe-train --plan auto: rank 0 plans (its GEMM measured, so the plan is not fixed here), every rank runs it.
pipe_cli_test(plan_auto_trains 2 0 "pipe-train: --plan auto: --stages " "pipe-train: trained 2 steps in "
  -- --plan auto --global-batch 32 --steps 2 --device cpu --comm mpi)
pipe_refusal(cli.plan_auto_chooses_the_stages "pipe-train: error: --plan auto chooses --stages: leave it out"
  ${PIPE_TRAIN_1} --plan auto --global-batch 32 --stages 1)
pipe_refusal(cli.global_batch_without_a_plan "pipe-train: error: --global-batch goes with --plan auto"
  ${PIPE_TRAIN_1} --global-batch 32)
pipe_refusal(cli.memory_limit_not_a_size
  "pipe-train: error: --memory-limit 8XB: expected a positive size in bytes, such as 8GiB, 512MiB, 1.5GB or 4096"
  ${PIPE_TRAIN_1} --steps 1 --memory-limit 8XB)
# (Two parts of one line: a CMake string cannot hold its semicolon.)
pipe_expect_test(cli.memory_limit_with_chunks 1
  "pipe-train: error: --memory-limit 1.00 MiB: the parameters cut of gpt-tiny into 1 x 2 chunks (interleaved-1f1b, 4 micro-batches of 16) puts 74.3 MiB on stage 0: with virtual stages the cut is checked, not moved"
  " would lower it: --activation-checkpoint-interval 1 (49.3 MiB), --micro-batch-size 8 (48.5 MiB), more stages"
  --
  ${PIPE_TRAIN_1} --steps 1 --memory-limit 1MiB --schedule interleaved-1f1b --micro-batches 4)
pipe_refusal(cli.trace_on_a_device "pipe-train: error: --trace /dev/null: not a regular file (a character device)"
  ${PIPE_TRAIN_1} --steps 1 --trace /dev/null)
pipe_refusal(cli.profile_out_is_a_directory
  "pipe-train: error: --profile-out ${PIPE_TEST_DATA}: not a regular file (a directory)"
  ${PIPE_TRAIN_1} --steps 1 --profile-out ${PIPE_TEST_DATA})
pipe_refusal(cli.metrics_is_a_directory "pipe-train: error: --metrics ${PIPE_TEST_DATA}: not a regular file (a directory)"
  ${PIPE_TRAIN_1} --steps 1 --metrics ${PIPE_TEST_DATA})
pipe_refusal(cli.trace_in_a_missing_directory "pipe-train: error: --trace /no/such/dir/t.json: cannot write the file"
  ${PIPE_TRAIN_1} --steps 1 --trace /no/such/dir/t.json)
pipe_refusal(cli.schedule_file_is_a_device
  "pipe-train: error: --schedule-file /dev/zero: not a regular file (a character device)"
  ${PIPE_TRAIN_1} --steps 1 --schedule-file /dev/zero)
pipe_refusal(cli.model_is_a_device "pipe-train: error: model file '/dev/zero': not a regular file (a character device)"
  ${PIPE_TRAIN_1} --steps 1 --model /dev/zero)
# An empty path (an unset shell variable) is refused for every path flag, never taken as "unset".
foreach(flag metrics trace load profile-out schedule-file model plugin-dir)
  pipe_refusal(cli.empty_${flag}_path "pipe-train: error: --${flag} needs a path, not an empty one"
    sh -c "${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --steps 1 --${flag} ''")
endforeach()
# --load: latest must be a regular file (a FIFO would block for ever) naming a directory inside the folder (a
# link out of it is refused).
pipe_refusal(cli.load_latest_is_a_fifo "pipe-train: error: --load ck: latest: not a regular file (a FIFO)"
  sh -c "d=$(mktemp -d) && cd $d && mkdir ck && mkfifo ck/latest && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --steps 1 --load ck; s=$?; rm -rf $d; exit $s")
pipe_refusal(cli.load_latest_links_outside
  "pipe-train: error: --load ck: latest names 'step-00000001', which is not a step-N directory of ck"
  sh -c "d=$(mktemp -d) && cd $d && mkdir -p ck out/step-00000001 && ln -s ../out/step-00000001 ck/step-00000001 && echo step-00000001 > ck/latest && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --steps 1 --load ck; s=$?; rm -rf $d; exit $s")
# pipe-sim and pipe-plan: the same rules.
pipe_refusal(sim.from_trace_is_a_device "pipe-sim: error: --from-trace /dev/zero: not a regular file (a character device)"
  $<TARGET_FILE:pipe-sim> --from-trace /dev/zero)
pipe_refusal(sim.schedule_file_is_a_device
  "pipe-sim: error: --schedule-file /dev/zero: not a regular file (a character device)"
  $<TARGET_FILE:pipe-sim> --schedule-file /dev/zero)
pipe_refusal(sim.profile_is_a_directory "pipe-sim: error: --profile ${PIPE_TEST_DATA}: not a regular file (a directory)"
  $<TARGET_FILE:pipe-sim> --stages 2 --micro-batches 4 --profile ${PIPE_TEST_DATA})
foreach(flag svg trace from-trace schedule-file profile)
  pipe_refusal(sim.empty_${flag}_path "pipe-sim: error: --${flag} needs a path, not an empty one"
    sh -c "$<TARGET_FILE:pipe-sim> --stages 2 --micro-batches 4 --${flag} ''")
endforeach()
pipe_refusal(plan.empty_model_path "pipe-plan: error: --model needs a path, not an empty one"
  sh -c "$<TARGET_FILE:pipe-plan> --stages 2 --model ''")
# A failure every rank learns of together (a checkpoint save) is printed once, by the rank that met it, and ends
# the job without MPI_Abort (mpirun -q then prints nothing else).
pipe_expect_test(cli.save_failure_printed_once 1
  --line "pipe-train: rank 0 (stage 0): error: checkpoint: cannot rename ck/step-00000001.partial to ck/step-00000001 (Not a directory)"
  --absent "MPI_ABORT" --absent "another rank" --absent "rank 1" --
  sh -c "d=$(mktemp -d) && cd $d && mkdir ck && ln -s /no/such/target ck/step-00000001 && ${PIPE_MPIRUN_LINE} -q -np 2 $<TARGET_FILE:pipe-train> --stages 2 --steps 1 --micro-batches 2 --save ck; s=$?; rm -rf $d; exit $s")
# --data is read whole: a file beyond half the machine's memory (here a sparse 1 TB file) is refused up front.
set(PIPE_HUGE_DATA ${CMAKE_CURRENT_BINARY_DIR}/cli-huge-data.txt)
pipe_expect_test(cli.data_larger_than_memory 1
  "pipe-train: error: --data ${PIPE_HUGE_DATA}: 1099.5 GB, more than half of this machine's memory (" --
  sh -c "truncate -s 1T ${PIPE_HUGE_DATA} && ${PIPE_MPIRUN_LINE} -np 1 $<TARGET_FILE:pipe-train> --steps 1 --data ${PIPE_HUGE_DATA}; s=$?; rm -f ${PIPE_HUGE_DATA}; exit $s")
# Before anything is allocated: a job whose ranks need more than the node's memory even at one micro-batch in
# flight is refused, with the floor's parts and the flags that lower it (a sum over the node, printed once).
pipe_cli_test(needs_more_than_the_memory 2 1
  "pipe-train: error: the 2 rank(s) on this node need at least 85233.0 GB (parameters, gradients and optimizer state 0.4 GB"
  "the activations of one micro-batch of 1000000 samples 85232.6 GB), more than its "
  "use more --stages or nodes, a smaller --micro-batch-size, or --activation-checkpoint-interval"
  -- --model gpt-small --stages 2 --micro-batch-size 1000000 --steps 1)
