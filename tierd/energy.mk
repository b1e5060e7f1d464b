# energy: sources and tests of this area (included by Makefile.am).
