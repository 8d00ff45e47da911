# Run-time instruction-set dispatch, build side.
#
# A kernel source listed with fg_add_kernel_library(... ISA_SOURCES ...) is
# compiled once per instruction set into separate objects:
#   baseline : the compiler's default x86-64 (SSE2) or the portable target
#   avx2     : -mavx2 -mfma -mf16c           (x86-64 only)
#   avx512   : -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma (x86-64 only)
# Each copy sees FG_ISA_SUFFIX (_baseline/_avx2/_avx512) and FG_ISA_ID, so its
# exported names come out as name_baseline, name_avx2, ... via FG_ISA_FN(name).
# Helpers inside these files must be `static`: then no AVX2 copy of a helper
# can be merged into the baseline by the linker.
# Sources in SOURCES are compiled once (dispatchers, drivers without ISA code).

# FG_ISA_DISPATCH=OFF builds the baseline copy only (the path an aarch64 or
# MSVC build takes); it is ON by default except under Microsoft's cl, whose
# flags (/arch:...) and lack of __builtin_cpu_supports the dispatch does not
# handle (clang-cl is Clang and keeps the dispatch). See docs/packaging.md.
set(_fg_dispatch_default ON)
if(MSVC AND NOT CMAKE_C_COMPILER_ID STREQUAL "Clang")
  set(_fg_dispatch_default OFF)
endif()
option(FG_ISA_DISPATCH "x86-64: build the AVX2 / AVX-512 copies and choose one at run time" ${_fg_dispatch_default})

# The target's processor: on macOS a cross build (an x86_64 wheel made on an
# arm64 runner) names it in CMAKE_OSX_ARCHITECTURES, not CMAKE_SYSTEM_PROCESSOR.
set(_fg_proc "${CMAKE_SYSTEM_PROCESSOR}")
if(APPLE AND CMAKE_OSX_ARCHITECTURES)
  list(LENGTH CMAKE_OSX_ARCHITECTURES _fg_narch)
  if(_fg_narch EQUAL 1)
    set(_fg_proc "${CMAKE_OSX_ARCHITECTURES}")
  else()
    set(_fg_proc "universal") # a fat build gets the portable baseline only
  endif()
endif()
set(FG_X86 OFF)
if(FG_ISA_DISPATCH AND _fg_proc MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
  set(FG_X86 ON)
endif()
message(STATUS "fastgrad: target processor ${_fg_proc}, ISA dispatch ${FG_X86}")

if(FG_X86)
  set(FG_ISAS baseline avx2 avx512)
else()
  set(FG_ISAS baseline)
endif()
set(FG_ISA_FLAGS_baseline "")
set(FG_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(FG_ISA_FLAGS_avx512 -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c)
set(FG_ISA_ID_baseline 0)
set(FG_ISA_ID_avx2 1)
set(FG_ISA_ID_avx512 2)

function(fg_add_kernel_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;ISA_SOURCES;LINK" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  foreach(isa IN LISTS FG_ISAS)
    if(ARG_ISA_SOURCES)
      set(obj ${name}_${isa})
      add_library(${obj} OBJECT ${ARG_ISA_SOURCES})
      target_compile_options(${obj} PRIVATE ${FG_ISA_FLAGS_${isa}})
      target_compile_definitions(${obj} PRIVATE FG_ISA_SUFFIX=_${isa} FG_ISA_ID=${FG_ISA_ID_${isa}})
      target_include_directories(${obj} PRIVATE ${PROJECT_SOURCE_DIR}/csrc)
      if(OpenMP_C_FOUND)
        target_link_libraries(${obj} PRIVATE OpenMP::OpenMP_C)
      endif()
      target_compile_definitions(${obj} PRIVATE FG_HAVE_OPENMP=${FG_HAVE_OPENMP})
      if(FG_X86)
        target_compile_definitions(${obj} PRIVATE FG_X86=1)
      endif()
      target_sources(${name} PRIVATE $<TARGET_OBJECTS:${obj}>)
    endif()
  endforeach()
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/csrc)
  target_compile_definitions(${name} PUBLIC FG_HAVE_OPENMP=${FG_HAVE_OPENMP})
  if(FG_X86)
    target_compile_definitions(${name} PUBLIC FG_X86=1)
  endif()
  if(OpenMP_C_FOUND)
    target_link_libraries(${name} PUBLIC OpenMP::OpenMP_C)
  endif()
  find_library(FG_LIBM m)
  if(FG_LIBM)
    target_link_libraries(${name} PUBLIC ${FG_LIBM})
  endif()
  if(ARG_LINK)
    target_link_libraries(${name} PUBLIC ${ARG_LINK})
  endif()
endfunction()

# FG_SANITIZE=ON (see CMakeLists.txt): every object and module gets ASan and
# UBSan, with UB made fatal (-fno-sanitize-recover) so a finding fails the
# test run instead of printing and continuing. -O1 keeps the vectorised paths
# (the intrinsics are explicit) while keeping stack traces readable. The flags
# go into CMAKE_C_FLAGS so `python -m fastgrad info` reports them.
function(fg_apply_sanitizers)
  if(NOT FG_SANITIZE)
    return()
  endif()
  if(NOT CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "fastgrad: FG_SANITIZE needs GCC or Clang")
  endif()
  set(_san "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g")
  set(CMAKE_C_FLAGS "${CMAKE_C_FLAGS} ${_san}" PARENT_SCOPE)
  set(CMAKE_C_FLAGS_RELEASE "-O1 -DNDEBUG" PARENT_SCOPE)
  set(CMAKE_SHARED_LINKER_FLAGS "${CMAKE_SHARED_LINKER_FLAGS} -fsanitize=address,undefined" PARENT_SCOPE)
  set(CMAKE_MODULE_LINKER_FLAGS "${CMAKE_MODULE_LINKER_FLAGS} -fsanitize=address,undefined" PARENT_SCOPE)
  message(STATUS "fastgrad: sanitizer build (ASan + UBSan, -O1)")
endfunction()

# Microsoft's cl rejects GCC-style options such as -Wno-unused-function
# (error D8021) and -ffp-contract=off; the kernel families and the Cython
# modules add a few. Under cl (not clang-cl) they are removed from every
# target and source file below `dir` after the targets are defined. Never
# run on the Linux CI machine (no cl there): see docs/packaging.md.
function(fg_strip_gcc_options dir)
  if(NOT MSVC OR CMAKE_C_COMPILER_ID STREQUAL "Clang")
    return()
  endif()
  get_property(_targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t IN LISTS _targets)
    get_target_property(_opts ${t} COMPILE_OPTIONS)
    if(_opts)
      list(FILTER _opts EXCLUDE REGEX "^-(W|f|m)")
      set_property(TARGET ${t} PROPERTY COMPILE_OPTIONS "${_opts}")
    endif()
    get_target_property(_srcs ${t} SOURCES)
    foreach(src IN LISTS _srcs)
      if(src MATCHES "^\\$<")
        continue()
      endif()
      get_source_file_property(_sopts "${src}" DIRECTORY "${dir}" COMPILE_OPTIONS)
      if(_sopts)
        list(FILTER _sopts EXCLUDE REGEX "^-(W|f|m)")
        set_source_files_properties("${src}" DIRECTORY "${dir}" PROPERTIES COMPILE_OPTIONS "${_sopts}")
      endif()
    endforeach()
  endforeach()
  get_property(_subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(d IN LISTS _subdirs)
    fg_strip_gcc_options("${d}")
  endforeach()
endfunction()
