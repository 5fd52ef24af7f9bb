# Copies one file of libpipe/src/ops/cuda for the CUDA-on-CPU emulator, rewriting
# what C++ cannot compile:
#   kernel<<<grid, block, shared, stream>>>(args)  ->  ::cuda_emu::launcher(kernel, grid, block, shared, stream)(args)
#   #pragma unroll                                 ->  a comment (GCC warns about pragmas it does not know)
# The kernel name may be qualified (nn::name, ::name) and carry one template argument list (elementwise_kernel<Op>,
# rows_kernel<Op, true>); any other form stops the build with the launch it could not rewrite.
# Line breaks are kept and a #line directive names the original, so that diagnostics and __FILE__ (in the
# launchers' error messages) point at the real source.
#
# cmake -DIN=<original> -DOUT=<copy> -P emulate_cu.cmake
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DIN=<file> -DOUT=<file> -P emulate_cu.cmake")
endif()
file(READ "${IN}" text)

# A launch's configuration ends at the first ">>>"; it may hold template arguments of its own
# (groups_grid<kWarp>(rows)), so "any character but '>', or '>' not followed by '>'".
set(name "((::)?[A-Za-z_][A-Za-z0-9_:]*(<[^<>;]*>)?)")
set(space "([ \t\r\n]*)")
set(config "(([^>]|>[^>])*)")
string(REGEX REPLACE "${name}${space}<<<${config}>>>${space}\\("
  "::cuda_emu::launcher(\\1\\4, \\5)\\7(" text "${text}")
string(FIND "${text}" "<<<" left)
if(NOT left EQUAL -1)
  string(SUBSTRING "${text}" ${left} 80 context)
  message(FATAL_ERROR "emulate_cu.cmake: a kernel launch in ${IN} is not in a form it rewrites: ${context}")
endif()

string(REGEX REPLACE "#pragma unroll[^\n]*" "// (#pragma unroll: no effect in the emulator)" text "${text}")

file(WRITE "${OUT}"
  "// Generated from ${IN} by tests/cuda_emu/emulate_cu.cmake for the CUDA-on-CPU emulator. Do not edit.\n"
  "#line 1 \"${IN}\"\n"
  "${text}")
