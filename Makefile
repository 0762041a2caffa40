# Two commands set up everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SECONDS ?= 0
# make demo GRID=dbus: the grid meter is a simulated GX meter on D-Bus ([grid_meter] source = dbus)
GRID ?= shelly
# make demo DTU=ahoy: the gateway is a simulated AhoyDTU instead of an OpenDTU ([opendtu] type = auto finds it)
DTU ?= opendtu
# The tests mostly wait on devices and processes, not the CPU: one module per worker, several at once.
TEST_WORKERS ?= 4
# Modules that run D-Bus stand-ins on GLib's default main context inside the test process: each gets a process of its
# own (a loop left behind by one module in a shared xdist worker kept the other's stand-ins from starting, once),
# beside the rest (scripts/test.sh).
GLIB_IN_PROCESS := tests/test_venus_publisher_venus_os.py tests/test_venus_publisher_gridmeter.py

.PHONY: setup test demo bundle clean gui gui-screenshot

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh $(PY) $(TEST_WORKERS) $(GLIB_IN_PROCESS)

demo: setup
	$(PY) -m scripts.demo --seconds $(SECONDS) --grid $(GRID) --dtu $(DTU)

# dist/dbus-opendtu-<VERSION>.tar.gz (+ .sha256): the offline GX archive (scripts/bundle.py)
bundle: setup
	$(PY) -m scripts.bundle

# The GX GUI plugin (gui/dbus-opendtu.json, committed: a GX has no rcc) and its screenshot for README
gui: setup
	$(PY) -m scripts.build_gui

gui-screenshot: gui
	$(PY) -m tests.gui_support docs/gui.png

clean:
	rm -rf $(VENV) .pytest_cache
