# The in-process plugin harness (tests/harness/harness.h), included by
# Makefile.am. A plugin test is one file defining sbh_suite() and these lines:
#   check_PROGRAMS += tests/harness/test_NAME
#   tests_harness_test_NAME_SOURCES = tests/harness/test_NAME.c
#   tests_harness_test_NAME_CFLAGS = $(SBH_CFLAGS)
#   tests_harness_test_NAME_LDADD = $(SBH_LIBS)
#   TESTS += tests/harness/test_NAME
noinst_LTLIBRARIES += tests/harness/libharness.la
tests_harness_libharness_la_SOURCES = tests/harness/harness.c tests/harness/harness.h tests/harness/main.c
tests_harness_libharness_la_CFLAGS = $(SB_TEST_CC_FLAGS) -I$(top_srcdir)/tests/unit
SBH_CFLAGS = $(SB_TEST_CC_FLAGS) -I$(top_srcdir)/tests/harness -I$(top_srcdir)/tests/unit
SBH_LIBS = tests/harness/libharness.la tests/unit/libtestutil.la $(SB_TEST_LINK_LIBS)
EXTRA_DIST += tests/harness/harness.mk

check_PROGRAMS += tests/harness/test_file_out
tests_harness_test_file_out_SOURCES = tests/harness/test_file_out.c
tests_harness_test_file_out_CFLAGS = $(SBH_CFLAGS)
tests_harness_test_file_out_LDADD = $(SBH_LIBS)
TESTS += tests/harness/test_file_out

check_PROGRAMS += tests/harness/test_testsink
tests_harness_test_testsink_SOURCES = tests/harness/test_testsink.c
tests_harness_test_testsink_CFLAGS = $(SBH_CFLAGS)
tests_harness_test_testsink_LDADD = $(SBH_LIBS)
TESTS += tests/harness/test_testsink
