# The partitioner (Foundation II, part 1): included from tests/CMakeLists.txt.
pipe_unit_test(partition)
pipe_unit_test(partition_method)

# The partition benchmark checks every result it times and exits non-zero on
# a wrong one; here it runs up to 10^5 layers to stay quick.
if(TARGET pipe-bench)
  add_test(NAME bench.partition COMMAND pipe-bench partition --max-layers 100000)
  set_tests_properties(bench.partition PROPERTIES TIMEOUT 120)
  add_test(NAME bench.help COMMAND pipe-bench --help)
  set_tests_properties(bench.help PROPERTIES PASS_REGULAR_EXPRESSION "partition")
endif()
