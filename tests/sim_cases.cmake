# pipe-sim end to end: exit status and text through tests/expect.sh (each text
# exactly once in the output). Included from tests/CMakeLists.txt.
#   pipe_sim_test(NAME STATUS "text" ... -- pipe-sim args ...)
set(PIPE_SIM_OUT ${CMAKE_CURRENT_BINARY_DIR}/sim)
file(MAKE_DIRECTORY ${PIPE_SIM_OUT})

function(pipe_sim_test name status)
  list(FIND ARGN "--" split)
  list(SUBLIST ARGN 0 ${split} texts)
  math(EXPR first "${split} + 1")
  list(SUBLIST ARGN ${first} -1 args)
  pipe_expect_test(sim.${name} ${status} ${texts} -- $<TARGET_FILE:pipe-sim> ${args})
endfunction()

pipe_sim_test(help 0 "usage: pipe-sim --stages S --micro-batches M" -- --help)

# Uniform costs: makespan (M+S-1)(F+B) = 11 x 3 and the closed-form bubble 3/11, in JSON and in text.
pipe_sim_test(json_uniform_1f1b 0 [["bubble":0.2727272727]] [["theoretical_bubble":0.2727272727]] [["makespan":33.0]]
  [["stages":4]] [["micro_batches":8]] [["schedule":"1f1b"]] [=["busy":[24.0,24.0,24.0,24.0]]=]
  -- --stages 4 --micro-batches 8 --json)
pipe_sim_test(text_uniform_1f1b 0 "makespan: 33 units" "bubble: 27.27% (theoretical (S-1)/(M+S-1) for equal stages: 27.27%)"
  "step  stage 0" "21    RG7 B7 W7 RT RD OPT  SG7 RT RD OPT  RT RD OPT      RT RD OPT"
  -- --stages 4 --micro-batches 8 --forward 1 --backward 2 --weight 0)
pipe_sim_test(json_gpipe 0 [["bubble":0.1794871794]] [["makespan":78.0]] [["schedule":"gpipe"]]
  -- --stages 8 --micro-batches 32 --schedule gpipe --forward 0.5 --backward 1.5 --json)
pipe_sim_test(json_inference 0 [["bubble":0.2727272727]] [["makespan":22.0]]
  -- --stages 4 --micro-batches 8 --schedule inference --forward 2 --json)
# --compare: every training schedule in one table; zb-h1's bubble (S-1)/(3M+S-1) below 1f1b's for F = B = W,
# interleaved-1f1b's (S-1)/(VM+S-1) with 2 chunks per stage, zb-v below them all; the activations held: gpipe all
# 8, 1f1b and zb-h1 S = 4, zb-v 8 half-stage chunk micro-batches (1f1b's bytes). A schedule that cannot run says
# why in its row.
pipe_sim_test(compare 0 "gpipe               1       33 units    27.27%    27.27%                8"
  "1f1b                1       33 units    27.27%    27.27%                4"
  "zb-h1               1       27 units    11.11%    11.11%                4"
  "interleaved-1f1b    2     28.5 units    15.79%    15.79%            11 /2"
  "zb-v                2     25.5 units     5.88%         -             8 /2"
  -- --stages 4 --micro-batches 8 --forward 1 --backward 1 --weight 1 --compare)
pipe_sim_test(compare_json 0 [=["peak_activations":[2,2,2,1],"schedule":"1f1b"]=]
  [["error":"the zb-h1 schedule needs at least as many micro-batches as stages (M >= S), got 2 micro-batches for 4 stages"]]
  -- --stages 4 --micro-batches 2 --compare --json)
pipe_sim_test(compare_one_table 1 "pipe-sim: error: --compare prints one table; --svg, --trace and --grid are for one schedule"
  -- --compare --svg ${PIPE_SIM_OUT}/compare.svg)
# --costs F,B,W: one relative triple for every stage (ZB-H1 with F = B = W: 3M+S-1 = 27 units).
pipe_sim_test(costs_triple 0 [["makespan":27.0]] -- --stages 4 --micro-batches 8 --costs 1,1,1 --schedule zb-h1 --json)
pipe_sim_test(costs_triple_bad 1 "pipe-sim: error: --costs '1,x,1' (F,B,W): 'x' is not a number" -- --costs 1,x,1)
# --profile: pipe-train's measured costs per stage (stage 1 twice as slow: the makespan is M x its 8 ms + stage 0's
# forward and backward of the first and last micro-batch, 1 + 3 ms).
pipe_sim_test(profile 0 "costs per stage measured by pipe-train (gpt-tiny, 1f1b, micro-batch size 16) from"
  "makespan: 68 ms" -- --profile ${PIPE_TEST_DATA}/profile_2_stages.json --micro-batches 8)
pipe_sim_test(profile_not_json 1 "pipe-sim: error: --profile ${PIPE_TEST_DATA}/l1_mlp.toml: not JSON"
  -- --profile ${PIPE_TEST_DATA}/l1_mlp.toml)
pipe_sim_test(profile_missing 1 "pipe-sim: error: --profile ${PIPE_SIM_OUT}/no-such.profile: cannot read the file: No such file or directory"
  -- --profile ${PIPE_SIM_OUT}/no-such.profile)
pipe_sim_test(profile_directory 1 "pipe-sim: error: --profile ${PIPE_TEST_DATA}: not a regular file (a directory)"
  -- --profile ${PIPE_TEST_DATA})
pipe_sim_test(virtual_stages_zero 1 "pipe-sim: error: --virtual-stages must be at least 1, not 0"
  -- --schedule interleaved-1f1b --virtual-stages 0)
pipe_sim_test(profile_stage_mismatch 1 "pipe-sim: error: --profile ${PIPE_TEST_DATA}/profile_2_stages.json measured 2 stages, not --stages 4"
  -- --profile ${PIPE_TEST_DATA}/profile_2_stages.json --stages 4)
pipe_sim_test(json_peak_activations 0 [=["peak_activations":[4,3,2,1]]=] -- --stages 4 --micro-batches 8 --json)

# No grid for a large pipeline unless asked.
pipe_sim_test(no_grid_when_large 0 "makespan: 237 units" --absent "step  stage 0"
  -- --stages 16 --micro-batches 64)

# A slow stage: 16 micro-batches at 9 units on stage 1 are 144 of the 147.
pipe_sim_test(costs_slow_stage 0 "slowest stage: 1, 9 units per micro-batch" "makespan: 147 units"
  "1                 3            6            0          144"
  -- --costs 1:2,3:6,1:2 --micro-batches 16)
pipe_sim_test(latency 0 [["makespan":7.0]] -- --stages 2 --micro-batches 1 --latency 0.5 --json)
# Costs from a model's FLOPs, split as pipe-plan splits it.
# Given a model, the peak activation memory per stage in bytes (describe's activation bytes x the micro-batch
# size, held from F to W): under 1f1b stage 0 holds 2 of its micro-batches, stage 1 one of its own; under zb-v
# stage 0 holds chunks 0 and 3, each at most 2 micro-batches of 1F1B's half-stage chunks.
pipe_sim_test(model_peak_bytes 0 [=["peak_activation_bytes":[39395328.0,23633984.0]]=]
  -- --model gpt-tiny --stages 2 --micro-batches 8 --json)
pipe_sim_test(model_peak_bytes_zb_v 0 "activation memory at most, per stage (bytes kept for backward, from describe): 46.2 MB 39.4 MB"
  -- --model gpt-tiny --stages 2 --micro-batches 8 --schedule zb-v)
# --device: GPT-2's 1024 tokens run flash attention on the CPU, not on a GPU (from 2048 there). Each of a stage's
# 6 blocks keeps 12 x 1024 x 65 floats per micro-batch instead of 12 x 1024^2: on cpu, stage 0 (2 micro-batches
# held) 565,641,216 bytes fewer than on cuda, stage 1 (one) 282,820,608.
pipe_sim_test(model_device_cpu 0 [=["peak_activation_bytes":[664543232.0,761282564.0]]=] [["device":"cpu"]]
  -- --model gpt2-124m --stages 2 --micro-batches 4 --micro-batch-size 1 --json)
pipe_sim_test(model_device_cuda 0 [=["peak_activation_bytes":[1230184448.0,1044103172.0]]=] [["device":"cuda"]]
  -- --model gpt2-124m --stages 2 --micro-batches 4 --micro-batch-size 1 --device cuda --json)
pipe_sim_test(device_without_model 1 "pipe-sim: error: --device applies with --model only"
  -- --stages 2 --micro-batches 4 --device cuda)
pipe_sim_test(model_gpt_tiny 0 [["model":"gpt-tiny"]] [=["parts":[0,3,8]]=] [=["stage_flops_per_sample":[164847616,177569792]]=]
  [["time_unit":"s"]] -- --model gpt-tiny --stages 2 --micro-batches 8 --json)

# The SVG of 64 stages x 128 micro-batches, then a check that it is complete.
pipe_sim_test(svg_64x128 0 "wrote ${PIPE_SIM_OUT}/sim_64x128.svg"
  -- --stages 64 --micro-batches 128 --svg ${PIPE_SIM_OUT}/sim_64x128.svg)
set_tests_properties(sim.svg_64x128 PROPERTIES FIXTURES_SETUP sim_svg)
add_test(NAME sim.svg_64x128_complete COMMAND sh -c "test -s \"$1\" && head -c 4 \"$1\" | grep -qx '<svg' && test \"$(tail -n 1 \"$1\")\" = '</svg>'"
  sh ${PIPE_SIM_OUT}/sim_64x128.svg)
set_tests_properties(sim.svg_64x128_complete PROPERTIES FIXTURES_REQUIRED sim_svg)

# The promised scale, through the CLI (no timing assert; expect.sh's 60 s limit).
pipe_sim_test(scale_1024x4096 0 [["bubble":0.19984371947]] [["stages":1024]]
  -- --stages 1024 --micro-batches 4096 --svg ${PIPE_SIM_OUT}/sim_1024x4096.svg --json)

# A simulation written as a Chrome trace and read back: same rows and bubble.
pipe_sim_test(trace_write 0 "wrote ${PIPE_SIM_OUT}/sim_4x8.trace.json"
  -- --stages 4 --micro-batches 8 --trace ${PIPE_SIM_OUT}/sim_4x8.trace.json)
set_tests_properties(sim.trace_write PROPERTIES FIXTURES_SETUP sim_trace)
pipe_sim_test(trace_read 0 "trace ${PIPE_SIM_OUT}/sim_4x8.trace.json: 4 rows, 76 blocks over 33 units"
  "bubble: 27.27% (share of rows x span not in forward or backward)" "wrote ${PIPE_SIM_OUT}/sim_4x8.trace.svg"
  -- --from-trace ${PIPE_SIM_OUT}/sim_4x8.trace.json --svg ${PIPE_SIM_OUT}/sim_4x8.trace.svg)
set_tests_properties(sim.trace_read PROPERTIES FIXTURES_REQUIRED sim_trace)

# A trace in the vocabulary of earlier versions ("recv_wait", "optimizer"; pipe/work_kind.hpp now names every
# kind once): it still draws, its unknown kinds as other, and pipe-sim says how many blocks that is.
pipe_sim_test(trace_old_names 0 "trace ${PIPE_TEST_DATA}/trace-old-names.json: 1 rows, 3 blocks over 20 us"
  "note: 2 of 3 blocks are of no known work kind (drawn as other)" "bubble: 50.00%"
  -- --from-trace ${PIPE_TEST_DATA}/trace-old-names.json)

# Bad input: one line, exit 1.
pipe_sim_test(zero_stages 1 "pipe-sim: error: --stages must be at least 1, not 0" -- --stages 0)
pipe_sim_test(zero_micro_batches 1 "pipe-sim: error: --micro-batches must be at least 1, not 0" -- --micro-batches 0)
pipe_sim_test(unknown_schedule 1 "pipe-sim: error: unknown pipeline schedule 'zb-h2' (did you mean 'zb-h1'?)"
  "known schedules: inference, gpipe, 1f1b, zb-h1, interleaved-1f1b, zb-v" -- --schedule zb-h2)
pipe_sim_test(virtual_stages_refused 1 "pipe-sim: error: the 1f1b schedule runs 1 chunk per stage, not 2; virtual stages need interleaved-1f1b or zb-v"
  -- --schedule 1f1b --virtual-stages 2)
# Interleaved 1F1B with 2 chunks per stage, F = B = 1 per stage: the bubble (S-1)/(VM+S-1) = 3/19.
pipe_sim_test(json_interleaved 0 [["bubble":0.1578947368]] [["virtual_stages":2]] [["schedule":"interleaved-1f1b"]]
  -- --stages 4 --micro-batches 8 --schedule interleaved-1f1b --forward 1 --backward 1 --json)
# ZB-H1 with F = B = W: makespan 3M+S-1 = 27 units, bubble 3/27, a third of 1F1B's idle time.
pipe_sim_test(json_zb_h1 0 [["makespan":27.0]] [["theoretical_bubble":0.1111111111]] [["schedule":"zb-h1"]]
  -- --schedule zb-h1 --stages 4 --micro-batches 8 --forward 1 --backward 1 --weight 1 --json)
pipe_sim_test(zb_h1_needs_m_ge_s 1 "pipe-sim: error: the zb-h1 schedule needs at least as many micro-batches as stages (M >= S), got 3 micro-batches for 4 stages"
  -- --schedule zb-h1 --stages 4 --micro-batches 3)
pipe_sim_test(unknown_flag 1 "pipe-sim: error: unrecognised option '--bubbles' (see --help)" -- --bubbles)
pipe_sim_test(bad_costs 1 "pipe-sim: error: --costs entry 1 ('3') is not F:B or F:B:W" -- --costs 1:2,3)
pipe_sim_test(costs_count 1 "pipe-sim: error: --costs has 2 entries for 3 stages (one F:B[:W] entry per stage)"
  -- --stages 3 --costs 1:2,1:2)
pipe_sim_test(negative_cost 1 "pipe-sim: error: simulate: the forward cost must be a finite number >= 0, got -1"
  -- --forward -1)
pipe_sim_test(costs_and_model 1 "pipe-sim: error: --costs, --model and --profile each give the costs; use one"
  -- --costs 1:2 --model gpt-tiny)
pipe_sim_test(missing_trace 1 "pipe-sim: error: --from-trace ${PIPE_SIM_OUT}/no-such.json: cannot read the file: No such file or directory"
  -- --from-trace ${PIPE_SIM_OUT}/no-such.json)
pipe_sim_test(trace_with_costs 1 "pipe-sim: error: --from-trace draws a recorded run; --costs is for simulations"
  -- --from-trace ${PIPE_SIM_OUT}/no-such.json --costs 1:2)
# A trace with nothing to draw, or a block of negative length, is refused (both were drawn before).
pipe_sim_test(trace_without_work 1
  "pipe-sim: error: --from-trace ${PIPE_TEST_DATA}/bad-traces/no-events.json: no work to draw"
  -- --from-trace ${PIPE_TEST_DATA}/bad-traces/no-events.json)
pipe_sim_test(trace_negative_duration 1
  "pipe-sim: error: --from-trace ${PIPE_TEST_DATA}/bad-traces/negative-dur.json: chrome trace: event 0 ('F0') has a negative \"dur\""
  -- --from-trace ${PIPE_TEST_DATA}/bad-traces/negative-dur.json)
pipe_sim_test(all_costs_zero 1 "pipe-sim: error: every cost is 0: nothing takes time to simulate"
  -- --stages 2 --micro-batches 2 --forward 0 --backward 0)
pipe_sim_test(costs_four_numbers 1
  "pipe-sim: error: --costs '1,2,3,4': give F,B[,W] for every stage, or one F:B[:W] entry per stage"
  -- --costs 1,2,3,4)
pipe_sim_test(max_slots_below_one 1 "pipe-sim: error: --max-slots must be at least 1, not 0" -- --max-slots 0)
# The work is capped, and the error names the flag that lifts the cap.
pipe_sim_test(over_the_slot_cap 1 --line
  "pipe-sim: error: --stages 4,096 x 1 chunk(s) per stage x --micro-batches 65,536 = 268,435,456 slots, over the cap of 16,777,216 (raise --max-slots to simulate it: memory and time grow with the slots)"
  -- --stages 4096 --micro-batches 65536)
pipe_sim_test(max_slots_lifts_the_cap 0 "makespan: 33 units" -- --stages 4 --micro-batches 8 --max-slots 32)
pipe_sim_test(max_slots_caps_chunks 1 "= 64 slots, over the cap of 32" -- --stages 4 --micro-batches 8 --schedule interleaved-1f1b --max-slots 32)
