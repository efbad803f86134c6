# CMake package config shipped inside the linattn Python package (linattn.cmake_prefix_path points at its
# root). Provides the imported target linattn::linattn: liblinattn.so, its headers and libtorch.
get_filename_component(_linattn_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET torch)
  find_package(Torch REQUIRED)
endif()

if(NOT TARGET linattn::linattn)
  add_library(linattn::linattn SHARED IMPORTED)
  set_target_properties(linattn::linattn PROPERTIES
    IMPORTED_LOCATION "${_linattn_root}/lib/liblinattn.so"
    IMPORTED_SONAME "liblinattn.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_linattn_root}/include"
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}")
endif()

set(linattn_FOUND TRUE)
set(linattn_INCLUDE_DIRS "${_linattn_root}/include")
set(linattn_LIBRARIES linattn::linattn)
