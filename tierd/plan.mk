# plan: sources and tests of this area (included by Makefile.am).
# The model (plan.c) is pure; plan_model.c reads config.json with json-c;
# plan_hw.c reads hardware INI files with inih and measures this machine.
libtierd_la_SOURCES += \
	tierd/plan.c tierd/plan.h \
	tierd/plan_model.c tierd/plan_model.h \
	tierd/plan_hw.c tierd/plan_hw.h

client_tierctl_SOURCES += client/tierctl-plan.c client/tierctl-plan-svg.c client/tierctl-plan.h

check_PROGRAMS += tests/test-plan
tests_test_plan_SOURCES = tests/test-plan.c
tests_test_plan_CFLAGS = $(TEST_CFLAGS)
tests_test_plan_LDADD = $(TEST_LIBS)
TESTS += tests/test-plan

TESTS += tests/plan-cli.sh
EXTRA_DIST += tests/plan-cli.sh
dist_man_MANS += man/tierctl-plan.8
