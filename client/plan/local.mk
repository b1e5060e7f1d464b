# plan: sources and tests of this area (included by Makefile.am).
# The model (plan.c, plan_params.c, plan_route.c, plan_select.c) is pure;
# plan_model.c reads config.json with json-c;
# plan_hw.c reads hardware INI files with inih and measures this machine;
# plan_trace.c reads routing traces and replays them through the daemon's
# cache (libtierd: link it after this library).
# Not part of the daemon: its own convenience library, for tierctl and tests.
noinst_LTLIBRARIES += libtierdplan.la
libtierdplan_la_SOURCES = \
	client/plan/plan.c client/plan/plan.h client/plan/plan-int.h \
	client/plan/plan_params.c client/plan/plan_route.c client/plan/plan_select.c \
	client/plan/plan_model.c client/plan/plan_model.h \
	client/plan/plan_hw.c client/plan/plan_hw.h \
	client/plan/plan_trace.c client/plan/plan_trace.h
libtierdplan_la_CFLAGS = $(libtierd_la_CFLAGS)

client_tierctl_SOURCES += client/tierctl-plan.c client/tierctl-plan-out.c \
	client/tierctl-plan-select.c client/tierctl-plan-trace.c client/tierctl-plan-svg.c \
	client/tierctl-plan.h

check_PROGRAMS += tests/test-plan tests/test-plan-input
tests_test_plan_SOURCES = tests/test-plan.c tests/plan-test-util.h
tests_test_plan_CFLAGS = $(TEST_CFLAGS)
tests_test_plan_LDADD = libtierdplan.la $(TEST_LIBS)
tests_test_plan_input_SOURCES = tests/test-plan-input.c tests/plan-test-util.h
tests_test_plan_input_CFLAGS = $(TEST_CFLAGS)
tests_test_plan_input_LDADD = libtierdplan.la $(TEST_LIBS)
TESTS += tests/test-plan tests/test-plan-input

# The measured routing and hit rates: links the daemon's trace reader and cache.
check_PROGRAMS += tests/test-plan-trace
tests_test_plan_trace_SOURCES = tests/test-plan-trace.c
tests_test_plan_trace_CFLAGS = $(TEST_CFLAGS)
tests_test_plan_trace_LDADD = libtierdplan.la $(TEST_LIBS)
TESTS += tests/test-plan-trace

TESTS += tests/plan-cli.sh
EXTRA_DIST += tests/plan-cli.sh
dist_man_MANS += man/tierctl-plan.8
