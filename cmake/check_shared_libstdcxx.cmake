# Run after linking liblinattn (cmake -DLIB=<file> -DREADELF=<readelf> -P this file): fails the build when the
# linker copied libstdc++.a into the library. Such a library breaks whenever it formats a number into an
# error message next to torch's shared libstdc++ (its private std::locale meets the process's one); setup.py
# makes the same check through python/linattn/_elf.py.
if(NOT READELF OR NOT EXISTS "${LIB}")
  message(STATUS "linattn: readelf not found, libstdc++ link check skipped")
  return()
endif()
execute_process(COMMAND "${READELF}" -d --wide "${LIB}" OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
execute_process(COMMAND "${READELF}" --dyn-syms --wide "${LIB}" OUTPUT_VARIABLE symbols RESULT_VARIABLE rc2)
if(NOT rc EQUAL 0 OR NOT rc2 EQUAL 0)
  message(WARNING "linattn: readelf failed on ${LIB}, libstdc++ link check skipped")
  return()
endif()
string(REGEX MATCH "NEEDED\\)[^\n]*libstdc\\+\\+\\.so" needs_shared "${dynamic}")
# A defined dynamic symbol has a section index, an undefined one "UND"; std::locale is libstdc++'s own class.
string(REGEX MATCHALL "\n[^\n]* [0-9]+ _ZNSt6locale[^\n]*" private_locale "${symbols}")
list(LENGTH private_locale n_private)
if(NOT needs_shared OR n_private GREATER 0)
  message(FATAL_ERROR
    "${LIB} carries its own libstdc++ (libstdc++.so in DT_NEEDED: ${needs_shared}; std::locale symbols defined: "
    "${n_private}). Install the shared libstdc++ link of your compiler (libstdc++-<version>-dev) or drop flags "
    "such as -static-libstdc++.")
endif()
