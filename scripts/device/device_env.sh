# Sourced (`. scripts/device/device_env.sh LOGFILE`) by the device scripts and
# scripts/paper/paper_tables.sh, in the repository root of a checkout on a GPU machine
# that has Python and PyTorch but where the package is not installed:
# - optional wheels: a machine without internet and without zarr needs zarr and its
#   dependencies (zarr, numcodecs, donfig, google-crc32c) as wheel files. The repository
#   holds none: whoever copies the checkout to such a machine puts them in a `.whl/`
#   folder at its root, and they are installed into /tmp/site (pip's output to LOGFILE,
#   default /dev/null; a failure is said on stderr and the script goes on). Without a
#   `.whl/` folder nothing is installed;
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
