# pipe-train end-to-end cases under mpirun: exit status and exact output.
#   pipe_cli_test(NAME RANKS STATUS "text" ... -- pipe-train args ...)
set(PIPE_EXPECT ${CMAKE_CURRENT_SOURCE_DIR}/expect.sh)
set(PIPE_TEST_DATA ${CMAKE_CURRENT_SOURCE_DIR}/data)

function(pipe_cli_test name ranks status)
  set(texts)
  set(args)
  set(in_args FALSE)
  foreach(a IN LISTS ARGN)
    if(a STREQUAL "--")
      set(in_args TRUE)
    elseif(in_args)
      list(APPEND args ${a})
    else()
      list(APPEND texts ${a})
    endif()
  endforeach()
  add_test(NAME cli.${name}
    COMMAND ${PIPE_EXPECT} ${status} ${texts} -- ${PIPE_MPIRUN} -np ${ranks} $<TARGET_FILE:pipe-train> ${args})
  set_tests_properties(cli.${name} PROPERTIES TIMEOUT 120 PROCESSORS 2)
endfunction()

pipe_cli_test(help 1 0 "usage: mpirun -np N pipe-train" "Parallelism (world size = product of the axes):" -- --help)
pipe_cli_test(dry_run_pipe2_data2 4 0
  "dry run: model gpt-tiny (8 layers, 834,304 parameters) on pipe=2 x data=2, 4 ranks"
  [[{"coord":{"data":0,"pipe":0},"data":0,"data_parallel_group":[0,1],"model":0,"model_group":[0],"next":2,"pipe_group":[0,2],"prev":-1,"rank":0,"stage":0}]]
  [[{"coord":{"data":1,"pipe":1},"data":1,"data_parallel_group":[2,3],"model":0,"model_group":[3],"next":-1,"pipe_group":[1,3],"prev":1,"rank":3,"stage":1}]]
  -- --model gpt-tiny --stages 2 --data-parallel 2 --dry-run)
pipe_cli_test(dry_run_default_data_parallel 4 0 "on pipe=4 x data=1, 4 ranks"
  [["next":3,"pipe_group":[0,1,2,3],"prev":1,"rank":2,"stage":2}]] -- --stages 4 --dry-run)
pipe_cli_test(dry_run_custom_topology 8 0 "on data=2 x pipe=4, 8 ranks"
  [[{"coord":{"data":1,"pipe":1},"data":1,"data_parallel_group":[1,5],"model":0,"model_group":[5],"next":6,"pipe_group":[4,5,6,7],"prev":4,"rank":5,"stage":1}]]
  -- --topology data=2,pipe=4 --dry-run)
pipe_cli_test(dry_run_model_axis 8 0
  [[{"coord":{"data":1,"model":0,"pipe":1},"data":1,"data_parallel_group":[4,6],"model":0,"model_group":[6,7],"next":-1,"pipe_group":[2,6],"prev":2,"rank":6,"stage":1}]]
  -- --topology pipe=2,data=2,model=2 --dry-run)
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
  "pipe-train: error: model 'gpt-huge' is neither a file nor a shipped model (shipped: gpt-small, gpt-tiny, gpt2-124m, mlp)"
  -- --model gpt-huge --dry-run)
pipe_cli_test(no_engine_yet 2 1 "pipe-train: error: training is not available yet" -- --stages 2)

# Plugins through the command line and the environment.
pipe_cli_test(user_plugin_from_dir 2 0 "model scaled-mlp: input float32[16], 4 layers, 708 parameters"
  -- --plugin-dir ${PIPE_TEST_PLUGIN_DIR}/scale --model ${PIPE_TEST_DATA}/scaled_mlp.toml --describe)
add_test(NAME cli.user_plugin_from_env
  COMMAND ${PIPE_EXPECT} 0 "from ${PIPE_TEST_PLUGIN_DIR}/scale/scale.so" "Scale(init=1.0)" --
    env PIPE_PLUGIN_PATH=${PIPE_TEST_PLUGIN_DIR}/scale ${PIPE_MPIRUN} -np 2 $<TARGET_FILE:pipe-train> --list-layers)
set_tests_properties(cli.user_plugin_from_env PROPERTIES TIMEOUT 120 PROCESSORS 2)
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
