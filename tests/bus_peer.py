"""A test peer process: publishes a message on a topic at a rate, as a given service, until killed.

python -m tests.bus_peer SERVICE RUNDIR TOPIC BODY_JSON [INTERVAL_S]
"""
import json
import sys
import time

from common.bus import Publisher


def main() -> int:
    service, rundir, topic, body_json = sys.argv[1:5]
    interval_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
    pub = Publisher(service, rundir)
    body = json.loads(body_json)
    print("ready", flush=True)
    while True:
        pub.publish(topic, body)
        time.sleep(interval_s)


if __name__ == "__main__":
    raise SystemExit(main())
