"""venus_publisher: the only process that touches D-Bus. It shows the system to Venus OS (GUI, VRM, Modbus-TCP,
MQTT) and to systemcalc/DVCC, takes the user's settings, and monitors the battery for the controller.

GLib main loop (reached through glib.py, ctypes, not gi); the ZeroMQ SUB socket's FD is watched with
io_add_watch and drained fully on every edge (except while a redraw is pending: what comes meanwhile is drained
just before it), once after the watch is created, after each publish and on each tick; values are recomputed
after each drained batch and on a one-shot tick set for the next thing due without a message (a value turning
stale, the venus.battery heartbeat, a retry; at most 5 s apart). Each exported service has its own private
system-bus connection (common/vedbus.py).
If the dbus-daemon goes away the process exits (libdbus) and its supervisor restarts it.

Services (instances from [venus]; all have the mandatory /Mgmt/ProcessName, /Mgmt/ProcessVersion,
/Mgmt/Connection, /DeviceInstance, /ProductId, /ProductName, /FirmwareVersion, /HardwareVersion, /Connected and a
writable, persisted /CustomName):

com.victronenergy.dcload.http_<dcload_first_instance + n>, one per inverter n in the DTU's order (dtu.status
serials); added and removed as inverters come and go. Values from the inverter's latest dtu.inverter; all None and
/Connected = 0 once its sample is older than [control] dtu_stale_s.
    /Dc/0/Voltage V, /Dc/0/Current A, /Dc/0/Power W    DC drawn from the battery (input side, not AC)
    /Dc/0/Temperature °C, /History/EnergyIn kWh (inverter yield total: energy taken from the battery, less losses)
    /Alarms/HighTemperature   0 / 1 (>= max_temperature - temperature_hysteresis) / 2 (>= max_temperature)
    /Serial, /FirmwareVersion (the DTU's firmware)
  extra paths (not in Victron's dcload class):
    /Ac/Power W        AC output power
    /Limit/Percent %   active power limit, relative;   /Limit/Watt W   the same in W
    /Reachable 0/1     the DTU reaches the inverter;   /Producing 0/1  the inverter feeds
    CustomName default: the inverter's name in OpenDTU

com.victronenergy.dcsystem.http_<dcsystem_instance>: what systemcalc adds to /Dc/System/Power and DVCC uses.
    /Dc/0/Voltage  battery voltage (battery service; else the inverters' mean DC voltage)
    /Dc/0/Current  Σ DC current, /Dc/0/Power Σ DC power of the inverters with fresh data (+ = drawn from battery);
                   a valid 0 while the relay is known open or the DTU reports no inverters; None when unknown
    /Dc/0/Temperature battery temperature

com.victronenergy.acload.http_<acload_instance> (/Role "acload", /ProductName "GRID by Shelly"):
    grid meter (None and /Connected = 0 when the sample is older than [control] grid_stale_s):
    /Ac/Power, /Ac/L1..3/Power W, /Ac/L1..3/Voltage V, /Ac/L1..3/Current A, /Ac/L1..3/Energy/Forward|Reverse kWh,
    /Ac/Energy/Forward (import), /Ac/Energy/Reverse (export) kWh
    controller state from ctrl.status (None when older than [venus] status_stale_s): /Control/Law, /Control/GridFiltered,
    /Control/Target, /Control/Budget, /Control/TotalLimit W, /Control/Reason, /Control/RelayWanted 0/1,
    /FeedInMinSoc %, /Soc %, /AuxFeedInPower W (balcony), /NegativeGridCounter; /FeedInRelay 0/1 (relay.state)
    writable settings (int; SetValue: 0 accepted, 1 not an integer, 2 out of range; a rejected value stays and is
    logged): /MaxFeedIn 0..800 W, /PowerFeedInSoc 10..99 %, /SocFloatingMax 74..125 %, /ZeroPoint 0..200 W.
    An accepted value is sent as venus.setting (repeated every 1 s until ctrl.settings lists its request id, at
    most 30 s); the path shows the pending value, then the value the controller confirms (None before the
    controller's first ctrl.settings).
    alarms, 0 ok / 1 warning / 2 alarm (None only during the first status_stale_s while a source was never seen); each is
    the worse of our own observation and the controller's ctrl.status alarm of the same name:
    | path                  | condition (own observation)                                                     |
    |-----------------------|---------------------------------------------------------------------------------|
    | /Alarms/GridMeter     | 2 no fresh grid sample; 1 meter.status(grid) reports an error                     |
    | /Alarms/BalconyMeter  | 1 balcony configured but no fresh sample or error status (fallback power used)   |
    | /Alarms/Dtu           | 2 dtu.status stale or >= 3 consecutive errors; 1 an error                        |
    | /Alarms/Inverter      | 2 dtu.alarm setpoint watchdog active; 1 an inverter unreachable or stale          |
    | /Alarms/Temperature   | hottest fresh inverter: 1 >= max - hysteresis, 2 >= max_temperature              |
    | /Alarms/Battery       | 2 no battery found/readable on D-Bus (or ambiguous)                               |
    | /Alarms/Controller    | 2 ctrl.status stale (controller dead)                                            |

com.victronenergy.digitalinput.http_<alarm_instance> ("dbus-opendtu alarms"): the standing alarm venus-platform
shows: /Alarm 2 (and /State 9) while any condition above is at alarm level, /CustomName the worst condition's
text; events on rising edges go to com.victronenergy.platform /Notifications/Inject (notify.py, venus_os.py).

With localsettings on the bus (venus_os.py): every instance comes from /Settings/Devices/<unique id>/
ClassAndVrmInstance (config's number as the default; a change re-registers the service), and the writable
settings and custom names live under /Settings/DbusOpenDtu (common/settings.py declares them).

Battery: see battery.py (system /ActiveBatteryService, else the single battery, else [venus] battery_service);
followed by signals; venus.battery on change and at least every 1.5 s.
"""
