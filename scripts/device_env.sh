# Sourced (`. scripts/device_env.sh LOGFILE`) by the scripts that run on a lent GPU machine,
# in the repository root, without installing the package:
# - the machine's image has PyTorch but not zarr: the wheels in .whl/ (zarr, numcodecs,
#   donfig, google-crc32c; see docs/benchmarks.md) go to /tmp/site (pip's output to
#   LOGFILE, default /dev/null; a failure is said on stderr and the script goes on);
# - composite_tasking.training lives in training/ (pyproject's package-dir): without an
#   install, a link puts it where the package expects it;
# - PYTHONPATH, unbuffered output.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl >"${1:-/dev/null}" 2>&1; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "device_env: installing .whl/ failed (see ${1:-the output of pip}); going on without it" >&2
    fi
fi
python3 -c "import composite_tasking.training" 2>/dev/null || [ -e src/composite_tasking/training ] \
    || ln -s ../../training src/composite_tasking/training
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
