# pipe_add_plugin(<target> SOURCES ...): a layer plugin as a MODULE library
# linked to libpipe. In this project it lands in the built-in plugin directory;
# out of tree (after find_package(Pipe)) it lands in the caller's build dir,
# ready for --plugin-dir or PIPE_PLUGIN_PATH.
function(pipe_add_plugin target)
  cmake_parse_arguments(ARG "" "OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE Pipe::pipe)
  set_target_properties(${target} PROPERTIES PREFIX "" CXX_VISIBILITY_PRESET hidden)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  endif()
endfunction()
