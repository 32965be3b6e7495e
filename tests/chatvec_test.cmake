# chatvec_add_test(NAME <exe> SOURCES ... LIBS ...)
# One test executable per module; every test is registered in CTest with
# environment telling it where the repository, the build and shared/ are.
function(chatvec_add_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES} ${PROJECT_SOURCE_DIR}/tests/test_support.cpp)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${T_NAME} PRIVATE
    CHATVEC_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    CHATVEC_BINARY_DIR="${PROJECT_BINARY_DIR}"
    CHATVEC_SHARED_DIR="${CHATVEC_SHARED_DIR}")
  gtest_discover_tests(${T_NAME} DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "CHATVEC_BIN=$<TARGET_FILE:chatvec>")
endfunction()
