#!/bin/sh
# The interpreter `make` makes .venv with (`make PYTHON=... run` still picks another).
#
# The distribution's CPython comes first. Debian's (as Ubuntu's and Fedora's) is built with
# profile-guided and link-time optimisation and has libpython linked into the executable;
# pyenv's default build, the python3 first on PATH on many a developer's machine and on
# the one this project is measured on, has neither. The whole platform is Python, so the
# interpreter is a cost of every message: in bench.field (a connection per message,
# alternating pairs, docs/architecture.md "Where the time goes") the services on Debian's
# 3.11.2 spent less CPU a message than on pyenv's 3.11.7. The images run an optimised
# build too (python:3.11-slim-bookworm, or Debian's python3.11 in scripts/base-image.sh).
#
# A candidate must be 3.11 or newer and able to make a venv (Debian ships ensurepip in
# python3-venv); when none is, python3 on PATH, as before. PYTHON_CANDIDATES replaces the
# list (the tests use it).
for candidate in ${PYTHON_CANDIDATES:-/usr/bin/python3 python3}; do
  if "$candidate" -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' \
      >/dev/null 2>&1; then
    echo "$candidate"
    exit 0
  fi
done
echo python3
