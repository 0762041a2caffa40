# Sourced (not run) by install.sh, service/run and scripts/run-service, with HERE (the project folder) and PY (the
# Python that will run the services) set. Puts on PYTHONPATH the project, then the dependencies vendored for that
# Python's machine (vendor/<machine>: pyzmq for armv7l or aarch64, or what --build-deps-with-pip made), then the
# pure-Python ones (vendor/py: msgpack, supervisor). A folder that is not there is skipped (a git checkout with .venv).
# The machine is the one the Python reports (`uname -m` of the device; qemu reports the emulated one).
PY_MACHINE=$($PY -c 'import platform; print(platform.machine())')
for _dir in "$HERE/vendor/py" "$HERE/vendor/$PY_MACHINE"; do
  [ -d "$_dir" ] && PYTHONPATH="$_dir${PYTHONPATH:+:$PYTHONPATH}"
done
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
unset _dir
